"""Reading each worker's channel on the supervisor's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from supervisor.arbiter.lifecycle import Pool, WorkerRecord
from supervisor.channel import Message, read_messages

# Handles one message; True when the pool may need a decision now (a heartbeat
# that changes nothing does not: the tick looks again anyway).
OnMessage = Callable[[WorkerRecord, Message], bool]


def watch(worker: WorkerRecord, on_message: OnMessage, then: Callable[[], None]) -> None:
    """Until the worker's end closes: each batch of messages, then ``then()`` if one asked.

    A reader kept on the loop, not a task awaiting readability: a heartbeat
    costs the supervisor one wakeup and no epoll_ctl add/remove pair.
    """
    worker.parked = False
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


def settle(pool: Pool, steady: bool, on_message: OnMessage, then: Callable[[], None]) -> None:
    """A steady pool's channels are read on the tick (:func:`read_parked`), not as each
    heartbeat arrives: the idle supervisor wakes once a second, not once per worker too.
    Anything in motion and every channel is read as it speaks again."""
    loop = asyncio.get_running_loop()
    for worker in pool.workers.values():
        if worker.channel is None or worker.parked is steady:
            continue
        if steady:
            loop.remove_reader(worker.channel.fileno())
            worker.parked = True
        else:
            watch(worker, on_message, then)


def read_parked(pool: Pool, on_message: OnMessage) -> None:
    """What the parked channels said since the last tick (the tick decides right after)."""
    for worker in list(pool.workers.values()):
        if worker.parked:
            drain(worker, on_message)
