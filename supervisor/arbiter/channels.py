"""Reading each worker's channel on the supervisor's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from supervisor.arbiter.lifecycle import WorkerRecord
from supervisor.channel import Message, read_messages

# Handles one message; True when the pool may need a decision now (a heartbeat
# that changes nothing does not: the tick looks again anyway).
OnMessage = Callable[[WorkerRecord, Message], bool]


def watch(worker: WorkerRecord, on_message: OnMessage, then: Callable[[], None]) -> None:
    """Until the worker's end closes: each batch of messages, then ``then()`` if one asked.

    A reader kept on the loop, not a task awaiting readability: a heartbeat
    costs the idle supervisor one wakeup and no epoll_ctl add/remove pair.
    """
    if worker.channel is None:
        return

    def ready() -> None:
        if drain(worker, on_message):
            then()

    asyncio.get_running_loop().add_reader(worker.channel.fileno(), ready)


def drain(worker: WorkerRecord, on_message: OnMessage) -> bool:
    """Handle every waiting message; True if one asked for a decision or the end closed."""
    channel = worker.channel
    if channel is None:
        return False
    messages, eof = read_messages(channel)
    decide = False
    for message in messages:
        decide = on_message(worker, message) or decide
    if eof:
        # Off the loop before the fd number can be reused by the next worker's channel.
        with contextlib.suppress(RuntimeError):  # no loop: a test, or after run() ended
            asyncio.get_running_loop().remove_reader(channel.fileno())
        channel.close()
        worker.channel = None
    return decide or eof
