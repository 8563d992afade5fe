"""Side-by-side load tests: asgi-supervisor vs gunicorn + UvicornWorker, uvicorn --workers, granian.

    python3 loadtests/run.py                  # everything: 4 servers, workers 1,2,4, 3 repetitions
    python3 loadtests/run.py --quick          # < 2 min: this interpreter's servers, 2 workers
    python3 loadtests/run.py --servers supervisor,gunicorn --scenarios hello,restart --repeat 5

Without --quick it first makes loadtests/.venv (idempotent: skipped when its
requirements stamp matches) with granian, gunicorn, uvicorn-worker, uvicorn[standard],
matplotlib and this repo (-e .), and re-runs itself with that interpreter;
--no-setup uses the current one. Every server runs loadtests/apps/hello.py with
the same worker count, uvloop + httptools, on 127.0.0.1; the servers take turns
(rotating order each repetition) so a noisy neighbour hits them all alike, and
each cell is the median of --repeat runs.

Scenarios: hello (throughput, p50/p99 with `wrk -t1 -c64 --latency`), agent
(app.main's POST /agent + GET /result on real Redis/Postgres), restart (2x
SIGHUP under load), recycle (max-requests 1000 + jitter 100 under load), kill
(SIGKILL one worker under load), memory (RSS/USS/PSS after warm-up, with and
without --preload), lifecycle (start-up to first 200; SIGTERM to exit with one
request in flight). Failed requests = wrk's socket errors + non-2xx/3xx.

Writes OUT/run-<timestamp>.json and OUT/latest.json (machine, versions, every
run, medians), OUT/latest.md and PNG plots; server logs and wrk outputs go to
OUT/raw/<timestamp>/. Every process started runs in its own session and is
killed at the end, also on errors and Ctrl-C.
"""

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

LOADTESTS = Path(__file__).resolve().parent
REPO = LOADTESTS.parent
VENV = LOADTESTS / ".venv"
REQUIREMENTS = [
    "granian",
    "gunicorn",
    "uvicorn-worker",
    "uvicorn[standard]",
    "matplotlib",
    "httpx",
    "psutil",
]


def ensure_venv() -> Path:
    """loadtests/.venv with the anchors and this repo, made or updated only when needed."""
    python = VENV / "bin" / "python"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    wanted = "\n".join([*REQUIREMENTS, f"-e {REPO} ({digest})"]) + "\n"
    stamp = VENV / ".loadtests-requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        print(f"creating {VENV}", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(VENV)], check=True, timeout=300)
    print(f"installing {' '.join(REQUIREMENTS)} and -e . into {VENV}", flush=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *REQUIREMENTS, "-e", str(REPO)], check=True, timeout=1200)
    stamp.write_text(wanted)
    return python


def needs_venv(argv: list[str]) -> bool:
    """A full run uses loadtests/.venv; --quick, --no-setup, --from-json and --help use this one."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag in ("--quick", "--no-setup", "-h", "--help"):
        parser.add_argument(flag, action="store_true")
    parser.add_argument("--from-json")
    known, _ = parser.parse_known_args(argv)
    here = Path(sys.prefix).resolve() == VENV.resolve()
    return not (here or known.quick or known.no_setup or known.from_json or known.h or known.help)


def main() -> None:
    if needs_venv(sys.argv[1:]):
        python = ensure_venv()
        os.execv(python, [str(python), __file__, *sys.argv[1:]])
    sys.path.insert(0, str(LOADTESTS))
    from bench import harness

    harness.main(sys.argv[1:], __doc__ or "")


if __name__ == "__main__":
    main()
