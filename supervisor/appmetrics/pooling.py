"""How the values of many workers become one set of series (pure, no processes).

Counters, histograms and summaries are summed over every worker that ever
lived: a dead worker's values are folded into one retired total when it is
reaped, so the total never goes backwards and memory does not grow with
recycles. Gauges follow prometheus_client's ``multiprocess_mode``:

- ``sum`` / ``max`` / ``min`` / ``mostrecent``: over live workers and the
  retired total (a dead worker's last value keeps counting);
- ``livesum`` / ``livemax`` / ``livemin`` / ``livemostrecent``: over live
  workers only; a dead worker's value disappears at once;
- ``all`` (prometheus_client's default) and ``liveall``: one series per live
  worker with a ``pid`` label when asked for (``--metrics-pid-label``), else
  summed over live workers. Dead workers' series are never kept (in
  prometheus_client they pile up, one per pid, forever).

Info and Enum metrics are live-only: the most recently set value of a live
worker wins.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

import msgspec

Labels = tuple[tuple[str, str], ...]
SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})
LIVE_TYPES = frozenset({"info", "stateset"})
PER_WORKER_MODES = frozenset({"all", "liveall"})


class Series(NamedTuple):
    """One stored value: its metric, the sample name, labels, and how it pools.

    A tuple, not a dataclass: a scrape hashes every series several times, and a
    tuple's hash is computed in C.
    """

    typ: str
    mode: str  # a gauge's multiprocess_mode; "" for other types
    metric: str
    sample: str
    labels: Labels
    help: str


Value = tuple[float, float]  # value, timestamp (the mostrecent modes)
Reading = dict[Series, Value]


class Sample(msgspec.Struct):
    name: str
    labels: dict[str, str]
    value: float


class Family(msgspec.Struct):
    """A metric family ready for the exposition format."""

    name: str
    typ: str
    help: str
    samples: list[Sample] = msgspec.field(default_factory=list)


class _Key(msgspec.Struct, array_like=True):
    typ: str
    mode: str
    metric: str
    sample: str
    labels: dict[str, str]
    help: str


_decoder = msgspec.json.Decoder(_Key)


def encode_key(
    typ: str, mode: str, metric: str, sample: str, *, labels: Mapping[str, str], help_text: str
) -> bytes:
    """The key a worker stores beside a value (see :func:`decode_key`)."""
    return msgspec.json.encode(_Key(typ, mode, metric, sample, dict(labels), help_text))


def decode_key(raw: bytes) -> Series:
    key = _decoder.decode(raw)
    labels = tuple(sorted(key.labels.items()))
    return Series(key.typ, key.mode, key.metric, key.sample, labels, key.help)


def live_only(series: Series) -> bool:
    """Whether a dead worker's value leaves the output (instead of joining the total)."""
    if series.typ in LIVE_TYPES:
        return True
    return series.typ == "gauge" and (series.mode.startswith("live") or series.mode == "all")


@functools.cache  # a handful of (type, mode) pairs, looked up for every value of a scrape
def _operation(typ: str, mode: str) -> str:
    if typ in SUMMED_TYPES:
        return "sum"
    if typ in LIVE_TYPES:
        return "recent"
    mode = mode.removeprefix("live")
    return {"max": "max", "min": "min", "mostrecent": "recent"}.get(mode, "sum")


def combine(into: Reading, series: Series, value: float, stamp: float) -> None:
    """Fold one worker's value of a series into ``into``."""
    old = into.get(series)
    if old is None:
        into[series] = (value, stamp)
        return
    operation = _operation(series.typ, series.mode)
    if operation == "sum":
        into[series] = (old[0] + value, max(old[1], stamp))
    elif operation == "max":
        into[series] = max(old, (value, stamp))
    elif operation == "min":
        into[series] = min(old, (value, stamp))
    elif stamp >= old[1]:  # most recent
        into[series] = (value, stamp)


class Retired(msgspec.Struct):
    """What every reaped worker left behind that still counts, in one total."""

    values: Reading = msgspec.field(default_factory=dict)
    workers: int = 0

    def retire(self, reading: Reading) -> None:
        self.workers += 1
        for series, (value, stamp) in reading.items():
            if not live_only(series):
                combine(self.values, series, value, stamp)


def pool(retired: Retired, live: Mapping[int, Reading], *, pid_label: bool) -> Reading:
    """Retired totals plus every live worker's values, pooled series by series."""
    pooled: Reading = dict(retired.values)
    for pid, reading in live.items():
        for stored, (value, stamp) in reading.items():
            series = stored
            if stored.typ == "gauge" and stored.mode in PER_WORKER_MODES and pid_label:
                series = stored._replace(labels=(*stored.labels, ("pid", str(pid))))
            combine(pooled, series, value, stamp)
    return pooled


def families(pooled: Reading) -> list[Family]:
    """Pooled series as metric families: histogram buckets made cumulative, with _count."""
    found: dict[str, Family] = {}
    # bound -> (its label as the worker spelled it, observations)
    buckets: dict[tuple[str, Labels], dict[float, tuple[str, float]]] = {}
    for series, (value, _stamp) in sorted(pooled.items(), key=lambda item: _order(item[0])):
        family = found.get(series.metric)
        if family is None:
            family = found[series.metric] = Family(series.metric, series.typ, series.help)
        if series.typ == "histogram" and series.sample.endswith("_bucket"):
            bound: str = dict(series.labels).get("le", "+Inf")
            rest = tuple(pair for pair in series.labels if pair[0] != "le")
            per_bound = buckets.setdefault((series.metric, rest), {})
            _spelling, count = per_bound.get(float(bound), (bound, 0.0))
            per_bound[float(bound)] = (bound, count + value)
            continue
        if series.typ == "info" and value == 0:
            continue  # an Info value that was replaced
        family.samples.append(Sample(series.sample, dict(series.labels), value))
    for (metric, labels), per_bound in buckets.items():
        family = found[metric]
        total = 0.0
        for upper in sorted(per_bound):
            spelling, count = per_bound[upper]
            total += count
            le = {"le": spelling}
            family.samples.append(Sample(f"{metric}_bucket", {**dict(labels), **le}, total))
        family.samples.append(Sample(f"{metric}_count", dict(labels), total))
    return list(found.values())


def _order(series: Series) -> tuple[str, Labels, str]:
    return (series.metric, series.labels, series.sample)
