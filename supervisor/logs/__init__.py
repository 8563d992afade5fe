"""Logging for the supervisor and its workers: text or one JSON object a line, never lost.

The pid sits in a fixed place on every text line so a worker's story can be
grepped; in JSON mode every line, whoever wrote it, is one object. Lines are
written straight to stdout/stderr (or the log files) by each process through
a :class:`~supervisor.logs.sink.LineSink`: whole lines, batched, with
backpressure instead of loss when the reader stalls.
"""

from __future__ import annotations

from supervisor.logs.buffer import StartupErrorBuffer
from supervisor.logs.handlers import (
    LEVELS,
    TRACE,
    adopt_app_logging,
    after_fork,
    apply_log_config,
    flush_all,
    install,
    reopen,
    sink_fds,
    sinks,
    stall_stats,
    state,
)
from supervisor.logs.sink import LineSink

__all__ = [
    "LEVELS",
    "TRACE",
    "LineSink",
    "StartupErrorBuffer",
    "adopt_app_logging",
    "after_fork",
    "apply_log_config",
    "flush_all",
    "install",
    "reopen",
    "sink_fds",
    "sinks",
    "stall_stats",
    "state",
]
