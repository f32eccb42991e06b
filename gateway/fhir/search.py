"""Parsing FHIR search query parameters into store criteria.

Unknown parameters (and unknown modifiers or values of control parameters) are
ignored under ``Prefer: handling=lenient``, the default, and refused under
``handling=strict``; ``SearchQuery.applied`` keeps what was used, for the self link.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class

from gateway.fhir.capability import SUPPORTED_TYPES, search_param_types
from gateway.fhir.outcomes import FhirError
from gateway.store.indexing import MAX_NAME_PREFIX, REFERENCE_PARAMS, elements_read, fold_name, sortable_instant
from gateway.store.repository import Cursor, DateRange, Repository, Sort, Stored

DEFAULT_COUNT = 50
MAX_COUNT = 500
MAX_VALUE_LENGTH = 300
MAX_INCLUDED = 500  # resources _include and _revinclude add to one page, at most
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")
NAME_PARAMS = ("name", "family", "given")
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@dataclass(frozen=True)
class Include:
    """``_include``/``_revinclude``: resources of ``source`` whose ``param`` refers to (or from) a match."""

    source: str
    param: str
    target: str | None = None


@dataclass
class SearchQuery:
    """A parsed search: criteria for the store, paging, and what to add to the page."""

    criteria: list[tuple[str, list[str]]] = field(default_factory=list)
    excluded: list[tuple[str, list[str]]] = field(default_factory=list)
    token_ranges: list[tuple[str, DateRange]] = field(default_factory=list)
    ids: list[str] | None = None
    patient: str | None = None
    updated: list[DateRange] = field(default_factory=list)
    filters: list[Callable[[dict[str, Any]], bool]] = field(default_factory=list)
    sort: Sort = field(default_factory=Sort)
    count: int = DEFAULT_COUNT
    offset: int = 0
    after: Cursor | None = None
    summary_count: bool = False
    total: bool = False
    elements: list[str] | None = None
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)

    @property
    def elements_read(self) -> frozenset[str]:
        """The top-level elements its criteria and its order read."""
        names = {name.partition(":")[0] for name, _ in self.applied} | ({self.sort.param} if self.sort.param else set())
        return frozenset(element for name in names for element in elements_read(name))

    @property
    def wants_total(self) -> bool:
        """Whether the Bundle carries a total (asked for, or a count-only page as fhirpy's count() asks)."""
        return self.total or self.summary_count or self.count == 0


def strict_handling(prefer: str | None) -> bool:
    """Whether ``Prefer`` asks for ``handling=strict`` (lenient is the default)."""
    return any(part.replace(" ", "") == "handling=strict" for part in re.split(r"[;,]", prefer or ""))


def _reference(param: str, value: str) -> str:
    """Normalise ``Type/id``, an absolute URL or (for patient) a bare id."""
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return f"{parts[-2]}/{parts[-1]}"
    if param in ("patient", "subject") and len(parts) == 1:
        return f"Patient/{value}"
    return value


END_OF_TIME = datetime.max.replace(tzinfo=timezone.utc)


def _later(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, or the last instant there is past the end of the calendar."""
    try:
        return moment + delta
    except OverflowError:
        return END_OF_TIME


def _range(name: str, value: str) -> tuple[datetime, datetime]:
    """The span ``[start, end)`` a date or instant stands for, at the precision given."""
    try:
        if "T" not in value:
            precision = {4: "year", 7: "month", 10: "day"}.get(len(value))
            start = datetime.fromisoformat((value + "-01-01")[:10]).replace(tzinfo=timezone.utc)
            if precision == "year":
                return start, start.replace(year=start.year + 1) if start.year < 9999 else END_OF_TIME
            if precision == "month":
                return start, _later(start, timedelta(days=32)).replace(day=1) if start < datetime(9999, 12, 1, tzinfo=timezone.utc) else END_OF_TIME
            if precision == "day":
                return start, _later(start, timedelta(days=1))
            raise ValueError(value)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        moment = moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return moment, _later(moment, timedelta(milliseconds=1) if "." in value else timedelta(seconds=1))
    except (ValueError, OverflowError):
        raise FhirError(400, f"{name} value {value!r} is not a date or instant in range", "value", name) from None


def _date_range(name: str, value: str) -> DateRange:
    """A prefixed date (``ge2024-01-01``) as the range of instants it admits."""
    prefix, rest = (value[:2], value[2:]) if value[:2] in PREFIXES else ("eq", value)
    start, end = _range(name, rest)
    return {
        "eq": DateRange(start, end),
        "ne": DateRange(start, end, negate=True),
        "gt": DateRange(end, None),
        "ge": DateRange(start, None),
        "lt": DateRange(None, start),
        "le": DateRange(None, end),
    }[prefix]


def _birth_filter(span: DateRange) -> Callable[[dict[str, Any]], bool]:
    def admits(resource: dict[str, Any]) -> bool:
        born = resource.get("birthDate")
        instant = sortable_instant(born) if isinstance(born, str) else None
        return instant is not None and span.admits(datetime.fromisoformat(instant))

    return admits


def _name_filter(param: str, wanted: list[str]) -> Callable[[dict[str, Any]], bool]:
    """Checks names longer than the indexed prefixes (the index narrowed to their first characters)."""

    def admits(resource: dict[str, Any]) -> bool:
        names = [n for n in resource.get("name", []) if isinstance(n, dict)]
        parts = [g for n in names for g in n.get("given", [])] if param != "family" else []
        parts += [n["family"] for n in names if n.get("family") and param != "given"]
        words = {w for p in parts for w in (fold_name(p), *fold_name(p).replace("-", " ").split())}
        return any(w.startswith(v) for w in words for v in wanted)

    return admits


def _int(name: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise FhirError(400, f"{name} must be a whole number from {low} to {high}", "value", name)
    return int(value)


def encode_cursor(cursor: Cursor) -> str:
    """The opaque ``_cursor`` of a next link."""
    return base64.urlsafe_b64encode(orjson.dumps(list(cursor))).decode().rstrip("=")


def _cursor(value: str) -> Cursor:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError):
        decoded = None
    if not (isinstance(decoded, list) and len(decoded) == 3 and all(isinstance(v, str) for v in decoded)):
        raise FhirError(400, "_cursor is not one this server gave in a next link", "value", "_cursor")
    return Cursor(*decoded)


def _include(resource_type: str, name: str, value: str) -> Include | None:
    """An ``_include`` (from this type) or ``_revinclude`` (to it) that the types really have."""
    source, _, rest = value.partition(":")
    param, _, target = rest.partition(":")
    if name == "_include" and value == "*":
        return Include(resource_type, "*")
    if source not in SUPPORTED_TYPES or search_param_types(source).get(param) != "reference":
        return None
    if name == "_include" and source != resource_type:
        return None
    if name == "_revinclude" and target and target != resource_type:
        return None
    return Include(source, param, target or None)


class _Parser:
    def __init__(self, resource_type: str, strict: bool) -> None:
        self.resource_type, self.strict = resource_type, strict
        self.types = search_param_types(resource_type)
        self.query = SearchQuery()

    def ignore(self, name: str, why: str) -> None:
        if self.strict:
            raise FhirError(400, f"search parameter {name}: {why} (Prefer: handling=strict)", "not-supported", name)

    def control(self, name: str, value: str) -> bool:
        """Apply a control parameter (``_count``, ``_sort`` ...); False when it is none."""
        query = self.query
        if name == "_count":
            query.count = _int("_count", value, 0, MAX_COUNT)
        elif name == "_offset":
            query.offset = _int("_offset", value, 0, 10**9)
        elif name == "_cursor":
            query.after = _cursor(value)
        elif name == "_id":
            query.ids = value.split(",")
        elif name == "_lastUpdated":
            query.updated.append(_date_range(name, value))
        elif name == "_sort":
            key = value.removeprefix("-")
            sortable = key == "_lastUpdated" or (self.types.get(key) == "date" and key != "birthdate")  # birth dates are blind
            if not sortable or "," in value:
                self.ignore(name, f"cannot sort {self.resource_type} by {value!r} (by _lastUpdated or a date it has)")
                return True
            query.sort = Sort(None if key == "_lastUpdated" else key, descending=value.startswith("-"))
        elif name == "_summary":
            if value not in ("count", "false"):
                self.ignore(name, f"_summary={value} is not supported (count, false)")
                return True
            query.summary_count = value == "count"
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                self.ignore(name, f"_total={value} is not one of none, estimate, accurate")
                return True
            query.total = value != "none"
        elif name == "_elements":
            query.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif name in ("_include", "_revinclude"):
            include = _include(self.resource_type, name, value)
            if include is None:
                self.ignore(name, f"{value!r} is not a reference search parameter that applies here")
                return True
            (query.includes if name == "_include" else query.revincludes).append(include)
        else:
            return False
        query.applied.append((name, value))
        return True

    def param(self, name: str, value: str) -> None:
        """Apply a search parameter of the type, with an optional ``:not`` on tokens."""
        base, _, modifier = name.partition(":")
        kind = self.types.get(base)
        if kind is None or (modifier and not (modifier == "not" and kind == "token")):
            self.ignore(name, f"not supported for {self.resource_type}")
            return
        values = value.split(",")
        query = self.query
        if modifier == "not":
            query.excluded.append((base, values))
        elif kind == "reference":
            refs = [_reference(base, v) for v in values]
            if base == "patient" and len(refs) == 1:
                query.patient = refs[0]
            else:
                query.criteria.append((base, refs))
        elif base in NAME_PARAMS:
            wanted = [fold_name(v) for v in values]
            query.criteria.append((base, [w[:MAX_NAME_PREFIX] for w in wanted]))
            if any(len(w) > MAX_NAME_PREFIX for w in wanted):
                query.filters.append(_name_filter(base, wanted))
        elif base == "birthdate":
            if len(values) == 1 and values[0][:2] in PREFIXES[1:]:
                query.filters.append(_birth_filter(_date_range(base, values[0])))
            else:
                query.criteria.append((base, [v.removeprefix("eq") for v in values]))
        elif kind == "date":
            query.token_ranges.append((base, _date_range(base, value)))
        else:
            query.criteria.append((base, values))
        query.applied.append((name, value))


def parse_search(resource_type: str, params: list[tuple[str, str]], strict: bool = False) -> SearchQuery:
    """Check every parameter and build the query (see the module docstring on unknown ones)."""
    parser = _Parser(resource_type, strict)
    for name, value in params:
        if len(value) > MAX_VALUE_LENGTH:
            raise FhirError(400, f"search parameter {name} is longer than {MAX_VALUE_LENGTH} characters", "too-long", name)
        if name == "_format":
            continue
        if not value:
            parser.ignore(name, "has no value")
        elif not parser.control(name, value):
            parser.param(name, value)
    query = parser.query
    if query.after is not None and query.sort.param is None:
        try:
            datetime.fromisoformat(query.after.key)
        except ValueError:
            raise FhirError(400, "_cursor does not belong to this search's order", "value", "_cursor") from None
    return query


@lru_cache(maxsize=None)
def mandatory_elements(resource_type: str) -> frozenset[str]:
    """The elements a resource of this type must have (kept by ``_elements``)."""
    fields = get_fhir_model_class(resource_type).model_fields.items()
    return frozenset(f.alias or n for n, f in fields if f.is_required() or (f.json_schema_extra or {}).get("element_required"))


def subsetted(resource: dict[str, Any], elements: list[str], mandatory: frozenset[str]) -> dict[str, Any]:
    """Only the elements asked for, plus id, meta, resourceType and the mandatory ones,
    tagged SUBSETTED as FHIR asks of a partial resource."""
    keep = {"resourceType", "id", "meta", *elements, *mandatory}
    shown = {k: v for k, v in resource.items() if k in keep}
    meta = dict(shown.get("meta", {}))
    meta["tag"] = [*(t for t in meta.get("tag", []) if t != SUBSETTED), SUBSETTED]  # once, if a skeleton already has it
    shown["meta"] = meta
    return shown


def include_targets(resource: dict[str, Any], param: str, target: str | None) -> list[str]:
    """The literal ``Type/id`` references a resource holds under a reference search parameter."""
    found = []
    for element in REFERENCE_PARAMS.get(param, ()):
        value = resource.get(element)
        for ref in value if isinstance(value, list) else [value]:
            reference = ref.get("reference", "") if isinstance(ref, dict) else ""
            kind, _, id_ = reference.partition("/")
            if id_ and "/" not in id_ and "?" not in reference and kind in SUPPORTED_TYPES and target in (None, kind):
                found.append(reference)
    return found


def matches(repo: Repository, resource_type: str, query: SearchQuery, custodians: list[str] | None) -> Iterator[tuple[Cursor, Stored]]:
    """The stored resources a query matches, in its order, not yet through the access policy."""
    rows = repo.search(
        resource_type,
        query.criteria,
        excluded=query.excluded,
        token_ranges=query.token_ranges,
        ids=query.ids,
        updated=query.updated,
        patient=query.patient,
        custodians=custodians,
        sort=query.sort,
        after=query.after,
        offset=query.offset,
    )
    return ((c, s) for c, s in rows if all(admits(s.resource) for admits in query.filters))
