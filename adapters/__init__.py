"""Source adapters: GP (EMIS-style), social-work and third-sector records into FHIR R4.

``ingest(source, data, agent=...)`` reads one extract and returns an
:class:`IngestResult`: the resources to store, deletions, quarantined records
with their reasons, possible matches for review, and the DESIGN §5.4 report.
``stream`` yields per-record results for extracts too large to hold at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adapters import socialwork, thirdsector
from adapters.common import IngestError, Mapped, Quarantined, read_bytes
from adapters.identity import MemoryPatientIndex, PatientIndex

SOURCES = ("emis", "socialwork", "thirdsector")
PROVENANCE_TARGET_LIMIT = 1000

__all__ = ["SOURCES", "IngestError", "IngestResult", "Mapped", "MemoryPatientIndex", "PatientIndex", "Quarantined", "ingest", "stream"]


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
    """Everything one extract produced, and its report."""

    source: str
    agent: dict[str, str]
    received: datetime
    records: list[Mapped] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    match_review: list[dict[str, Any]] = field(default_factory=list)
    unknown_organisations: set[str] = field(default_factory=set)

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
        self.records.append(item)

    def refuse(self, record: Mapped, reason: str) -> None:
        """Move an accepted record to quarantine (the gateway refused what it became)."""
        self.records.remove(record)
        self.quarantined.append(Quarantined(record.location, reason))

    def report(self) -> dict[str, Any]:
        """The ingest report of DESIGN §5.4 (plus unknown organisations and match review)."""
        counts: dict[str, int] = {}
        for resource in self.resources:
            counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
        return {
            "source": self.source,
            "records": len(self.records) + len(self.quarantined),
            "accepted": len(self.records),
            "quarantined": [{"location": q.location, "reason": q.reason} for q in self.quarantined],
            "resources": counts,
            "persons": len({p for record in self.records for p in record.persons}),
            "deleted": len(self.deletions),
            "unknown_organisations": sorted(self.unknown_organisations),
            "match_review": len(self.match_review),
        }

    def provenance(self) -> dict[str, Any]:
        """One Provenance for the ingest: the pushing organisation, the extract, what it produced."""
        targets = [{"reference": f"{r['resourceType']}/{r['id']}"} for r in self.resources[:PROVENANCE_TARGET_LIMIT]]
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
                {"role": "source", "what": {"display": f"{self.source} extract: {len(self.records)} records accepted ({len(self.resources)} resources; targets listed up to {PROVENANCE_TARGET_LIMIT})"}}
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
) -> IngestResult:
    """Read a whole extract (raises IngestError when it cannot be read at all)."""
    result = IngestResult(source, agent, received or datetime.now(timezone.utc))
    for item in stream(source, data, index=index):
        result.add(item)
    if known_organisations is not None:
        for resource in result.resources:
            provider = (resource.get("serviceProvider") or {}).get("identifier", {}).get("value")
            if provider and provider not in known_organisations:
                result.unknown_organisations.add(provider)
    return result
