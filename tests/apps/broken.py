raise RuntimeError("boom at import (deliberate)")
