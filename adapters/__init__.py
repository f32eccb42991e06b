"""Source adapters: GP (EMIS-style), social-work and third-sector records into FHIR R4.

``ingest(source, data, agent=...)`` reads one extract and returns an
:class:`IngestResult`: the resources to store, deletions, quarantined records
with their reasons, possible matches for review, and the DESIGN §5.4 report.
``stream`` yields per-record results; ``ingest(..., on_batch=...)`` hands accepted
records over in batches and keeps only counts, for extracts too large to hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adapters import socialwork, thirdsector
from adapters.common import IngestError, Mapped, Quarantined, read_bytes
from adapters.identity import MemoryPatientIndex, PatientIndex

Quarantine = Quarantined  # the name the gateway's brief uses

SOURCES = ("emis", "socialwork", "thirdsector")
PROVENANCE_TARGET_LIMIT = 1000
BATCH_SIZE = 500

__all__ = ["SOURCES", "IngestError", "IngestResult", "Mapped", "MemoryPatientIndex", "PatientIndex", "Quarantine", "Quarantined", "ingest", "stream"]


def stream(source: str, data: bytes | Path, *, index: PatientIndex | None = None) -> Iterator[Mapped | Quarantined]:
    """Mapped or quarantined records, one source record at a time (constant memory for EMIS)."""
    if source == "socialwork":
        return socialwork.read(read_bytes(data), index)
    if source == "thirdsector":
        name = data.name if isinstance(data, Path) else "thirdsector.csv"
        return thirdsector.read(read_bytes(data), index, name)
    if source == "emis":
        from adapters import emis

        return emis.read(data, index)
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
    deleted: int = 0

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
        self.deleted += sign * len(record.deletions)
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
        """The ingest report of DESIGN §5.4 (plus deletions, unknown organisations and match review)."""
        return {
            "source": self.source,
            "records": self.accepted + len(self.quarantined),
            "accepted": self.accepted,
            "quarantined": [{"location": q.location, "reason": q.reason} for q in self.quarantined],
            "resources": {kind: n for kind, n in self.resource_counts.items() if n},
            "persons": len(self.persons),
            "deleted": self.deleted,
            "unknown_organisations": sorted(self.unknown_organisations),
            "match_review": len(self.match_review),
        }

    def provenance(self) -> dict[str, Any]:
        """One Provenance for the ingest: the pushing organisation, the extract, what it produced.

        Bounded for any extract size: the first PROVENANCE_TARGET_LIMIT targets are
        listed, and the source entity states how many records and resources there were.
        """
        targets = [{"reference": f"{r['resourceType']}/{r['id']}"} for r in self.resources[:PROVENANCE_TARGET_LIMIT]]
        produced = sum(self.resource_counts.values())
        return {
            "resourceType": "Provenance",
            "target": targets or [{"display": "no resources"}],
            "recorded": self.received.isoformat(),
            "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]},
            "agent": [
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
                    "who": {"identifier": self.agent},
                }
            ],
            "entity": [
                {"role": "source", "what": {"display": f"{self.source} extract: {self.accepted} records accepted ({produced} resources; targets listed up to {PROVENANCE_TARGET_LIMIT})"}}
            ],
        }


def ingest(
    source: str,
    data: bytes | Path,
    *,
    agent: dict[str, str],
    index: PatientIndex | None = None,
    known_organisations: set[str] | None = None,
    received: datetime | None = None,
    on_batch: Callable[[list[Mapped]], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> IngestResult:
    """Read a whole extract (raises IngestError when it cannot be read at all).

    With ``on_batch`` the accepted records are handed over ``batch_size`` at a time,
    in store order, and not kept: memory stays flat however long the extract is.
    """
    result = IngestResult(source, agent, received or datetime.now(timezone.utc), known_organisations=known_organisations, keep_records=on_batch is None)
    batch: list[Mapped] = []
    for item in stream(source, data, index=index):
        result.add(item)
        if on_batch is not None and isinstance(item, Mapped):
            batch.append(item)
            if len(batch) >= batch_size:
                on_batch(batch)
                batch = []
    if on_batch is not None and batch:
        on_batch(batch)
    return result
