"""Source adapters: GP (EMIS-style), social-work and third-sector records into FHIR R4.

``ingest(source, data, ids=...)`` reads one extract pushed by the organisation
``ids.scope`` and returns an :class:`IngestResult`: the resources to store (ids
from the :class:`IdScheme`), deletions, quarantined records with their reasons,
possible matches for review, and the DESIGN §5.4 report.
``stream`` yields per-record results; ``ingest(..., on_batch=...)`` hands accepted
records over in batches and keeps only counts, for extracts too large to hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adapters import socialwork, thirdsector
from adapters.common import IdScheme, IngestError, Mapped, Quarantined, read_bytes
from adapters.identity import MemoryPatientIndex, PatientIndex

Quarantine = Quarantined  # the name the gateway's brief uses

SOURCES = ("emis", "socialwork", "thirdsector")
PROVENANCE_TARGET_LIMIT = 1000
BATCH_SIZE = 500

__all__ = ["SOURCES", "IdScheme", "IngestError", "IngestResult", "Mapped", "MemoryPatientIndex", "PatientIndex", "Quarantine", "Quarantined", "ingest", "stream"]


def stream(
    source: str, data: bytes | Path, *, ids: IdScheme, index: PatientIndex | None = None, foreign: Mapping[str, str] | None = None
) -> Iterator[Mapped | Quarantined]:
    """Mapped or quarantined records, one source record at a time (constant memory for EMIS).

    ``foreign``: source organisation ids (EMIS OrganisationGuid) that belong to other
    organisations than ``ids.scope``, with their names; an extract carrying one is refused.
    """
    if source == "socialwork":
        return socialwork.read(read_bytes(data), ids, index)
    if source == "thirdsector":
        name = data.name if isinstance(data, Path) else "thirdsector.csv"
        return thirdsector.read(read_bytes(data), ids, index, name)
    if source == "emis":
        from adapters import emis

        return emis.read(data, ids, index, foreign)
    raise IngestError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")


@dataclass
class IngestResult:
    """Everything one extract produced, and its report.

    Counts are kept as records arrive, so the report is right whether the
    records themselves are kept (``records``) or handed on in batches.
    """

    source: str
    agent: dict[str, str]
    received: datetime
    records: list[Mapped] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    match_review: list[dict[str, Any]] = field(default_factory=list)
    unknown_organisations: set[str] = field(default_factory=set)
    known_organisations: set[str] | None = None
    keep_records: bool = True
    accepted: int = 0
    resource_counts: dict[str, int] = field(default_factory=dict)
    persons: set[str] = field(default_factory=set)
    deletion_count: int = 0

    @property
    def resources(self) -> list[dict[str, Any]]:
        return [r for record in self.records for r in record.resources]

    @property
    def deletions(self) -> list[tuple[str, str]]:
        return [d for record in self.records for d in record.deletions]

    @property
    def accepted_locations(self) -> list[str]:
        return [record.location for record in self.records]

    def add(self, item: Mapped | Quarantined) -> None:
        if isinstance(item, Quarantined):
            self.quarantined.append(item)
            review = (item.record or {}).get("review")
            if review:
                self.match_review.append(review)
            return
        self._count(item, 1)
        self.match_review += item.reviews
        if self.known_organisations is not None:
            for resource in item.resources:
                provider = (resource.get("serviceProvider") or {}).get("identifier", {}).get("value")
                if provider and provider not in self.known_organisations:
                    self.unknown_organisations.add(provider)
        if self.keep_records:
            self.records.append(item)

    def _count(self, record: Mapped, sign: int) -> None:
        self.accepted += sign
        self.deletion_count += sign * len(record.deletions)
        for resource in record.resources:
            kind = resource["resourceType"]
            self.resource_counts[kind] = self.resource_counts.get(kind, 0) + sign
        if sign > 0:
            self.persons |= record.persons

    def refuse(self, record: Mapped, reason: str) -> None:
        """Move an accepted record to quarantine (the gateway refused what it became)."""
        if self.keep_records:
            self.records.remove(record)
        self._count(record, -1)
        self.quarantined.append(Quarantined(record.location, reason))

    def report(self) -> dict[str, Any]:
        """The ingest report of DESIGN §5.4 (plus the deletions asked for, unknown organisations and match review)."""
        return {
            "source": self.source,
            "records": self.accepted + len(self.quarantined),
            "accepted": self.accepted,
            "quarantined": [{"location": q.location, "reason": q.reason} for q in self.quarantined],
            "resources": {kind: n for kind, n in self.resource_counts.items() if n},
            "persons": len(self.persons),
            "deletions": self.deletion_count,
            "unknown_organisations": sorted(self.unknown_organisations),
            "match_review": len(self.match_review),
        }

    def provenance(self, written: list[str]) -> dict[str, Any]:
        """One Provenance for the ingest: the pushing organisation, the extract, what it wrote.

        ``written`` are the references the ingest wrote (or deleted). Bounded for any extract
        size: the first PROVENANCE_TARGET_LIMIT are listed, Patients first (a Patient is
        shared by every source, so each change to one must be traceable), and the source
        entity states how many there were.
        """
        ordered = sorted(written, key=lambda reference: not reference.startswith("Patient/"))
        return {
            "resourceType": "Provenance",
            "target": [{"reference": r} for r in ordered[:PROVENANCE_TARGET_LIMIT]] or [{"display": "no resources"}],
            "recorded": self.received.isoformat(),
            "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]},
            "agent": [
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
                    "who": {"identifier": self.agent},
                }
            ],
            "entity": [
                {"role": "source", "what": {"display": f"{self.source} extract: {self.accepted} records accepted, {len(written)} resources written (targets listed up to {PROVENANCE_TARGET_LIMIT}, Patients first)"}}
            ],
        }


def ingest(
    source: str,
    data: bytes | Path,
    *,
    ids: IdScheme,
    index: PatientIndex | None = None,
    foreign: Mapping[str, str] | None = None,
    known_organisations: set[str] | None = None,
    received: datetime | None = None,
    on_batch: Callable[[list[Mapped]], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> IngestResult:
    """Read a whole extract (raises IngestError when it cannot be read at all).

    With ``on_batch`` the accepted records are handed over ``batch_size`` at a time,
    in store order, and not kept: memory stays flat however long the extract is.
    """
    result = IngestResult(source, ids.organisation, received or datetime.now(timezone.utc), known_organisations=known_organisations, keep_records=on_batch is None)
    batch: list[Mapped] = []
    for item in stream(source, data, ids=ids, index=index, foreign=foreign):
        result.add(item)
        if on_batch is not None and isinstance(item, Mapped):
            batch.append(item)
            if len(batch) >= batch_size:
                on_batch(batch)
                batch = []
    if on_batch is not None and batch:
        on_batch(batch)
    return result
