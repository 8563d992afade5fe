"""``python -m app run [OPTIONS]``: see app/launcher.py."""

from __future__ import annotations

import sys

from app.launcher import main

if __name__ == "__main__":
    sys.exit(main())
