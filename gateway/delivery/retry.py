"""When to try a delivery again: the ``Retry-After`` a receiver asks for.

The schedule itself (capped exponential backoff with full jitter for ``retry_for_hours``)
is :class:`gateway.conf.Delivery`, pathway.yaml's ``delivery:`` section; every key is
optional::

    delivery:
      base_delay_seconds: 2      # first retry waits up to this long
      max_delay_seconds: 3600    # no retry waits longer (unless the receiver's Retry-After asks)
      retry_for_hours: 72        # then the delivery is dead-lettered for an operator to replay
      max_attempts: null         # an optional cap on attempts as well
      error_after_hours: 24      # a subscription failing this long shows status error
      timeout_seconds: 10        # per POST
      lease_seconds: 300         # how long a claim lasts before another worker may take it over
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


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
