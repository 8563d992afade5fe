"""In the worker: prometheus_client's values, kept in the supervisor's shared memory.

:func:`install` runs in every worker when the supervisor serves metrics. If
the app never imports prometheus_client, it costs one mmap and nothing per
request: the swap happens in an import hook, when ``prometheus_client.metrics``
is first imported. Otherwise it does what prometheus_client's multiprocess
mode does (replace ``values.ValueClass`` before metrics are made), but each
value is a slot in memory the supervisor owns instead of a file per process:
an increment is a lock, an addition and one 8-byte store.

With ``--preload`` prometheus_client (and the app's metrics) already exist
at fork: every metric on the default registry is moved into the area then.
Counters, histograms and summaries start from zero in each worker (what the
supervisor counted before forking is nobody's work); gauges keep their value.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from supervisor.appmetrics.area import Area, AreaFull
from supervisor.appmetrics.pooling import encode_key

logger = logging.getLogger("supervisor.worker")

WATCHED = "prometheus_client.metrics"
_state: dict[str, Area] = {}
_spare: Any = memoryview(bytearray(16)).cast("d")  # where values go once the area is full
# Everything that holds a place in the area, for a process the app forks (below).
_holders: weakref.WeakSet[Any] = weakref.WeakSet()
_full: list[bool] = []  # said once that the area is full


def install(fd: int) -> None:
    """Map this worker's area; move prometheus_client's values into it, now or at import."""
    try:
        _state["area"] = Area(fd)
    except OSError as exc:
        logger.warning(
            "Cannot map the metrics area (%s); this worker's metrics are not pooled", exc
        )
        return
    os.register_at_fork(after_in_child=_detach)
    module = sys.modules.get(WATCHED)
    if module is not None:
        adopt(module)
    else:
        sys.meta_path.insert(0, _Hook())


def _detach() -> None:
    """In a process the app forked (multiprocessing, a pool): its values are its own.

    It would otherwise write its copy's totals over the worker's: each holder
    gets a private copy of the area, as it was at the fork.
    """
    area = _state.pop("area", None)
    if area is None:
        return
    private = memoryview(bytearray(area.map[: area.used])).cast("d")
    for holder in list(_holders):
        shared = getattr(holder, "_shared", None)
        if isinstance(holder, SharedValue):
            holder._cells = private
        elif isinstance(shared, tuple):
            holder._shared = (private, shared[1])
        elif isinstance(shared, list):
            holder._shared = [(private, index) for _cells, index in shared]


def _place(key: bytes) -> tuple[Any, int]:
    area = _state.get("area")
    if area is None:  # a forked child of the worker, or the area could not be mapped
        return _spare, 0
    try:
        return area.cells, area.slot(key)
    except AreaFull as exc:
        if not _full:
            logger.warning("%s: new metric series are not pooled any more", exc)
            _full.append(True)
        return _spare, 0


class SharedValue:
    """prometheus_client's ValueClass interface, backed by the shared area."""

    _multiprocess = False  # values are read in-process as usual; no files involved

    def __init__(  # noqa: PLR0917 - prometheus_client's call, positional
        self,
        typ: str,
        metric_name: str,
        name: str,
        labelnames: Sequence[str],
        labelvalues: Sequence[str],
        help_text: str,
        multiprocess_mode: str = "",
        **_kwargs: Any,
    ) -> None:
        labels = dict(zip(labelnames, labelvalues, strict=False))
        key = encode_key(
            typ, multiprocess_mode, metric_name, name, labels=labels, help_text=help_text
        )
        self._cells, self._index = _place(key)
        self._value = 0.0
        self._lock = threading.Lock()
        _holders.add(self)

    def inc(self, amount: float) -> None:
        with self._lock:
            self._value += amount
            self._cells[self._index] = self._value

    def set(self, value: float, timestamp: float | None = None) -> None:
        with self._lock:
            self._value = value
            self._cells[self._index + 1] = timestamp or 0.0
            self._cells[self._index] = value

    def set_exemplar(self, exemplar: Any) -> None:
        return  # exemplars are not pooled (nor in prometheus_client's multiprocess mode)

    def get(self) -> float:
        with self._lock:
            return self._value

    def get_exemplar(self) -> None:
        return None


class _Hook(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``prometheus_client.metrics`` like the path finder does, and adopts it once run."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != WATCHED:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        self.real = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: Any) -> ModuleType | None:
        created: ModuleType | None = self.real.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        self.real.exec_module(module)
        adopt(module)


def adopt(metrics: ModuleType) -> None:
    """Make every new value shared; move the metrics that already exist (--preload)."""
    from prometheus_client import values  # noqa: PLC0415 - imported by metrics already

    values.ValueClass = SharedValue
    _patch_info_and_enum(metrics)
    from prometheus_client.registry import REGISTRY  # noqa: PLC0415

    for metric in _existing(metrics, REGISTRY):
        _move(metrics, metric)


def _existing(metrics: ModuleType, registry: Any) -> Iterator[Any]:
    with registry._lock:
        collectors = list(registry._collector_to_names)
    for collector in collectors:
        if not isinstance(collector, metrics.MetricWrapperBase):
            continue
        if collector._is_parent():
            with collector._lock:
                yield from list(collector._metrics.values())
        else:
            yield collector


def _move(metrics: ModuleType, metric: Any) -> None:
    if isinstance(metric, metrics.Gauge):
        value = metric._value.get()
        metric._metric_init()
        if value:
            metric._value.set(value, time.time() if metric._is_most_recent else None)
    elif isinstance(metric, metrics.Info):
        value = dict(metric._value)
        metric._metric_init()
        metric._shared = None
        if value:
            metric.info(value)
    elif isinstance(metric, metrics.Enum):
        state = metric._value
        metric._metric_init()
        metric._shared = None
        metric.state(metric._states[state])
    else:  # Counter, Histogram, Summary: this worker's own count starts now
        metric._metric_init()


# Info and Enum keep plain attributes (prometheus_client's multiprocess mode does
# not support them); their current value is mirrored into the area on each change.


def _patch_info_and_enum(metrics: ModuleType) -> None:
    info_set = metrics.Info.info
    enum_init, enum_set = metrics.Enum.__init__, metrics.Enum.state

    def info(self: Any, val: dict[str, str]) -> None:
        info_set(self, val)
        _write_info(self)

    def enum_init_and_share(self: Any, *args: Any, **kwargs: Any) -> None:
        enum_init(self, *args, **kwargs)  # its states are known only at the end of __init__
        if self._is_observable():
            _write_enum(self)

    def state(self: Any, state: str) -> None:
        enum_set(self, state)
        _write_enum(self)

    metrics.Info.info = info
    metrics.Enum.__init__, metrics.Enum.state = enum_init_and_share, state


def _own_labels(metric: Any) -> dict[str, str]:
    return dict(zip(metric._labelnames, metric._labelvalues, strict=False))


def _write_info(metric: Any) -> None:
    labels = {**_own_labels(metric), **metric._value}
    key = encode_key(
        "info",
        "",
        metric._name,
        metric._name + "_info",
        labels=labels,
        help_text=metric._documentation,
    )
    now = time.time()
    with metric._lock:
        previous = getattr(metric, "_shared", None)
        if previous is not None:
            cells, index = previous
            cells[index + 1], cells[index] = now, 0.0  # the previous value is replaced
        cells, index = metric._shared = _place(key)
        cells[index + 1], cells[index] = now, 1.0
    _holders.add(metric)


def _write_enum(metric: Any) -> None:
    if getattr(metric, "_shared", None) is None:
        labels = _own_labels(metric)
        places = []
        for state in metric._states:
            key = encode_key(
                "stateset",
                "",
                metric._name,
                metric._name,
                labels={**labels, metric._name: state},
                help_text=metric._documentation,
            )
            places.append(_place(key))
        metric._shared = places
        _holders.add(metric)
    now = time.time()
    with metric._lock:
        for position, (cells, index) in enumerate(metric._shared):
            cells[index + 1] = now
            cells[index] = 1.0 if position == metric._value else 0.0
