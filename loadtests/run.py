"""Side-by-side load tests: asgi-supervisor vs gunicorn (+ UvicornWorker, and its own -k asgi),
uvicorn --workers, granian and hypercorn, at defaults and at equal features.

    python3 loadtests/run.py                 # the published run, ~45 min: 6 servers, every
                                             # scenario, hello at 1,2,4 workers in 4 profiles,
                                             # median of 3 (cost: 5 starts), makes loadtests/.venv
    python3 loadtests/run.py --quick         # < 90 s: this venv's servers, 2 workers, 1 s runs
                                             # (the test suite runs it)
    python3 loadtests/run.py --scenarios hello --workers 2 --duration 2 --repeat 1   # a check
    python3 loadtests/run.py --scenarios cost --servers supervisor,gunicorn   # our cost, ~4 min
    python3 loadtests/run.py --from-json loadtests/results/latest.json   # redo latest.md + PNGs

Profiles (--profiles; the hello scenario runs each, every other scenario runs
`default`), with APP = hello:app, N workers, H = 127.0.0.1, P a free port:

    default      each server exactly as a user first runs it, nothing else:
                   python -m supervisor APP -w N --host H --port P   (access log on, info)
                   gunicorn -k uvicorn_worker.UvicornWorker -w N -b H:P APP
                   gunicorn -k asgi -w N -b H:P APP                  (gunicorn 27's own worker)
                   uvicorn APP --workers N --host H --port P          (access log on)
                   granian --interface asgi --workers N --host H --port P APP
                   hypercorn -w N -b H:P APP
    access-log   equal features, the access log on everywhere: ours and uvicorn as default;
                 gunicorn, gunicorn -k asgi and hypercorn + --access-logfile -; granian +
                 --access-log
    bare         ours only, the reference for a feature's cost: + --no-access-log
    production   ours only: + --log-format json --max-concurrent 1000 --metrics-bind
                 127.0.0.1:0 --instance-id bench --slow-request-ms 500

Each server picks its own loop and HTTP parser (`auto`: uvloop + httptools
where it does; gunicorn -k asgi takes uvloop and, without gunicorn_h1c, its
pure-Python parser; hypercorn asyncio + h11); the report lists what each chose.
Every server's stdout and stderr go to one log file in OUT/raw/<timestamp>/ (so
an access line costs a real write, the same for all), cut to its first and last
lines after the run (--keep-logs keeps it whole); "log lines / request" in the
tables shows whether a profile's access log is really on (about 1) or off (0).
The environment is stripped of the servers' own settings (SUPERVISOR_*,
UVICORN_*, GRANIAN_*, GUNICORN_CMD_ARGS, WEB_CONCURRENCY).

Tracked ratios, from the hello medians of one run (servers taking turns, in a
rotating order each repetition, so a noisy neighbour hits them all alike):
ours default / gunicorn+UvicornWorker default (>= 1.0), ours production / ours
bare (>= 0.95), ours access log on / ours bare (>= 0.95), ours bare /
gunicorn+UvicornWorker default (>= 1.05). They are printed last, with the
supervisor-cost targets, and stored with both sides' commands in latest.json
("ratios") and latest.md.

Scenarios: hello (req/s, p50/p99 with `wrk -t1 -c64 --latency`, the master's
CPU as a share of the workers'), agent (app.main's POST /agent + GET /result on
real Redis/Postgres), restart (2x SIGHUP under load), recycle (max-requests 1000
+ jitter 100 under load), kill (SIGKILL one worker under load), memory
(RSS/USS/PSS after warm-up, with and without --preload), lifecycle (start-up to
first 200; SIGTERM to exit with one request in flight), cost (the supervisor
against gunicorn's arbiter, median of --starts starts: exec to first 200,
master RSS/PSS, PSS of master + workers, master CPU idle over --idle seconds
and under a wrk run as a share of the workers'; CPU from the scheduler's
nanoseconds in /proc/PID/task/*/schedstat, psutil's ticks elsewhere) and, once
per run, `python -X importtime` of a real start of ours and of gunicorn's,
stopped at the first 200 (OUT/raw/<timestamp>/importtime-*.txt: the master's
top 15 imports). Failed requests = wrk's socket errors + non-2xx/3xx.

Without --quick, --no-setup or --from-json it makes or updates loadtests/.venv
(skipped when its stamp matches) with the anchors, matplotlib and this repo
installed as a user installs it (not -e), and re-runs itself with that
interpreter. Writes OUT/run-<timestamp>.json and OUT/latest.json (machine,
versions, commands, every run, medians, ratios), OUT/latest.md and the PNG
plots. Every process started runs in its own session and is killed at the end,
also on errors and Ctrl-C.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

LOADTESTS = Path(__file__).resolve().parent
REPO = LOADTESTS.parent
VENV = LOADTESTS / ".venv"
REQUIREMENTS = [
    "granian",
    "gunicorn",
    "hypercorn",
    "uvicorn-worker",
    "uvicorn[standard]",
    "matplotlib",
    "httpx",
    "psutil",
]


def source_digest() -> str:
    """What the installed copy of this repo must match: pyproject.toml, supervisor/ and app/."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes())
    for folder in ("supervisor", "app"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_venv() -> Path:
    """loadtests/.venv with the anchors and this repo, made or updated only when needed.

    The repo is installed as a user installs it (a wheel, not ``-e``): an editable
    install adds a path finder to every interpreter start in the venv, ours and
    the anchors' alike, which is not what a user's start pays.
    """
    python = VENV / "bin" / "python"
    wanted = "\n".join([*REQUIREMENTS, f"{REPO} ({source_digest()})"]) + "\n"
    stamp = VENV / ".loadtests-requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        print(f"creating {VENV}", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(VENV)], check=True, timeout=300)
    print(f"installing {' '.join(REQUIREMENTS)} and this repo into {VENV}", flush=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    leftover = not (REPO / "build").exists()  # setuptools builds the wheel in the tree
    subprocess.run([*pip, *REQUIREMENTS, str(REPO)], check=True, timeout=1200)
    # The same version number from changed sources: pip would keep the old copy.
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(REPO)], check=True, timeout=600)
    if leftover:
        shutil.rmtree(REPO / "build", ignore_errors=True)
    stamp.write_text(wanted)
    return python


def uses_venv(argv: list[str]) -> bool:
    """A full run uses loadtests/.venv; --quick, --no-setup, --from-json and --help use this one."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag in ("--quick", "--no-setup", "-h", "--help"):
        parser.add_argument(flag, action="store_true")
    parser.add_argument("--from-json")
    known, _ = parser.parse_known_args(argv)
    return not (known.quick or known.no_setup or known.from_json or known.h or known.help)


def main() -> None:
    if uses_venv(sys.argv[1:]):
        python = ensure_venv()
        if Path(sys.prefix).resolve() != VENV.resolve():
            os.execv(python, [str(python), __file__, *sys.argv[1:]])
    sys.path.insert(0, str(LOADTESTS))
    from bench import harness

    harness.main(sys.argv[1:], __doc__ or "")


if __name__ == "__main__":
    main()
