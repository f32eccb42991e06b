"""When to try a delivery again: settings from ``pathway.yaml`` and backoff with full jitter.

``pathway.yaml`` may carry a ``delivery:`` section; every key is optional::

    delivery:
      base_delay_seconds: 2        # first retry waits up to this long
      max_delay_seconds: 600       # no retry waits longer (unless the receiver's Retry-After asks)
      max_attempts: 10             # then the delivery is dead-lettered
      timeout_seconds: 10          # per POST
      lease_seconds: 300           # how long a claim lasts before another worker may take it over
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any


@dataclass(frozen=True)
class RetrySettings:
    """How hard and how long the worker tries a delivery."""

    base_delay_seconds: float = 2.0
    max_delay_seconds: float = 600.0
    max_attempts: int = 10
    timeout_seconds: float = 10.0
    lease_seconds: float = 300.0

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> "RetrySettings":
        """Settings from a ``delivery:`` mapping; absent keys keep their defaults."""
        section = section or {}
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ValueError(f"pathway.yaml delivery: unknown keys {unknown}; known keys are {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in section.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"pathway.yaml delivery.{name} must be a positive number, not {value!r}")
            values[name] = int(value) if name == "max_attempts" else float(value)
        settings = cls(**values)
        if settings.base_delay_seconds > settings.max_delay_seconds:
            raise ValueError("pathway.yaml delivery: base_delay_seconds is larger than max_delay_seconds")
        return settings

    def backoff(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt: exponential with full jitter."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** max(attempts - 1, 0))
        return (rng or random).uniform(0, ceiling)


def retry_after_seconds(header: str | None, now: datetime | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for (delay-seconds or an HTTP date), if readable."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
