"""In the supervisor: every worker's area, and what the reaped ones left behind.

The supervisor creates a worker's area before forking it (:meth:`Harvest.open`),
reads the areas of live workers at scrape time, and when it reaps a worker
reads its area one last time, folds what still counts into the retired
total and closes the descriptor (:meth:`Harvest.retire`): one total however
many workers came and went, and no file anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os

import msgspec

from supervisor.appmetrics import area, pooling

logger = logging.getLogger("supervisor")


class Harvest:
    """The areas of live workers, by pid, and the retired total."""

    def __init__(self, *, pid_label: bool = False) -> None:
        self.pid_label = pid_label
        self.live: dict[int, int] = {}
        self.layouts: dict[int, _Layout] = {}  # by fd: what is parsed of each live area
        self.retired = pooling.Retired()
        self.keys: dict[bytes, pooling.Series] = {}  # decoded once, reused at every scrape
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            logger.info(
                "PROMETHEUS_MULTIPROC_DIR is set; workers keep their prometheus_client values"
                " in the supervisor's memory instead, and nothing is written there"
            )

    def open(self) -> int:
        """A fresh area for the next worker: its descriptor, handed over at fork."""
        return area.create()

    def adopt(self, pid: int, fd: int) -> None:
        self.live[pid] = fd
        self.layouts[fd] = _Layout()

    def discard(self, fd: int) -> None:
        """The fork failed: nobody will write there."""
        with contextlib.suppress(OSError):
            os.close(fd)

    def retire(self, pid: int) -> None:
        """A worker was reaped: keep what still counts, let go of its area."""
        fd = self.live.pop(pid, None)
        if fd is None:
            return
        try:
            self.retired.retire(self._reading(fd))
        except (OSError, ValueError, msgspec.DecodeError) as exc:  # never stops the supervisor
            logger.error("Metrics of worker %d could not be read (%s); they are lost", pid, exc)
        finally:
            self.layouts.pop(fd, None)
            os.close(fd)

    def pooled(self) -> pooling.Reading:
        readings: dict[int, pooling.Reading] = {}
        for pid, fd in self.live.items():
            try:
                readings[pid] = self._reading(fd)
            except (OSError, ValueError, msgspec.DecodeError) as exc:
                logger.warning("Metrics of worker %d could not be read (%s)", pid, exc)
        return pooling.pool(self.retired, readings, pid_label=self.pid_label)

    def families(self) -> list[pooling.Family]:
        """The app's metrics, pooled over every worker that ever lived."""
        return pooling.families(self.pooled())

    def _reading(self, fd: int) -> pooling.Reading:
        layout = self.layouts.setdefault(fd, _Layout())
        data = area.snapshot(fd)
        new, layout.end = area.keys(data, layout.end)
        for raw, cell in new:
            series = self.keys.get(raw)
            if series is None:
                series = self.keys[raw] = pooling.decode_key(raw)
            layout.cells.append((series, cell))
        cells = area.values_of(data)
        return {series: (cells[cell], cells[cell + 1]) for series, cell in layout.cells}


class _Layout(msgspec.Struct):
    """One live area's entries, parsed once: each series and where its value is."""

    end: int = area.HEADER.size
    cells: list[tuple[pooling.Series, int]] = msgspec.field(default_factory=list)
