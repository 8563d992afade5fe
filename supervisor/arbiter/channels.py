"""Reading each worker's channel on the supervisor's loop."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.channel import Message, read_messages

OnMessage = Callable[[WorkerRecord, Message], None]


async def read(worker: WorkerRecord, on_message: OnMessage, then: Callable[[], None]) -> None:
    """Until the worker's end closes: each batch of messages, then ``then()``."""
    while worker.channel is not None and worker.channel.fileno() >= 0:
        try:
            await anyio.wait_readable(worker.channel)
        except (anyio.ClosedResourceError, OSError):
            return
        if not drain(worker, on_message):
            return
        then()


def drain(worker: WorkerRecord, on_message: OnMessage) -> bool:
    """Handle every waiting message; False once the worker's end is closed."""
    if worker.channel is None:
        return False
    messages, eof = read_messages(worker.channel)
    for message in messages:
        on_message(worker, message)
    if eof:
        anyio.notify_closing(worker.channel)
        worker.channel.close()
        worker.channel = None
    return not eof
