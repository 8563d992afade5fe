"""A bad deploy under load: 500s seen by clients, ours with a canary vs a plain roll vs gunicorn.

    .venv/bin/python loadtests/canary_deploy.py [--seconds 12] [--canary 3]

The same app (tests.apps.canary: a build's behaviour comes from its environment),
2 workers, the same load (4 keep-alive connections, each renewed every 20
requests, as proxies do). Build v1 is healthy; v2 answers 30% of requests with
500. Each server gets v2 through a SIGHUP and is watched for ``--seconds``:

- ours --canary-seconds N: the roll is judged and rolled back;
- ours without a canary: the plain roll (readiness-gated on boot only);
- gunicorn -k uvicorn_worker.UvicornWorker: HUP re-reads its config file,
  whose raw_env comes from the same env file.

Prints a JSON summary and writes it to loadtests/results/canary_deploy.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.deploy_load import DeployLoad  # noqa: E402
from tests.supervisor_process import LoggedProcess, free_port, wait_for  # noqa: E402

APP = "tests.apps.canary:app"
RESULTS = REPO / "loadtests" / "results"
GUNICORN_CONF = """
from dotenv import dotenv_values
raw_env = [f"{{k}}={{v or ''}}" for k, v in dotenv_values({env!r}).items()]
"""


class Server(LoggedProcess):
    def __init__(self, name: str, command: list[str], log: Path) -> None:
        self.name = name
        self._start(command, log)


def _build(env_file: Path, version: str, fail_share: str = "") -> None:
    env_file.write_text(f"CANARY_VERSION={version}\nCANARY_FAIL_SHARE={fail_share}\n")


def command(kind: str, port: int, env_file: Path, canary: float) -> list[str]:
    python = [sys.executable, "-m"]
    if kind == "gunicorn":
        conf = env_file.with_suffix(".conf.py")
        conf.write_text(GUNICORN_CONF.format(env=str(env_file)))
        return [
            *python, "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", "2",
            "-b", f"127.0.0.1:{port}", "--chdir", str(REPO), "-c", str(conf), APP,
        ]  # fmt: skip
    cmd = [*python, "supervisor", APP, "--app-dir", str(REPO), "-w", "2", "--no-access-log"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--env-file", str(env_file)]
    return cmd + (["--canary-seconds", str(canary)] if kind == "ours-canary" else [])


def run(kind: str, seconds: float, canary: float, tmp: Path) -> dict[str, object]:
    env_file = tmp / f"{kind}.env"
    _build(env_file, "v1")
    port = free_port()
    server = Server(kind, command(kind, port, env_file, canary), tmp / f"{kind}.log")
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: _answers(url) == "v1", 20, message=f"{kind} serving v1")
        time.sleep(1.0)  # every worker up
        with DeployLoad(url) as load:
            load.wait_count(200, timeout=20)
            _build(env_file, "v2", fail_share="0.3")
            hup = time.monotonic()
            server.signal(signal.SIGHUP)
            time.sleep(seconds)
            after = load.since(hup)
        verdict = next(
            (line for line in server.log().splitlines() if "Canary aborted" in line), None
        )
    finally:
        server.stop()
    v2 = [a for a in after if a.body == "v2"]
    tail = [a for a in after if a.at >= hup + seconds - 2.0]
    return {
        "server": kind,
        "requests": len(after),
        "http_500": sum(a.status == 500 for a in after),
        "connection_errors": sum(a.status == 0 for a in after),
        "v2_answers": len(v2),
        "last_v2_after_s": round(max(a.at for a in v2) - hup, 2) if v2 else None,
        "v2_share_last_2s": round(sum(a.body == "v2" for a in tail) / len(tail), 3)
        if tail
        else None,
        "verdict": verdict.split("] ", 3)[-1] if verdict else None,
    }


def _answers(url: str) -> str | None:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=12.0, help="watched after the HUP")
    parser.add_argument("--canary", type=float, default=3.0, help="--canary-seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            run(kind, args.seconds, args.canary, Path(tmp))
            for kind in ("ours-canary", "ours-plain", "gunicorn")
        ]
    RESULTS.mkdir(exist_ok=True)
    summary = {"watched_seconds": args.seconds, "canary_seconds": args.canary, "runs": rows}
    (RESULTS / "canary_deploy.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
