"""Parsing FHIR search query parameters into store criteria."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from gateway.fhir.outcomes import FhirError
from gateway.store.indexing import REFERENCE_PARAMS

DEFAULT_COUNT = 50
MAX_COUNT = 500
MAX_VALUE_LENGTH = 300
CONTROL_PARAMS = frozenset({"_count", "_offset", "_lastUpdated", "_format", "_total"})


@dataclass
class SearchQuery:
    """A parsed search: criteria for the store plus paging."""

    criteria: list[tuple[str, list[str]]] = field(default_factory=list)
    patient: str | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    count: int = DEFAULT_COUNT
    offset: int = 0


def _reference(param: str, value: str) -> str:
    """Normalise ``Type/id``, an absolute URL or (for patient) a bare id."""
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return f"{parts[-2]}/{parts[-1]}"
    if param in ("patient", "subject") and len(parts) == 1:
        return f"Patient/{value}"
    return value


def _instant(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        raise FhirError(400, f"_lastUpdated value {value!r} is not a date or instant in range", "value", "_lastUpdated") from None


def _shifted(moment: datetime, delta: timedelta) -> datetime | None:
    """``moment + delta``, or None (no bound) past the end or start of the calendar."""
    try:
        return moment + delta
    except OverflowError:
        return None


def _int(name: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise FhirError(400, f"{name} must be a whole number from {low} to {high}", "value", name)
    return int(value)


def parse_search(resource_type: str, params: list[tuple[str, str]], allowed: frozenset[str]) -> SearchQuery:
    """Check every parameter (unknown ones are refused, never ignored) and build the query."""
    query = SearchQuery()
    for name, value in params:
        if len(value) > MAX_VALUE_LENGTH:
            raise FhirError(400, f"search parameter {name} is longer than {MAX_VALUE_LENGTH} characters", "too-long", name)
        if name == "_count":
            query.count = _int("_count", value, 0, MAX_COUNT)
        elif name == "_offset":
            query.offset = _int("_offset", value, 0, 10**9)
        elif name == "_lastUpdated":
            prefix, rest = (value[:2], value[2:]) if value[:2] in ("gt", "ge", "lt", "le", "eq") else ("eq", value)
            moment = _instant(rest)
            if prefix in ("gt", "ge"):
                query.updated_after = _shifted(moment, -timedelta(microseconds=1 if prefix == "ge" else 0))
            elif prefix in ("lt", "le"):
                query.updated_before = _shifted(moment, timedelta(microseconds=1 if prefix == "le" else 0))
            else:
                query.updated_after, query.updated_before = _shifted(moment, -timedelta(microseconds=1)), _shifted(moment, timedelta(seconds=1))
        elif name in ("_format", "_total"):
            continue
        elif name not in allowed:
            raise FhirError(400, f"search parameter {name!r} is not supported for {resource_type}", "not-supported", name)
        elif not value:
            raise FhirError(400, f"search parameter {name} has no value", "value", name)
        else:
            values = [_reference(name, v) if name in REFERENCE_PARAMS else v for v in value.split(",")]
            if name == "patient" and len(values) == 1:
                query.patient = values[0]
            else:
                query.criteria.append((name, values))
    return query
