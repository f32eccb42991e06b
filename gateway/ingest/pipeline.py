"""Storing what the adapters produce: resources, deletions, provenance, quarantine.

The adapters read and map; this module keeps the result. Resources go through
the FHIR service in batches (one transaction each: same labels, hooks and
audit as the API — a social-work referral opens the pathway), and a resource
equal to its current version is not written again, so re-ingesting an extract
changes nothing. A person's Patient is shared by every source (its id comes
from the CHI), so an incoming Patient is merged with the stored one and keeps
the identifiers of every source. Quarantined records and possible matches are
kept, encrypted, for correction and review; a later ingest that accepts a
record at the same location resolves its quarantine entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.orm import Session

import adapters
from adapters import IngestResult, Mapped
from gateway.auth.tokens import Principal
from gateway.directory import conf_document
from gateway.fhir.access import INTERNAL, Caller
from gateway.fhir.outcomes import FhirError
from gateway.fhir.service import FhirService
from gateway.runtime import Gateway
from gateway.store.indexing import demographic_keys
from gateway.store.models import MatchReviewRow, QuarantineRow
from gateway.store.repository import Repository, now_utc
from mappings.identifiers import ODS_SYSTEM, PARTNER_SYSTEM

BATCH = 500


class DatabasePatientIndex:
    """The adapters' PatientIndex over the store's blind identifier and demographic indexes."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _ids(self, param: str, value: str) -> list[str]:
        with self.gateway.reading() as session:
            return [s.id for _, s in self.gateway.repository(session).search("Patient", [(param, [value])], batch=10)]

    def by_identifier(self, system: str, value: str) -> str | None:
        found = self._ids("identifier", f"{system}|{value}")
        return found[0] if found else None

    def by_demographics(self, given: str, family: str, birth_date: str, postcode: str | None = None) -> list[str]:
        return self._ids("_person", demographic_keys(given, family, birth_date)[0])

    def near(self, family: str, birth_date: str) -> list[str]:
        return self._ids("_family-born", demographic_keys("", family, birth_date)[1])


def pipeline_caller(client_id: str, organization: str) -> Caller:
    """The ingest pipeline acting for the pushing organisation (already authorised)."""
    return Caller(Principal(client_id, organization, frozenset(), frozenset(), INTERNAL, 0), "HOPERAT")


def _batches(items: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def merged_patient(repo: Repository, incoming: dict[str, Any]) -> dict[str, Any]:
    """An incoming Patient laid over the stored one, keeping every source's identifiers and labels."""
    current = repo.current("Patient", incoming["id"])
    if current is None or current.deleted:
        return incoming
    stored = current.resource
    merged = {**{k: v for k, v in stored.items() if k != "meta"}, **incoming}
    identifiers = {(i.get("system"), i.get("value")): i for i in stored.get("identifier", []) + incoming.get("identifier", [])}
    merged["identifier"] = list(identifiers.values())
    meta = dict(incoming.get("meta", {}))
    for key in ("security", "tag"):
        labels = {(l.get("system"), l.get("code")): l for l in stored.get("meta", {}).get(key, []) + meta.get(key, [])}
        if labels:
            meta[key] = list(labels.values())
    merged["meta"] = meta
    return merged


def operator_organization(gateway: Gateway) -> str:
    """The organisation command-line ingest acts for by default: the rehab team of pathway.yaml."""
    with gateway.reading() as session:
        team = conf_document(session, "pathway.yaml")["rehab_team"]
        organization = gateway.repository(session).current("Organization", team)
    if organization is None:
        raise LookupError(f"the rehab team {team!r} is not in the directory; run `pathway conf load`")
    pairs = {i["system"]: i["value"] for i in organization.resource.get("identifier", [])}
    system = ODS_SYSTEM if ODS_SYSTEM in pairs else PARTNER_SYSTEM
    return f"{system}|{pairs[system]}"


def _known_partners(gateway: Gateway) -> set[str]:
    with gateway.reading() as session:
        organizations = gateway.repository(session).search("Organization", batch=200)
        return {i["value"] for _, o in organizations for i in o.resource.get("identifier", []) if i.get("system") == PARTNER_SYSTEM}


def run_ingest(
    gateway: Gateway, fhir: FhirService, source: str, data: bytes | Path, *, caller: Caller, dry_run: bool = False
) -> dict[str, Any]:
    """Map an extract and (unless a dry run) store it; returns the ingest report.

    Raises ``adapters.IngestError`` when the extract cannot be read at all.
    """
    result = adapters.ingest(
        source,
        data,
        agent=caller.principal.org_identifier,
        index=DatabasePatientIndex(gateway),
        known_organisations=_known_partners(gateway),
    )
    if dry_run:
        return {**result.report(), "dry_run": True}
    written = sum(_store(gateway, fhir, caller, result, batch) for batch in _batches(list(result.records), BATCH // 10))
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        for resource_type, resource_id in result.deletions:
            current = repo.current(resource_type, resource_id)
            if current is not None and not current.deleted:
                repo.delete(resource_type, resource_id)
        _keep(session, gateway, result, caller.organization)
    if written:
        fhir.store_all(caller, [result.provenance()], interaction="ingest")
    return {**result.report(), "dry_run": False, "written": written}


def _store(gateway: Gateway, fhir: FhirService, caller: Caller, result: IngestResult, records: list[Mapped]) -> int:
    """Store a batch of records in one transaction; if the gateway refuses any, store the
    batch record by record and quarantine the refused ones with the gateway's reason."""
    try:
        return len(fhir.store_all(caller, _merged(gateway, [r for m in records for r in m.resources]), interaction="ingest", skip_unchanged=True))
    except FhirError:
        if len(records) == 1:
            raise
    written = 0
    for record in records:
        try:
            written += _store(gateway, fhir, caller, result, [record])
        except FhirError as refusal:
            result.refuse(record, f"refused by the gateway: {refusal.issues[0]['diagnostics']}")
    return written


def _merged(gateway: Gateway, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with gateway.reading() as session:
        repo = gateway.repository(session)
        return [merged_patient(repo, r) if r["resourceType"] == "Patient" else r for r in resources]


def _keep(session: Session, gateway: Gateway, result: IngestResult, agent: str) -> None:
    """Quarantine what was refused, queue match reviews, resolve what now loaded."""
    received = now_utc()
    for entry in result.quarantined:
        key_id, sealed = (None, None)
        if entry.record is not None:
            key_id, sealed = gateway.keyring.encrypt(orjson.dumps(entry.record), f"quarantine/{result.source}".encode())
        session.add(
            QuarantineRow(
                source=result.source, agent=agent, location=entry.location[:400], reason=entry.reason,
                record=sealed, key_id=key_id, received=received,
            )
        )
    for candidate in result.match_review:
        key_id, sealed = gateway.keyring.encrypt(orjson.dumps(candidate), f"match-review/{result.source}".encode())
        session.add(MatchReviewRow(source=result.source, agent=agent, detail=sealed, key_id=key_id, received=received))
    if result.accepted_locations:
        session.execute(
            update(QuarantineRow)
            .where(
                QuarantineRow.source == result.source,
                QuarantineRow.agent == agent,
                QuarantineRow.status == "open",
                QuarantineRow.location.in_(result.accepted_locations),
            )
            .values(status="resolved", resolved=received)
        )


def open_quarantine(session: Session, agent: str | None = None) -> list[dict[str, Any]]:
    """Open quarantine entries (for one pushing organisation, or all), oldest first."""
    query = select(QuarantineRow).where(QuarantineRow.status == "open").order_by(QuarantineRow.id)
    if agent is not None:
        query = query.where(QuarantineRow.agent == agent)
    return [
        {"id": row.id, "source": row.source, "organization": row.agent, "location": row.location, "reason": row.reason, "received": row.received.isoformat()}
        for row in session.scalars(query)
    ]

