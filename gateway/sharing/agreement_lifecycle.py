"""An agreement's life in the console: drafted, reviewed by every party's DPO, signed by every
party's senior officer, active from its start date; suspended and resumed; lapsed when its
review is long overdue.

A proposed version lives in ``agreement_draft`` until every party has signed and its start date
has come; only then is it written to ``agreement`` as the next version, so the version in force
stays in force meanwhile (only the highest version in ``agreement`` counts, DESIGN §6.1).
Suspension, resumption and lapse are new versions too. Every step is an ``agreement_step`` row
and an audit event.

Who may act: an IG officer drafts, edits, submits and withdraws only agreements their own
organisation is a party to; a party's DPO reviews and its senior officer signs, for that party.
Any party's IG officer or DPO may suspend at once (stopping is the safe direction); resumption
needs what first activation needed from every party's DPO: their confirmation, so no party alone
restarts sharing another party's data against its suspension.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consent.agreements import Agreement, parse_agreement
from gateway.audit.chain import append, audit_event
from gateway.console.directory_names import Directory
from gateway.sharing.governance_models import AgreementDraftRow, AgreementStepRow
from gateway.sharing.notices import contacts, governance, notify
from gateway.store.crypto import keyring_of
from gateway.store.models import AgreementRow
from gateway.store.repository import Repository, now_utc

OPEN_STAGES = ("draft", "review", "signing", "signed")
LAPSED_BY = "Pathway (review overdue: lapsed)"


class LifecycleRefused(ValueError):
    """The agreement cannot make this move; the message says why."""


class NotAParty(LifecycleRefused):
    """The signed-in account's organisation is not a party to the agreement."""


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _key(party: dict[str, str]) -> str:
    return f"{party['system']}|{party['value']}"


def _step(session: Session, agreement_id: str, step: str, by: str, *, draft: str | None = None, version: int | None = None, party: str | None = None, comment: str = "") -> None:
    session.add(AgreementStepRow(agreement_id=agreement_id, draft_id=draft, version=version, step=step, party=party, by=by, at=now_utc(), comment=comment))
    detail = f"agreement {agreement_id}{f' version {version}' if version else ''}{f' draft {draft}' if draft else ''}: {step}"
    detail += f" for {party}" if party else ""
    append(session, audit_event("operation", None, detail=f"{detail} by {by}" + (f": {comment}" if comment else "")))


def checked(agreement_id: str, body: dict[str, Any], version: int = 1, status: str = "draft") -> Agreement:
    """The draft body as an agreement, or LifecycleRefused naming each faulty field."""
    try:
        return parse_agreement({**body, "id": agreement_id, "version": version, "status": status})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'agreement'}: {e['msg']}" for e in error.errors())
        raise LifecycleRefused(f"the agreement is not complete or not valid: {problems}") from None
    except ValueError as error:
        raise LifecycleRefused(str(error)) from None


def current(session: Session, agreement_id: str) -> AgreementRow | None:
    """The highest version of an agreement (the one decisions read)."""
    return session.scalars(select(AgreementRow).where(AgreementRow.id == agreement_id).order_by(AgreementRow.version.desc()).limit(1)).first()


def open_draft(session: Session, agreement_id: str) -> AgreementDraftRow | None:
    return session.scalars(select(AgreementDraftRow).where(AgreementDraftRow.agreement_id == agreement_id, AgreementDraftRow.stage.in_(OPEN_STAGES))).first()


def draft(session: Session, draft_id: str) -> AgreementDraftRow:
    row = session.get(AgreementDraftRow, draft_id, with_for_update=True)
    if row is None:
        raise LifecycleRefused(f"there is no draft {draft_id}")
    return row


def start_draft(session: Session, agreement_id: str, body: dict[str, Any], by: str, *, organization: str | None) -> AgreementDraftRow:
    """A new draft: of a new agreement, or the next version of an existing one. One open draft per
    agreement. ``organization`` is the drafting IG officer's, which must be a party (None: the
    operator's ``conf load``)."""
    body = {k: v for k, v in body.items() if k not in ("id", "version", "status", "signatories")}
    lapse = governance(session).lapse_after_days
    if "lapse_after_days" not in body and lapse is not None:
        body["lapse_after_days"] = lapse
    agreement = checked(agreement_id, body)
    if organization is not None:
        party_of(session, [f"{p.system}|{p.value}" for p in agreement.parties], organization, agreement_id, "draft it")
    existing = open_draft(session, agreement_id)
    if existing is not None:
        raise LifecycleRefused(f"agreement {agreement_id} already has an open draft ({existing.stage}); finish or withdraw it first")
    moment = now_utc()
    row = AgreementDraftRow(id=str(uuid.uuid4()), agreement_id=agreement_id, stage="draft", body=_dumps(body), created_by=by, created=moment, updated=moment)
    session.add(row)
    _step(session, agreement_id, "drafted", by, draft=row.id)
    return row


def new_version(session: Session, agreement_id: str, by: str, *, organization: str) -> AgreementDraftRow:
    """A draft of the next version, starting from the version in force (by one of its parties)."""
    held = current(session, agreement_id)
    if held is None:
        raise LifecycleRefused(f"there is no agreement {agreement_id}")
    return start_draft(session, agreement_id, orjson.loads(held.body), by, organization=organization)


def edit(session: Session, draft_id: str, body: dict[str, Any], by: str, *, organization: str) -> AgreementDraftRow:
    """Change a draft (only while it is a draft: reviewers and signatories see what they approve),
    by an IG officer of a party to it, who stays a party."""
    row = draft(session, draft_id)
    party_of(session, parties(row), organization, row.agreement_id, "change its drafts")
    if row.stage != "draft":
        raise LifecycleRefused(f"draft {draft_id} is in {row.stage}; only a draft can be changed (a DPO may return it)")
    body = {k: v for k, v in body.items() if k not in ("id", "version", "status", "signatories")}
    agreement = checked(row.agreement_id, body)
    party_of(session, [f"{p.system}|{p.value}" for p in agreement.parties], organization, row.agreement_id, "change its drafts (keep your organisation a party)")
    row.body, row.updated = _dumps(body), now_utc()
    _step(session, row.agreement_id, "edited", by, draft=row.id)
    return row


def parties(row: AgreementDraftRow) -> list[str]:
    return [_key(p) for p in orjson.loads(row.body)["parties"]]


def _round(session: Session, row: AgreementDraftRow) -> list[AgreementStepRow]:
    """The steps since the draft was last submitted for review."""
    steps = list(session.scalars(select(AgreementStepRow).where(AgreementStepRow.draft_id == row.id).order_by(AgreementStepRow.id)))
    last = max((i for i, s in enumerate(steps) if s.step == "submitted"), default=-1)
    return steps[last + 1 :]


@dataclass(frozen=True)
class Progress:
    """Who has approved and signed in the current round, and who has not yet."""

    approved: dict[str, str]
    signed: dict[str, tuple[str, date]]
    awaiting_review: list[str]
    awaiting_signature: list[str]


def progress(session: Session, row: AgreementDraftRow) -> Progress:
    steps = _round(session, row)
    approved = {s.party: s.by for s in steps if s.step == "approved" and s.party}
    signed = {s.party: (s.comment, s.at.date()) for s in steps if s.step == "signed" and s.party}
    everyone = parties(row)
    return Progress(approved, signed, [p for p in everyone if p not in approved], [p for p in everyone if p not in signed])


def submit(session: Session, draft_id: str, by: str, *, organization: str) -> AgreementDraftRow:
    row = draft(session, draft_id)
    party_of(session, parties(row), organization, row.agreement_id, "submit its drafts")
    if row.stage != "draft":
        raise LifecycleRefused(f"draft {draft_id} is in {row.stage}, not draft; it cannot be submitted")
    checked(row.agreement_id, orjson.loads(row.body))
    row.stage, row.updated = "review", now_utc()
    _step(session, row.agreement_id, "submitted", by, draft=row.id)
    return row


def identifiers_of(session: Session, organization: str) -> set[str]:
    """Every ``system|value`` the account's organisation is known by in the directory."""
    return Directory.load(Repository(session, keyring_of(session))).known_as(organization)


def party_of(session: Session, keys: list[str], organization: str, agreement_id: str, doing: str) -> str:
    """The party among ``keys`` that the account's organisation is (by any of its identifiers),
    or NotAParty."""
    held = identifiers_of(session, organization)
    party = next((p for p in keys if p in held), None)
    if party is None:
        raise NotAParty(f"your organisation ({organization}) is not a party to agreement {agreement_id}; only its parties may {doing}")
    return party


def _party_for(session: Session, row: AgreementDraftRow, organization: str) -> str:
    return party_of(session, parties(row), organization, row.agreement_id, "review or sign it")


def review(session: Session, draft_id: str, *, organization: str, approve: bool, comment: str, by: str) -> AgreementDraftRow:
    """A party's DPO approves the draft or returns it to draft with comments."""
    row = draft(session, draft_id)
    if row.stage != "review":
        raise LifecycleRefused(f"draft {draft_id} is in {row.stage}; DPOs review it only once it is submitted for review")
    party = _party_for(session, row, organization)
    if party in progress(session, row).approved:
        raise LifecycleRefused(f"{party} has already approved this draft")
    if not approve:
        if len(comment.strip()) < 10:
            raise LifecycleRefused("say what must change (at least 10 characters) when returning a draft")
        row.stage, row.updated = "draft", now_utc()
        _step(session, row.agreement_id, "returned", by, draft=row.id, party=party, comment=comment.strip())
        return row
    _step(session, row.agreement_id, "approved", by, draft=row.id, party=party, comment=comment.strip())
    session.flush()
    if not progress(session, row).awaiting_review:
        row.stage, row.updated = "signing", now_utc()
    return row


def sign(session: Session, draft_id: str, *, organization: str, name: str, by: str, today: date) -> AgreementDraftRow:
    """A party's senior officer signs; when every party has, the draft is signed and becomes
    the agreement's next version on its start date."""
    row = draft(session, draft_id)
    if row.stage != "signing":
        raise LifecycleRefused(f"draft {draft_id} is in {row.stage}; it is signed only after every party's DPO has approved it")
    party = _party_for(session, row, organization)
    if party in progress(session, row).signed:
        raise LifecycleRefused(f"{party} has already signed this draft")
    _step(session, row.agreement_id, "signed", by, draft=row.id, party=party, comment=name)
    session.flush()
    if not progress(session, row).awaiting_signature:
        row.stage, row.updated = "signed", now_utc()
        promote_due(session, today, only=row)
    return row


def withdraw(session: Session, draft_id: str, by: str, *, organization: str) -> AgreementDraftRow:
    row = draft(session, draft_id)
    party_of(session, parties(row), organization, row.agreement_id, "withdraw its drafts")
    if row.stage not in OPEN_STAGES:
        raise LifecycleRefused(f"draft {draft_id} is {row.stage}; it cannot be withdrawn")
    row.stage, row.updated = "withdrawn", now_utc()
    _step(session, row.agreement_id, "withdrawn", by, draft=row.id)
    return row


def write_version(session: Session, agreement_id: str, body: dict[str, Any], status: str, by: str) -> AgreementRow:
    """Write ``body`` as the agreement's next version with ``status``, made by ``by``."""
    newest = session.scalar(select(func.max(AgreementRow.version)).where(AgreementRow.id == agreement_id)) or 0
    agreement = checked(agreement_id, body, newest + 1, status)
    row = AgreementRow(id=agreement_id, version=newest + 1, status=status, body=_dumps(agreement.model_dump(mode="json")), loaded=now_utc(), approved_by=by[:200])
    session.add(row)
    session.flush()
    return row


def promote_due(session: Session, today: date, only: AgreementDraftRow | None = None) -> list[str]:
    """Signed drafts whose start date has come become active versions; returns their refs."""
    rows = [only] if only is not None else list(session.scalars(select(AgreementDraftRow).where(AgreementDraftRow.stage == "signed").with_for_update()))
    promoted = []
    for row in rows:
        body = orjson.loads(row.body)
        if date.fromisoformat(body["start"]) > today:
            continue
        signed = progress(session, row).signed
        signatories = [{"party": dict(zip(("system", "value"), p.split("|", 1))), "name": name, "signed": day.isoformat()} for p, (name, day) in signed.items()]
        names = "; ".join(name for name, _ in signed.values())
        version = write_version(session, row.agreement_id, body | {"signatories": signatories}, "active", f"signed by every party: {names}")
        row.stage, row.activated_version, row.updated = "active", version.version, now_utc()
        _step(session, row.agreement_id, "activated", "Pathway", draft=row.id, version=version.version)
        promoted.append(f"{row.agreement_id}@{version.version}")
    return promoted


def _held(session: Session, agreement_id: str) -> AgreementRow:
    held = session.scalars(select(AgreementRow).where(AgreementRow.id == agreement_id).order_by(AgreementRow.version.desc()).limit(1).with_for_update()).first()
    if held is None:
        raise LifecycleRefused(f"there is no agreement {agreement_id}")
    return held


def _parties_in_force(held: AgreementRow) -> list[str]:
    return [_key(p) for p in orjson.loads(held.body)["parties"]]


def set_status(session: Session, agreement_id: str, to: str, *, reason: str, by: str, party: str | None = None) -> AgreementRow:
    """Suspend (``suspended``) or resume (``active``) the version in force, at once, with a reason.
    No authority check: the console goes through :func:`suspend` and :func:`resume`."""
    held = _held(session, agreement_id)
    allowed = {"active": "suspended", "suspended": "active"}
    if allowed.get(held.status) != to:
        raise LifecycleRefused(f"agreement {agreement_id} version {held.version} is {held.status}; it cannot become {to}")
    if len(reason.strip()) < 10:
        raise LifecycleRefused("give a reason of at least 10 characters")
    row = write_version(session, agreement_id, orjson.loads(held.body), to, by)
    _step(session, agreement_id, "suspended" if to == "suspended" else "resumed", by, version=row.version, party=party, comment=reason.strip())
    return row


def suspend(session: Session, agreement_id: str, *, organization: str, reason: str, by: str) -> AgreementRow:
    """A party (its IG officer or DPO) stops sharing under the agreement at once."""
    party = party_of(session, _parties_in_force(_held(session, agreement_id)), organization, agreement_id, "suspend it")
    return set_status(session, agreement_id, "suspended", reason=reason, by=by, party=party)


@dataclass(frozen=True)
class Resumption:
    """Where a suspended version's resumption stands: the parties whose DPO has confirmed it,
    and those still awaited. ``resumed`` is the new active version once nobody is awaited."""

    confirmed: dict[str, str]
    awaiting: list[str]
    resumed: AgreementRow | None = None


def resumption(session: Session, held: AgreementRow) -> Resumption:
    """The confirmations given since ``held`` (a suspended version) was written."""
    steps = session.scalars(select(AgreementStepRow).where(AgreementStepRow.agreement_id == held.id, AgreementStepRow.version == held.version, AgreementStepRow.step == "resume-confirmed").order_by(AgreementStepRow.id))
    confirmed = {s.party: s.by for s in steps if s.party}
    return Resumption(confirmed, [p for p in _parties_in_force(held) if p not in confirmed])


def resume(session: Session, agreement_id: str, *, organization: str, confirm: bool, reason: str, by: str) -> Resumption:
    """A party asks for a suspended agreement to apply again: its IG officer requests it
    (``confirm`` False), its DPO confirms it for that party. Sharing restarts (the next version,
    ``active``) only when every party's DPO has confirmed, as every party's DPO approved the
    agreement before it first applied (the signatures stand: the terms have not changed)."""
    held = _held(session, agreement_id)
    party = party_of(session, _parties_in_force(held), organization, agreement_id, "ask for it to be resumed")
    if held.status != "suspended":
        raise LifecycleRefused(f"agreement {agreement_id} version {held.version} is {held.status}, not suspended; there is nothing to resume")
    if len(reason.strip()) < 10:
        raise LifecycleRefused("give a reason of at least 10 characters")
    if confirm and party in resumption(session, held).confirmed:
        raise LifecycleRefused(f"{party} has already confirmed the resumption of version {held.version}")
    _step(session, agreement_id, "resume-confirmed" if confirm else "resume-requested", by, version=held.version, party=party, comment=reason.strip())
    session.flush()
    standing = resumption(session, held)
    if standing.awaiting:
        return standing
    names = "; ".join(standing.confirmed.values())
    return Resumption(standing.confirmed, [], set_status(session, agreement_id, "active", reason=f"resumption confirmed by every party's DPO: {names}", by=by))


def lapse_due(session: Session, today: date) -> list[str]:
    """Record the lapse of every active agreement whose review is too long overdue (decisions
    already refuse it from its lapse day) and send notice to every party; returns their refs."""
    newest = select(AgreementRow.id, func.max(AgreementRow.version).label("version")).group_by(AgreementRow.id).subquery()
    rows = session.scalars(select(AgreementRow).join(newest, (AgreementRow.id == newest.c.id) & (AgreementRow.version == newest.c.version)).where(AgreementRow.status == "active"))
    lapsed = []
    directory: Directory | None = None
    for held in list(rows):
        agreement = parse_agreement(orjson.loads(held.body))
        if agreement.lapses_on is None or today < agreement.lapses_on:
            continue
        row = write_version(session, agreement.id, orjson.loads(held.body), "expired", LAPSED_BY)
        reason = f"review was due on {agreement.review_date}; lapsed on {agreement.lapses_on} (more than {agreement.lapse_after_days} days overdue)"
        _step(session, agreement.id, "lapsed", "Pathway", version=row.version, comment=reason)
        directory = directory or Directory.load(Repository(session, keyring_of(session)))
        for party in agreement.parties:
            org = directory.by_identifier(f"{party.system}|{party.value}")
            if org is None:
                continue
            notify(
                session,
                event="agreement-notice",
                recipient=org.identifier,
                subject=f"Information-sharing agreement {agreement.id} has lapsed",
                text=f"{agreement.title} ({agreement.id} version {held.version}) no longer applies: its {reason}. "
                "No data is shared under it until a new version is signed by every party.",
                category="agreement-lapsed",
                to=contacts(session, org.reference.split("/", 1)[1]),
            )
        lapsed.append(f"{agreement.id}@{held.version}")
    return lapsed


def sweep(session: Session, today: date) -> dict[str, list[str]]:
    """The periodic duty: activate signed versions that have started, record lapses."""
    return {"activated": promote_due(session, today), "lapsed": lapse_due(session, today)}


def export(session: Session) -> dict[str, Any]:
    """``conf/agreements.yaml`` as the database holds it: the governance settings and every version."""
    rows = session.scalars(select(AgreementRow).order_by(AgreementRow.id, AgreementRow.version))
    return {"governance": governance(session).model_dump(mode="json", exclude_none=True), "agreements": [orjson.loads(r.body) for r in rows]}


def history(session: Session, agreement_id: str) -> list[AgreementStepRow]:
    return list(session.scalars(select(AgreementStepRow).where(AgreementStepRow.agreement_id == agreement_id).order_by(AgreementStepRow.id.desc())))


def drafts(session: Session, agreement_id: str | None = None) -> list[AgreementDraftRow]:
    query = select(AgreementDraftRow).where(AgreementDraftRow.stage.in_(OPEN_STAGES)).order_by(AgreementDraftRow.created)
    if agreement_id is not None:
        query = query.where(AgreementDraftRow.agreement_id == agreement_id)
    return list(session.scalars(query))


def from_conf(session: Session, agreement: dict[str, Any]) -> str | None:
    """Guard ``pathway conf load``: an agreement whose id has a version made in the console is
    never overwritten. A new version from the file becomes a draft for review (returns what
    happened); the same version with other content is refused. None: load it as usual."""
    made_here = session.scalars(select(AgreementRow).where(AgreementRow.id == agreement["id"], AgreementRow.approved_by.is_not(None)).order_by(AgreementRow.version.desc()).limit(1)).first()
    if made_here is None:
        return None
    same = session.get(AgreementRow, (agreement["id"], agreement["version"]))
    if same is not None and parse_agreement(orjson.loads(same.body)) == parse_agreement(agreement):
        return ""
    if agreement["version"] <= (current(session, agreement["id"]) or made_here).version:
        raise LifecycleRefused(
            f"agreements.yaml: agreement {agreement['id']} version {agreement['version']} was not loaded: version "
            f"{made_here.version} was made in the console ({made_here.approved_by}) and conf load never overwrites it; "
            "give the file's agreement a higher version to propose it as a draft, or change it in the console"
        )
    body = {k: v for k, v in agreement.items() if k not in ("id", "version", "status", "signatories")}
    if any(orjson.loads(d.body) == body for d in drafts(session, agreement["id"])):
        return ""
    row = start_draft(session, agreement["id"], body, "pathway conf load", organization=None)
    return (f"agreements.yaml: agreement {agreement['id']} version {agreement['version']} was saved as draft {row.id} for review "
            f"and sign-off in the console, not loaded: version {made_here.version} was made in the console")
