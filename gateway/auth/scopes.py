"""SMART backend-service scopes in v1 (``system/Task.write``) and v2 (``system/Task.cruds``)
syntax, and Pathway's own (``ingest``, ``audit.read``, ...).

A resource scope means a resource type (or ``*``) and a set of SMART v2 permissions:
``c``reate, ``r``ead, ``u``pdate, ``d``elete, ``s``earch. v1 ``read`` is ``rs``, v1
``write`` is ``cud`` and v1 ``*`` is ``cruds``, so the two syntaxes are interchangeable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

RESOURCE_SCOPE = re.compile(r"^system/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|(?=[cruds])c?r?u?d?s?)$")
SPECIAL_SCOPES = frozenset({"ingest", "consent.decide", "audit.read", "break-glass", "console", "metrics"})
PERMISSIONS = "cruds"
V1_MODES = {"read": "rs", "write": "cud", "*": "cruds"}
_V1_NAMES = {frozenset(letters): name for name, letters in V1_MODES.items()}


class ResourceScope(NamedTuple):
    """A resource scope's type (or ``*``), permissions and whether it was written in v1 syntax."""

    resource_type: str
    permissions: frozenset[str]
    v1: bool

    def text(self) -> str:
        """The scope in v1 syntax if it was asked that way and v1 can say it, else in v2."""
        mode = _V1_NAMES.get(self.permissions) if self.v1 else None
        return f"system/{self.resource_type}.{mode or ''.join(p for p in PERMISSIONS if p in self.permissions)}"


def parse(scope: str) -> ResourceScope | None:
    """The resource scope a scope string names, or None (a special or unknown scope)."""
    match = RESOURCE_SCOPE.match(scope)
    if match is None:
        return None
    mode = match[2]
    return ResourceScope(match[1], frozenset(V1_MODES.get(mode, mode)), mode in V1_MODES)


def is_valid_scope(scope: str) -> bool:
    return scope in SPECIAL_SCOPES or parse(scope) is not None


def _intersection(a: ResourceScope, b: ResourceScope) -> ResourceScope | None:
    if a.resource_type not in ("*", b.resource_type) and b.resource_type != "*":
        return None
    permissions = a.permissions & b.permissions
    resource_type = b.resource_type if a.resource_type == "*" else a.resource_type
    return ResourceScope(resource_type, permissions, a.v1) if permissions else None


def _covers(granted: ResourceScope, wanted: ResourceScope) -> bool:
    return granted.resource_type in ("*", wanted.resource_type) and wanted.permissions <= granted.permissions


def allows(granted: Iterable[str], resource_type: str, mode: str) -> bool:
    """Whether a token's scopes allow ``mode`` on ``resource_type``: ``mode`` is a v1 mode
    (``read`` needs ``rs``, ``write`` needs ``cud``) or v2 letters (``r``, ``s``, ``cu``...).
    Permissions add up across scopes (``system/Patient.r system/*.s`` allow ``read``)."""
    needed = set(V1_MODES.get(mode, mode))
    held: set[str] = set()
    for scope in filter(None, map(parse, granted)):
        if scope.resource_type in ("*", resource_type):
            held |= scope.permissions
    return bool(needed) and needed <= held


def grantable(allowed: Iterable[str], requested: Iterable[str]) -> list[str]:
    """The requested scopes narrowed to what a client is registered for, never widened.

    A resource scope is cut down to the part the registration covers (``system/*.cruds``
    asked by a client registered for ``system/*.read`` gets ``system/*.rs``), written in
    the syntax it was asked in (v2 where v1 cannot say it); special scopes are all or
    nothing; unknown scopes are dropped."""
    allowed = list(allowed)
    registered = [s for s in map(parse, allowed) if s is not None]
    granted: dict[tuple[str, frozenset[str]], str] = {}
    specials: list[str] = []
    for text in dict.fromkeys(requested):
        if text in SPECIAL_SCOPES:
            if text in allowed:
                specials.append(text)
            continue
        wanted = parse(text)
        parts: dict[str, frozenset[str]] = {}  # per type, what the registered scopes give of it
        for part in filter(None, (_intersection(wanted, own) for own in registered if wanted is not None)):
            parts[part.resource_type] = parts.get(part.resource_type, frozenset()) | part.permissions
        for resource_type, permissions in parts.items():
            granted.setdefault((resource_type, permissions), ResourceScope(resource_type, permissions, wanted.v1).text())
    scopes = [ResourceScope(t, p, False) for t, p in granted]
    kept = [text for scope, text in zip(scopes, granted.values()) if not any(o != scope and _covers(o, scope) for o in scopes)]
    return kept + specials


def supported_scopes(resource_types: Iterable[str]) -> list[str]:
    """Scopes a client may be registered for and granted: for every type and ``*``, v1
    ``read``/``write``/``*`` and v2 ``rs``/``cud``/``cruds`` (any other v2 combination of
    ``cruds`` letters is accepted too), and the special scopes."""
    modes = [*V1_MODES, *V1_MODES.values()]
    return [f"system/{t}.{m}" for t in ("*", *resource_types) for m in modes] + sorted(SPECIAL_SCOPES)
