"""Importing ``conf/`` into the database: the partner directory, clients, agreements.

The database is the source of truth once imported; importing the same files
again changes nothing, and a changed entry becomes a new version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consent.agreements import parse_agreement
from gateway.audit.chain import append, audit_event
from gateway.auth.clients import register_client
from gateway.conf import Conf, ConfError
from gateway.delivery.outbox import sync_subscriptions
from gateway.fhir.access import DIRECTORY_CUSTODIAN
from gateway.runtime import Gateway
from gateway.store.models import AgreementRow, ConfDocumentRow
from gateway.store.repository import Repository, now_utc

CONF_FILES = ("partners.yaml", "agreements.yaml", "pathway.yaml")


def store_if_changed(repo: Repository, resource: dict[str, Any], custodian: str) -> bool:
    """Store ``resource`` as a new version unless it equals the current one; True if written."""
    if repo.matches_current(resource):
        return False
    repo.update(resource, custodian)
    return True


def _import_document(session: Session, name: str, raw: bytes) -> bool:
    digest = hashlib.sha256(raw).hexdigest()
    latest = session.scalars(
        select(ConfDocumentRow).where(ConfDocumentRow.name == name).order_by(ConfDocumentRow.version.desc())
    ).first()
    if latest is not None and latest.sha256 == digest:
        return False
    version = (latest.version + 1) if latest else 1
    session.add(ConfDocumentRow(name=name, version=version, sha256=digest, body=raw.decode(), loaded=now_utc()))
    return True


def _import_agreement(session: Session, agreement: dict[str, Any]) -> bool:
    body = orjson.dumps(agreement, option=orjson.OPT_SORT_KEYS).decode()
    row = session.get(AgreementRow, (agreement["id"], agreement["version"]))
    if row is not None:
        # Compared as agreements, so a body stored before an optional field existed still matches.
        if parse_agreement(orjson.loads(row.body)) != parse_agreement(agreement):
            raise ConfError(
                [
                    f"agreements.yaml: agreement {agreement['id']} version {agreement['version']} is already loaded "
                    "with different content; give the changed agreement a new version"
                ]
            )
        return False
    session.add(AgreementRow(id=agreement["id"], version=agreement["version"], status=agreement["status"], body=body, loaded=now_utc()))
    return True


def current_agreements(session: Session) -> list[dict[str, Any]]:
    """The highest version of every agreement, as DESIGN §6.1 dicts."""
    newest = (
        select(AgreementRow.id, func.max(AgreementRow.version).label("version")).group_by(AgreementRow.id).subquery()
    )
    rows = session.scalars(
        select(AgreementRow).join(newest, (AgreementRow.id == newest.c.id) & (AgreementRow.version == newest.c.version))
    )
    return [orjson.loads(r.body) for r in rows]


def _import_agreements(session: Session, conf: Conf) -> list[str | None]:
    """Import each agreement: None when a version was written, "" when it was already there, or
    what was done instead for an agreement the console has taken over (saved as a draft)."""
    from gateway.sharing.agreement_lifecycle import LifecycleRefused, from_conf  # the lifecycle reads conf documents

    notes: list[str | None] = []
    for agreement in conf.agreements:
        dumped = agreement.model_dump(mode="json")
        try:
            note = from_conf(session, dumped)
        except LifecycleRefused as refusal:
            raise ConfError([str(refusal)]) from None
        notes.append(note if note is not None else (None if _import_agreement(session, dumped) else ""))
    return notes


def import_conf(gateway: Gateway, conf: Conf, conf_dir: Path) -> dict[str, Any]:
    """Import a validated configuration in one transaction; returns what changed, and any
    agreement saved as a draft instead of loaded over a version made in the console."""
    changed: dict[str, Any] = {"organizations": 0, "practitioners": 0, "clients": 0, "agreements": 0, "documents": 0}
    subscriptions: list[tuple[str, str, list[str]]] = []
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        for organization in conf.organizations:
            changed["organizations"] += store_if_changed(repo, organization.to_fhir(), DIRECTORY_CUSTODIAN)
            primary = organization.primary_identifier()
            org_ref = f"{primary.system}|{primary.value}"
            if organization.webhook is not None:
                subscriptions.append((org_ref, organization.webhook.url, list(organization.subscriptions)))
            for client in organization.clients:
                register_client(
                    session,
                    client.id,
                    org_ref,
                    list(client.scopes),
                    kind=client.kind,
                    roles=list(client.roles),
                    public_keys=list((client.jwks or {}).get("keys", [])),
                )
                changed["clients"] += 1
        sync_subscriptions(session, subscriptions)
        for person in conf.people:
            for resource in person.to_fhir():
                changed["practitioners"] += store_if_changed(repo, resource, DIRECTORY_CUSTODIAN)
        notes = _import_agreements(session, conf)
        changed["agreements"] = len([n for n in notes if n is None])
        for name in CONF_FILES:
            path = conf_dir / name
            if path.exists():
                changed["documents"] += _import_document(session, name, path.read_bytes())
        event = audit_event("operation", None, detail=f"configuration imported from {conf_dir}: {changed}")
        append(session, event)
    drafts = [n for n in notes if n]
    return changed | ({"agreement_drafts": drafts} if drafts else {})


def conf_document(session: Session, name: str) -> dict[str, Any]:
    """The newest imported version of a configuration document (e.g. ``pathway.yaml``), parsed."""
    row = session.scalars(
        select(ConfDocumentRow).where(ConfDocumentRow.name == name).order_by(ConfDocumentRow.version.desc())
    ).first()
    if row is None:
        raise LookupError(f"{name} has not been imported; run `pathway conf load`")
    return yaml.safe_load(row.body) or {}


def consent_recorders(session: Session) -> frozenset[str]:
    """Every identifier ("system|value") of the organisations ``conf/`` authorises to record a
    person's consent grants (``records_consent``); refusals may be recorded by any partner."""
    try:
        partners = conf_document(session, "partners.yaml")
    except LookupError:
        return frozenset()
    return frozenset(
        f"{i['system']}|{i['value']}"
        for organization in partners.get("organizations", [])
        if organization.get("records_consent") is True
        for i in organization.get("identifiers", [])
    )
