"""Until when a decision holds: the next instant at which an input it read could change it.

Compiled consents and agreement terms each keep the sorted instants at which they change (a
period starts or ends, an agreement starts, expires or becomes due for review); a decision
holds until the earliest of those after its ``at``. The decision states it as ``"until"``: an
ISO 8601 UTC instant, or null when nothing it read changes later.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from consent.model import RequestError, parse_instant

INFINITY = float("inf")


def boundary_list(instants: Iterable[float]) -> tuple[float, ...]:
    """The finite instants, sorted and without repeats, ready for :func:`next_boundary`."""
    return tuple(sorted({i for i in instants if -INFINITY < i < INFINITY}))


def next_boundary(boundaries: tuple[float, ...], at: float) -> float:
    """The first of ``boundaries`` strictly after ``at``, or infinity."""
    index = bisect_right(boundaries, at)
    return boundaries[index] if index < len(boundaries) else INFINITY


def day_start(day: date) -> float:
    """Epoch seconds of midnight UTC starting ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()


def day_after(day: date) -> float:
    """Epoch seconds of midnight UTC ending ``day`` (infinity after the last representable day)."""
    return INFINITY if day == date.max else day_start(day + timedelta(days=1))


@lru_cache(maxsize=4096)
def iso_instant(instant: float) -> str | None:
    """``2026-12-05T10:00:00Z`` (microseconds only when needed) for epoch seconds; None for infinity."""
    if instant == INFINITY:
        return None
    moment = datetime.fromtimestamp(instant, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def until_epoch(decision: dict[str, Any]) -> float | None:
    """Epoch seconds at which ``decision`` stops holding, or None when it holds until something else changes."""
    until = decision.get("until")
    if until is None:
        return None
    try:
        return parse_instant(until)
    except RequestError as error:
        raise ValueError(f"decision 'until' is not an ISO 8601 instant: {until!r}") from error
