"""Holding back a worker's boot errors so the supervisor can show them once."""

from __future__ import annotations

import logging
from types import TracebackType


class StartupErrorBuffer(logging.Filter):
    """Holds back a logger's errors during worker boot.

    If boot fails, the supervisor shows the error once for all workers
    instead of N interleaved tracebacks; if boot succeeds, they are logged.
    """

    def __init__(self, logger_name: str) -> None:
        super().__init__()
        self.logger = logging.getLogger(logger_name)
        self.records: list[logging.LogRecord] = []
        self.active = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.active and record.levelno >= logging.ERROR:
            self.records.append(record)
            return False
        return True

    def __enter__(self) -> StartupErrorBuffer:
        self.active = True
        self.logger.addFilter(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.active = False
        self.logger.removeFilter(self)

    def release(self) -> None:
        """Boot succeeded: log what was held back and stop holding."""
        self.active = False
        self.logger.removeFilter(self)
        for record in self.records:
            self.logger.handle(record)
        self.records.clear()

    def text(self) -> str:
        formatter = logging.Formatter("%(message)s")
        return "\n".join(formatter.format(record).rstrip() for record in self.records)
