"""Cells of a run and their medians: finding one, reading a median, dividing two."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

ANCHOR = "gunicorn"  # gunicorn + UvicornWorker, the drop-in we replace
Cell = dict[str, Any]
OLD_PROFILE = "quiet"  # results from before profiles: every server with its access log off


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every number over the runs; booleans become "k/n"; lists and dicts are kept raw."""
    keys = {key for run in runs for key in run}
    result: dict[str, Any] = {}
    for key in sorted(keys):
        values = [run.get(key) for run in runs]
        if all(isinstance(v, bool) for v in values):
            result[key] = f"{sum(bool(v) for v in values)}/{len(values)}"
            continue
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers:
            middle = statistics.median(numbers)
            result[key] = round(middle, 3) if isinstance(middle, float) else middle
    return result


def profile_of(cell: Cell) -> str:
    return str(cell.get("profile", OLD_PROFILE))


def find(
    cells: Iterable[Cell],
    scenario: str,
    server: str,
    workers: int,
    *,
    variant: str = "",
    profile: str = "default",
) -> Cell | None:
    for cell in cells:
        key = (cell["scenario"], cell["server"], cell["workers"], cell["variant"], profile_of(cell))
        if key == (scenario, server, workers, variant, profile):
            return cell
    return None


def value(cell: Cell | None, metric: str) -> float | None:
    found = cell["median"].get(metric) if cell else None
    return float(found) if isinstance(found, int | float) and not isinstance(found, bool) else None


def divide(mine: float | None, theirs: float | None) -> float | None:
    return None if mine is None or not theirs else round(mine / theirs, 3)


def ratio(cells: list[Cell], cell: Cell, metric: str, server: str = ANCHOR,
          profile: str | None = None) -> float | None:  # fmt: skip
    """``cell``'s median of ``metric`` over ``server``'s in ``profile`` (else ``cell``'s own)."""
    other = find(cells, cell["scenario"], server, cell["workers"], variant=cell["variant"],
                 profile=profile or profile_of(cell))  # fmt: skip
    return None if other is None else divide(value(cell, metric), value(other, metric))


Stat = tuple[float, float, float]  # median, min, max over the runs


def stat(cell: Cell | None, metric: str) -> Stat | None:
    if cell is None:
        return None
    values = [run.get(metric) for run in cell["runs"]]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return None
    return float(statistics.median(numbers)), min(numbers), max(numbers)
