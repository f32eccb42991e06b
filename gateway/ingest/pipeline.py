"""Storing what the adapters produce: resources, deletions, provenance, quarantine.

The adapters read and map; this module keeps the result, with the authority of the
organisation that pushed the extract and nothing more: its records are held by it, every
write and deletion goes through the FHIR service under the normal access policy (same
labels, hooks, refusals and audit as the API — a social-work referral opens the pathway),
and the organisation ids written inside an extract never decide whose records are touched.
Resource ids are keyed per installation (:func:`id_scheme`) and scoped to the pushing
organisation, except a person's Patient id, which comes from their CHI. A Patient is
shared by every source: an incoming one is merged with the stored one; its holder's
demographics win, another organisation only adds identifiers and labels. A resource equal
to its current version is not written again, so re-ingesting an extract changes nothing.
Quarantined records and possible matches are kept, encrypted, for correction and review;
a later ingest that accepts a record at the same location resolves its quarantine entry.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.orm import Session

import adapters
from adapters import IdScheme, IngestResult, Mapped
from adapters.common import ForeignRecords
from adapters.emis.extract import guid
from gateway.audit.chain import Actor, append, audit_event
from gateway.auth.tokens import Principal
from gateway.directory import conf_document
from gateway.fhir.access import DIRECTORY_CUSTODIAN, Caller
from gateway.fhir.outcomes import FhirError
from gateway.fhir.service import FhirService
from gateway.pathway.records import directory_key
from gateway.runtime import Gateway
from gateway.store.crypto import Keyring, keyring_of
from gateway.store.indexing import demographic_keys
from gateway.store.models import MatchReviewRow, QuarantineRow
from gateway.store.repository import Stored, now_utc
from mappings.identifiers import source_system

BATCH = 500
EMIS_ORGANISATION_SYSTEM = source_system("emis", "organisation-guid")
COMMAND_LINE = "cli:"  # client id prefix of a person running `pathway ingest`


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


def id_scheme(gateway: Gateway, organization: str) -> IdScheme:
    """How this installation names what ``organization`` ("system|value") pushes: the one
    place the id key is derived (from the data keyring's index key, never stored apart)."""
    key = hmac.new(gateway.keyring.index_key, b"pathway resource ids", hashlib.sha256).digest()
    return IdScheme(key, organization)


def pipeline_caller(client_id: str, organization: str) -> Caller:
    """The ingest pipeline acting for the pushing organisation, as an ordinary system caller:
    the access policy decides what it may write and delete."""
    return Caller(Principal(client_id, organization, frozenset(), frozenset(), "system", 0), "HOPERAT")


def command_line_caller(organization: str) -> Caller:
    """``pathway ingest`` run by the logged-in user for ``organization``."""
    return pipeline_caller(f"{COMMAND_LINE}{getpass.getuser()}", organization)


def _batches(items: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def merged_patient(previous: Stored | None, incoming: dict[str, Any], organization: str) -> dict[str, Any]:
    """An incoming Patient merged with the stored one, keeping every source's identifiers and labels.

    The organisation holding the Patient updates its demographics (what it sends wins);
    any other organisation only adds identifiers and labels to what is stored.
    """
    if previous is None or previous.deleted:
        return incoming
    stored = previous.resource
    holder = previous.custodian == organization
    kept, sent = _by_identifier(stored), _by_identifier(incoming)
    if holder:
        merged = {**{k: v for k, v in stored.items() if k != "meta"}, **incoming}
        identifiers = {**kept, **sent}
        meta = dict(incoming.get("meta", {}))
    else:
        merged = dict(stored)
        identifiers = {**kept, **{k: v for k, v in sent.items() if k not in kept}}
        meta = {k: v for k, v in stored.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    merged["identifier"] = list(identifiers.values())
    for key in ("security", "tag"):
        labels = {(l.get("system"), l.get("code")): l for l in stored.get("meta", {}).get(key, []) + incoming.get("meta", {}).get(key, [])}
        if labels:
            meta[key] = list(labels.values())
    merged["meta"] = meta
    return merged


def _by_identifier(patient: dict[str, Any]) -> dict[tuple[str | None, str | None], dict[str, Any]]:
    return {(i.get("system"), i.get("value")): i for i in patient.get("identifier", [])}


def operator_organization(gateway: Gateway) -> str:
    """The organisation command-line ingest acts for by default: the rehab team of pathway.yaml."""
    with gateway.reading() as session:
        team = conf_document(session, "pathway.yaml")["rehab_team"]
        key = directory_key(gateway.repository(session), team)
    if key is None:
        raise LookupError(f"the rehab team {team!r} is not in the directory; run `pathway conf load`")
    return key


def _known_organisations(gateway: Gateway) -> set[str]:
    """Identifier values (partner ids, ODS codes...) of the organisations in the directory."""
    with gateway.reading() as session:
        organizations = gateway.repository(session).search("Organization", custodians=[DIRECTORY_CUSTODIAN], batch=200)
        return {i["value"] for _, o in organizations for i in o.resource.get("identifier", []) if i.get("value")}


def foreign_organisations(gateway: Gateway, organization: str) -> dict[str, str]:
    """EMIS organisations that the directory (``conf/partners.yaml``) gives to another
    organisation than ``organization``: OrganisationGuid -> that organisation's name."""
    with gateway.reading() as session:
        try:
            partners = conf_document(session, "partners.yaml")
        except LookupError:
            return {}
    foreign = {}
    for entry in partners.get("organizations", []):
        identifiers = entry.get("identifiers", [])
        if organization in {f"{i.get('system')}|{i.get('value')}" for i in identifiers}:
            continue
        for identifier in identifiers:
            if identifier.get("system") == EMIS_ORGANISATION_SYSTEM:
                foreign[guid(str(identifier.get("value", "")))] = str(entry.get("name") or entry.get("id"))
    return foreign


def run_ingest(
    gateway: Gateway, fhir: FhirService, source: str, data: bytes | Path, *, caller: Caller, dry_run: bool = False
) -> dict[str, Any]:
    """Map an extract and (unless a dry run) store it as the caller's organisation; returns the ingest report.

    Raises ``adapters.IngestError`` when the extract cannot be read at all, and
    ``ForeignRecords`` (audited) when it carries another organisation's records.
    """
    try:
        result = adapters.ingest(
            source,
            data,
            ids=id_scheme(gateway, caller.organization),
            index=DatabasePatientIndex(gateway),
            foreign=foreign_organisations(gateway, caller.organization),
            known_organisations=_known_organisations(gateway),
        )
    except ForeignRecords as refusal:
        event = audit_event(
            "ingest", Actor(caller.principal.client_id, caller.organization), outcome="minor-failure", detail=f"{source} extract refused: {refusal}", purpose=caller.purpose
        )
        with gateway.transaction() as session:
            append(session, event, client_id=caller.principal.client_id)
        raise
    if dry_run:
        # Nothing is stored, but the report still tells whether the extract's people are known
        # (a CHI Pathway knows maps to no new Patient), so who checked is audited, naming no one.
        report = result.report()
        event = audit_event(
            "ingest", Actor(caller.principal.client_id, caller.organization),
            detail=f"{source} extract checked (dry run, nothing stored): {report['records']} records", purpose=caller.purpose,
        )
        with gateway.transaction() as session:
            append(session, event, client_id=caller.principal.client_id)
        return {**report, "dry_run": True}
    written = [reference for batch in _batches(list(result.records), BATCH // 10) for reference in _store(gateway, fhir, caller, result, batch)]
    deletions = _delete(gateway, fhir, caller, result)
    with gateway.transaction() as session:
        _keep(session, gateway, result, caller.organization)
    changed = written + deletions["deleted"]
    if changed:
        fhir.store_all(caller, [result.provenance(changed)], interaction="ingest")
    return {
        **result.report(),
        "dry_run": False,
        "written": len(written),
        "deleted": len(deletions["deleted"]),
        "deletions_unmatched": deletions["unmatched"],
        "deletions_refused": deletions["refused"],
    }


def _store(gateway: Gateway, fhir: FhirService, caller: Caller, result: IngestResult, records: list[Mapped]) -> list[str]:
    """Store a batch of records in one transaction (returns what was written); if the gateway
    refuses any, store the batch record by record and quarantine the refused ones with its reason."""
    try:
        stored = fhir.store_all(caller, _merged(gateway, caller, [r for m in records for r in m.resources]), interaction="ingest", skip_unchanged=True)
        return [s.reference for s in stored]
    except FhirError as refusal:
        if len(records) == 1:
            result.refuse(records[0], f"refused by the gateway: {refusal.issues[0]['diagnostics']}")
            return []
    return [reference for record in records for reference in _store(gateway, fhir, caller, result, [record])]


def _merged(gateway: Gateway, caller: Caller, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with gateway.reading() as session:
        repo = gateway.repository(session)
        return [merged_patient(repo.current("Patient", r["id"]), r, caller.organization) if r["resourceType"] == "Patient" else r for r in resources]


def _delete(gateway: Gateway, fhir: FhirService, caller: Caller, result: IngestResult) -> dict[str, Any]:
    """Carry out the extract's deletions through the FHIR service (its policy, its audit).

    Returns what was deleted, how many deleting records matched nothing (ids are scoped to
    the pushing organisation, so another's Deleted rows find nothing) and what was refused.
    """
    deleted: list[str] = []
    refused: list[dict[str, str]] = []
    unmatched = 0
    for record in result.records:
        matched = False
        for resource_type, resource_id in record.deletions:
            with gateway.reading() as session:
                current = gateway.repository(session).current(resource_type, resource_id)
            if current is None or current.deleted:
                continue
            matched = True
            try:
                fhir.delete(caller, resource_type, resource_id, None)
            except FhirError as refusal:
                refused.append({"location": record.location, "reference": current.reference, "reason": refusal.issues[0]["diagnostics"]})
                continue
            deleted.append(current.reference)
        unmatched += bool(record.deletions) and not matched
    return {"deleted": deleted, "unmatched": unmatched, "refused": refused}


def _keep(session: Session, gateway: Gateway, result: IngestResult, agent: str) -> None:
    """Quarantine what was refused, queue match reviews, resolve what now loaded."""
    received = now_utc()
    for entry in result.quarantined:
        # The reason can quote the record (a CHI, a birth date): it is sealed with the record,
        # and the clear column keeps it with every quoted value and number taken out.
        kept = {"reason": entry.reason, "record": entry.record}
        key_id, sealed = gateway.keyring.encrypt(orjson.dumps(kept), f"quarantine/{result.source}".encode())
        session.add(
            QuarantineRow(
                source=result.source, agent=agent, location=entry.location[:400], reason=without_values(entry.reason),
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
    keyring = keyring_of(session)
    return [
        {"id": row.id, "source": row.source, "organization": row.agent, "location": row.location, "reason": _reason(keyring, row), "received": row.received.isoformat()}
        for row in session.scalars(query)
    ]


_VALUES = re.compile(r"'[^']*'|\"[^\"]*\"|\d[\d\-/: ]{3,}\d")


def without_values(reason: str) -> str:
    """A quarantine reason with what it quotes of the record (values, dates, numbers) taken out."""
    return _VALUES.sub("…", reason)


def _reason(keyring: Keyring, row: QuarantineRow) -> str:
    """The whole reason, from the sealed copy (rows from before it was sealed keep theirs in clear)."""
    if row.record is None or row.key_id is None:
        return row.reason
    kept = orjson.loads(keyring.decrypt(row.key_id, row.record, f"quarantine/{row.source}".encode()))
    return kept["reason"] if isinstance(kept, dict) and set(kept) == {"reason", "record"} else row.reason

