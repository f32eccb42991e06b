"""SMART-style scopes (``system/Task.write``, ``system/*.read``) and Pathway's own."""

from __future__ import annotations

import re
from collections.abc import Iterable

RESOURCE_SCOPE = re.compile(r"^(system|user|patient)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*)$")
SPECIAL_SCOPES = frozenset({"ingest", "consent.decide", "audit.read", "break-glass", "console", "metrics"})


def is_valid_scope(scope: str) -> bool:
    return scope in SPECIAL_SCOPES or RESOURCE_SCOPE.match(scope) is not None


def covers(granted: str, wanted: str) -> bool:
    """Whether one granted scope allows a wanted one (wildcards on type and mode)."""
    if granted == wanted:
        return True
    g, w = RESOURCE_SCOPE.match(granted), RESOURCE_SCOPE.match(wanted)
    if g is None or w is None:
        return False
    return g[1] == w[1] and g[2] in ("*", w[2]) and g[3] in ("*", w[3])


def allows(granted: Iterable[str], resource_type: str, mode: str) -> bool:
    """Whether a token's scopes allow ``mode`` (read/write) on ``resource_type``."""
    wanted = f"system/{resource_type}.{mode}"
    return any(covers(g, wanted) for g in granted)


def grantable(allowed: Iterable[str], requested: Iterable[str]) -> list[str]:
    """The requested scopes a client may have (narrowed, never widened)."""
    allowed = list(allowed)
    return [r for r in dict.fromkeys(requested) if is_valid_scope(r) and any(covers(a, r) for a in allowed)]
