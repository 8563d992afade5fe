"""What the policy can ask the arbiter to do. The arbiter carries each one out in one place
(``Arbiter.act``): one place forks, one place sends SIGKILL, one place logs a decision."""

from __future__ import annotations

from typing import NamedTuple

from supervisor.pool import Reason


class Spawn(NamedTuple):
    """Fork this many new workers of the current generation."""

    workers: int


class Retire(NamedTuple):
    """Mark a serving worker for replacement; it keeps serving until one serves."""

    pid: int
    reason: Reason
    detail: str = ""


class KeepServing(NamedTuple):
    """Take a worker off the replacement list (a rolling restart was aborted)."""

    pid: int


class Drain(NamedTuple):
    """Tell a worker to stop accepting and finish what it has (SIGTERM).

    ``last``: no sibling will accept after it (the supervisor is stopping), so it
    serves what the kernel already queued before it closes its listeners."""

    pid: int
    reason: Reason
    last: bool = False


class Leave(NamedTuple):
    """A worker started draining on its own: count it as leaving, replace it."""

    pid: int
    reason: Reason


class Quit(NamedTuple):
    """Fast shutdown of one worker (SIGQUIT): cancel what is in flight."""

    pid: int


class Kill(NamedTuple):
    """SIGKILL; with ``dump``, SIGABRT first so faulthandler writes its stack. ``why``
    completes "Worker N ..." in the log line (empty: already said)."""

    pid: int
    reason: Reason
    why: str
    dump: bool = False


class Count(NamedTuple):
    """A worker left for ``reason`` (the restarts metric, and status)."""

    reason: Reason


class Failed(NamedTuple):
    """A failure that counts towards crash-loop backoff."""


class ExitCode(NamedTuple):
    """The supervisor will exit with at least this code."""

    code: int


class BeginStop(NamedTuple):
    """Stop the supervisor (drain everyone, or fast), exiting with ``code``."""

    fast: bool
    code: int = 0


class Finish(NamedTuple):
    """Nothing is left to wait for: the supervisor exits."""


class BootFailing(NamedTuple):
    """The app does not boot while none serve (``None``: it boots again)."""

    message: str | None


class Log(NamedTuple):
    """A line about a decision, logged where it is carried out."""

    level: int
    message: str


Action = (
    Spawn
    | Retire
    | KeepServing
    | Drain
    | Leave
    | Quit
    | Kill
    | Count
    | Failed
    | ExitCode
    | BeginStop
    | Finish
    | BootFailing
    | Log
)
