"""Request observation and logging, end to end: every line a record, none lost, none twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import StartSupervisor
from tests.supervisor_process import REPO, free_port, wait_for

ACCESS_TEXT = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(\d+)\] \[INFO\] "
    r'127\.0\.0\.1:\d+ - "GET (\S+) HTTP/1\.1" (\d{3}) \d+\.\dms$'
)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of the log, parsed: a line that is not one JSON object fails the test."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from exc
        assert isinstance(record, dict), line
        records.append(record)
    return records


def test_json_mode_turns_everything_an_app_writes_into_records(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(
        "tests.apps.logging_app:app", "--log-format", "json", "--timeout-worker", "2"
    )
    (worker,) = sup.wait_serving(1)
    with httpx.Client(base_url=sup.url, timeout=10) as client:
        for path in ("/log", "/badfmt", "/print", "/warn", "/raw", "/error"):
            client.get(path)
        for _ in range(3):
            assert client.get("/").status_code == 200
        with pytest.raises(httpx.HTTPError):  # the hung worker is killed under the request
            client.get("/block?s=30")

    def settled() -> list[dict[str, Any]] | None:
        records = json_lines(sup.log())
        dumped = any("stack" in r for r in records)
        return records if dumped and len(sup.serving_pids()) == 1 else None

    records = wait_for(settled, 15, message=f"the hung worker's stack dump\n{sup.log()}")
    by_message = {r["message"]: r for r in records}

    hello = [r for r in records if r["message"] == "hello world"]
    assert len(hello) == 1, "the app's own console handler and ours wrote it once together"
    assert hello[0]["logger"] == "app" and hello[0]["request"] == "<Unencodable request>"
    assert hello[0]["n"] == 7 and hello[0]["pid"] == worker
    assert "'count %d' % ('not a number',)" in by_message
    for line in ("printed one", "printed two", "printed three"):
        assert by_message[line]["logger"] == "stdout" and by_message[line]["pid"] == worker
    assert by_message["to stderr"]["logger"] == "stderr"
    warned = [r for r in records if "careful now" in r["message"]]
    assert warned and warned[0]["logger"] == "py.warnings"
    assert by_message["raw line on fd 2"]["logger"] == "output"
    assert by_message["raw line on fd 2"]["pid"] == worker
    crash = by_message["Exception in ASGI application\n"]
    assert "RuntimeError: boom" in crash["exception"]

    dump = next(r for r in records if "stack" in r)
    assert dump["pid"] == worker and "logging_app.py" in dump["stack"]
    assert "time.sleep" in dump["stack"] or "in app" in dump["stack"]
    assert not any("APPTEXT" in r["message"] for r in records)

    access = [r for r in records if r["logger"] == "supervisor.access"]
    assert [r["path"] for r in access].count("/") == 3, "uvicorn's access logger stays quiet"
    assert all(r["worker_pid"] == worker for r in access)


def test_dictconfig_that_disables_existing_loggers_does_not_silence_ours(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(
        "tests.apps.logging_app:app", "--log-format", "json", env={"LOGGING_APP_DISABLE": "1"}
    )
    (worker,) = sup.wait_serving(1)
    assert httpx.get(sup.url + "/error", timeout=5).status_code == 500
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(15) == 0
    records = json_lines(sup.log())
    assert any(r["logger"] == "uvicorn.error" and "boom" in r.get("exception", "") for r in records)
    assert any(r["pid"] == worker and "draining" in r["message"] for r in records)


def test_text_access_lines_are_the_familiar_ones_and_come_once(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("tests.apps.logging_app:app", "-w", "2")
    workers = sup.wait_serving(2)
    with httpx.Client(base_url=sup.url, timeout=5) as client:
        for index in range(20):
            assert client.get(f"/?n={index}", headers={"Connection": "close"}).status_code == 200
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(15) == 0
    access = [m for line in sup.log().splitlines() if (m := ACCESS_TEXT.match(line))]
    assert sorted(m.group(2) for m in access) == sorted(f"/?n={i}" for i in range(20))
    assert {int(m.group(1)) for m in access} <= workers


def test_custom_access_log_format_and_access_logfile_reopened_on_usr1(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    access_file = tmp_path / "access.log"
    fmt = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)s %({x-worker-pid}o)s'
    sup = start_supervisor(
        "tests.apps.hello:app",
        "--access-logfile",
        str(access_file),
        "--access-log-format",
        fmt,
    )
    (worker,) = sup.wait_serving(1)
    headers = {"Referer": "http://ref/", "User-Agent": 'agent "quoted"'}
    auth = httpx.BasicAuth("alice", "secret")
    assert httpx.get(sup.url + "/x?y=1", headers=headers, auth=auth, timeout=5).status_code == 200
    line = wait_for(lambda: access_file.read_text().strip(), 5, message="access line written")
    pattern = (
        r"^127\.0\.0\.1 - alice \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
        r'"GET /x\?y=1 HTTP/1\.1" 200 \d+ "http://ref/" "agent \\"quoted\\"" \d+ '
        + str(worker)
        + "$"
    )
    assert re.match(pattern, line), line
    assert "/x?y=1" not in sup.log(), "access lines go to --access-logfile only"

    rotated = tmp_path / "access.log.1"
    access_file.rename(rotated)
    sup.signal(signal.SIGUSR1)
    wait_for(lambda: "reopened its log files" in sup.log(), 5, message="worker reopened")
    assert httpx.get(sup.url + "/after", timeout=5).status_code == 200
    wait_for(lambda: access_file.exists() and "/after" in access_file.read_text(), 5)
    assert "/after" not in rotated.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--access-log-format", "%(h)s %(nope)s"], "unknown atom %(nope)s"),
        (["--access-log-format", "%s"], "needs an atom name"),
        (["--log-config", "/nonexistent/log.json"], "--log-config /nonexistent/log.json"),
    ],
)
def test_bad_access_log_format_or_log_config_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "tests.apps.hello:app", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_broken_log_config_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "log.json"
    config.write_text('{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}')
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "tests.apps.hello:app", "--log-config", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"supervisor: error: --log-config {config}")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("kind", ["json", "yaml", "ini"])
def test_log_config_rules_in_the_supervisor_and_every_worker(
    start_supervisor: StartSupervisor, tmp_path: Path, kind: str
) -> None:
    log_file = tmp_path / "user.log"
    fmt = "USER %(process)d %(name)s %(message)s"
    if kind == "ini":
        config = tmp_path / "log.ini"
        config.write_text(
            "[loggers]\nkeys=root,access\n[handlers]\nkeys=file\n[formatters]\nkeys=f\n"
            "[logger_root]\nlevel=INFO\nhandlers=file\n"
            "[logger_access]\nlevel=INFO\nhandlers=file\nqualname=uvicorn.access\npropagate=0\n"
            f"[handler_file]\nclass=FileHandler\nformatter=f\nargs=({str(log_file)!r},)\n"
            f"[formatter_f]\nformat={fmt}\n"
        )
    else:
        data = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"f": {"format": fmt}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(log_file),
                    "formatter": "f",
                }
            },
            "root": {"handlers": ["file"], "level": "INFO"},
        }
        config = tmp_path / f"log.{kind}"
        if kind == "json":
            config.write_text(json.dumps(data))
        else:
            import yaml

            config.write_text(yaml.safe_dump(data))
    sup = start_supervisor("tests.apps.hello:app", "-w", "2", "--log-config", str(config))
    wait_for(lambda: log_file.exists() and log_file.read_text().count("serving") >= 2, 10)
    assert httpx.get(sup.url + "/hello", timeout=5).status_code == 200

    def access_logged() -> list[str] | None:
        lines = [line for line in log_file.read_text().splitlines() if "/hello" in line]
        return lines or None

    (line,) = wait_for(access_logged, 5, message=f"access line\n{log_file.read_text()}")
    assert re.match(r'USER \d+ uvicorn\.access 127\.0\.0\.1:\d+ - "GET /hello HTTP/1\.1" 200', line)
    text = log_file.read_text()
    assert f"USER {sup.pid} supervisor Booting worker" in text
    assert "uvicorn.error Application startup complete." in text  # a worker's line, user format
    assert "[INFO]" not in text, "our own handler stepped aside"


@pytest.mark.slow
def test_no_access_line_is_lost_when_the_log_reader_stops(tmp_path: Path) -> None:
    """The reader of stderr stops reading under load: the workers hold requests back (and
    say so, in a line and a metric) instead of dropping lines or growing without bound;
    when it reads again, every line is there, whole."""
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "supervisor", "tests.apps.hello:app", "-w", "2"),
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--metrics-bind", f"127.0.0.1:{metrics_port}"),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    chunks: list[bytes] = []
    reading = threading.Event()
    reading.set()

    def read() -> None:
        assert process.stderr is not None
        while reading.wait(60) and (chunk := os.read(process.stderr.fileno(), 65536)):
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    total = 9000  # ~850 KB of lines: well past two workers' 256 KiB buffers and the pipe
    try:
        wait_for(lambda: b"".join(chunks).count(b" serving ") >= 2, 15, message="2 workers")
        reading.clear()  # the log reader stops

        def hammer(count: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                for index in range(count):
                    assert client.get(f"/line/{index}").status_code == 200

        threads = [threading.Thread(target=hammer, args=(total // 6,)) for _ in range(6)]
        for thread in threads:
            thread.start()

        def stalls() -> float | None:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            found = re.search(r"^supervisor_log_stalls_total\{[^}]*\} (\S+)$", text, re.M)
            return float(found.group(1)) if found else None

        assert wait_for(stalls, 30, interval=0.2, message="a stall, counted") >= 1
        assert any(thread.is_alive() for thread in threads), "requests wait for the reader"
        reading.set()  # the reader is back
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        reading.set()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        reader.join(10)
        assert process.stderr is not None
        process.stderr.close()
    text = b"".join(chunks).decode()
    access = [line for line in text.splitlines() if '"GET /line/' in line]
    assert len(access) == total, f"{len(access)} access lines for {total} requests"
    assert all(ACCESS_TEXT.match(line) for line in access), "a line was torn or interleaved"
    assert "Log output is not being read fast enough" in text, "the stall is said"
    # Once per process that had to wait (each worker, maybe the supervisor), not per line.
    assert text.count("Log output is not being read fast enough") <= 3
