"""What a worker writes outside its log handlers, relayed by the supervisor as records:
its fds 1 and 2 in JSON mode, and faulthandler's stack dump when it is gone."""

from __future__ import annotations

import logging
import os

import anyio

from supervisor import logs
from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.logs import capture

logger = logging.getLogger("supervisor")


async def read_output(worker: WorkerRecord) -> None:
    """JSON mode: what the worker wrote to fds 1/2 outside logging, one record a line."""
    output = worker.output
    while output is not None and worker.output is output:
        try:
            await anyio.wait_readable(output.fd)
        except (anyio.ClosedResourceError, OSError):
            return
        if not relay_output(worker):
            return


def relay_output(worker: WorkerRecord) -> bool:
    """Log what waits in the worker's output pipe; False once it is closed."""
    output = worker.output
    if output is None:
        return False
    lines, eof = output.read()
    for line in lines:
        capture.worker_record("output", logging.INFO, line, worker.pid)
    if eof:
        anyio.notify_closing(output.fd)
        output.close()
        worker.output = None
    return not eof


def log_stack_dump(worker: WorkerRecord) -> None:
    """faulthandler's dump of a worker killed as hung (or crashed in C), as one record."""
    if worker.dump_fd < 0:
        return
    dump = capture.read_dump(worker.dump_fd)
    os.close(worker.dump_fd)
    worker.dump_fd = -1
    if not dump:
        return
    if logs.state.json:
        message = f"Worker {worker.pid} stack dump"
        capture.worker_record("supervisor", logging.ERROR, message, worker.pid, stack=dump)
    else:
        logger.error("Worker %d stack dump:\n%s", worker.pid, dump)
