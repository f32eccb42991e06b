"""Who may move an agreement, over the console's real HTTP with real accounts: any party's IG
officer or DPO suspends at once; sharing restarts only when every party's DPO has confirmed;
an officer of an organisation that is not a party is refused (403, audited) for every
agreement step and for break-glass reviews of another organisation. The facility's own FHIR
reads show when sharing stops and restarts."""

from __future__ import annotations

from datetime import date
from html import unescape
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.audit.chain import read_event
from gateway.console.auth import IG_OFFICER, save_account
from gateway.sharing.governance_models import AgreementDraftRow, AgreementStepRow
from gateway.store.models import AgreementRow, AuditRow, BreakGlassRow
from mappings.identifiers import CHI_SYSTEM, make_chi
from tests.browser.world import HSCP, TAYVIEW, Browser, World, build_world
from tests.conftest import privacy_consent

LOMOND = "https://pathway.scot/Id/partner|rehab-lomond-brae"
AGREEMENT = "isa-dhscp-tayview"  # between the HSCP and Tayview House; Lomond Brae is not a party
PASSWORD = "a long test password for officers"


@pytest.fixture
def world(gateway, app, server, tmp_path: Path) -> World:  # type: ignore[no-untyped-def]
    world = build_world(gateway, app, tmp_path / "demo")
    with gateway.transaction() as session:
        save_account(session, "tayview-ig", display_name="Tayview IG officer", organization=TAYVIEW, roles=[IG_OFFICER], password=PASSWORD)
        save_account(session, "lomond-ig", display_name="Lomond Brae IG officer", organization=LOMOND, roles=[IG_OFFICER], password=PASSWORD)
    world.passwords |= {"tayview-ig": PASSWORD, "lomond-ig": PASSWORD}
    return world


@pytest.fixture
def facility_reads(world: World, make_client):  # type: ignore[no-untyped-def]
    """A person the HSCP holds whose consent permits sharing wherever an agreement does; returns
    how Tayview House's own client fares reading them."""
    social = make_client("social-work-test", HSCP, ["system/*.read", "system/*.write"])
    created = social.post("Patient", {"resourceType": "Patient", "identifier": [{"system": CHI_SYSTEM, "value": make_chi(date(1979, 2, 3), "male", 4)}], "name": [{"given": ["Rory"], "family": "Tosh"}]})
    assert created.status_code == 201, created.text
    ref = f"Patient/{created.json()['id']}"
    permit = privacy_consent(ref, {"type": "permit"}, performer="Organization/dundee-hscp")
    assert social.post("Consent", permit).status_code == 201
    facility = make_client("facility-test", TAYVIEW, ["system/*.read"])
    return lambda: facility.get(ref).status_code


def _as(server, world: World, username: str) -> Browser:  # type: ignore[no-untyped-def]
    browser = Browser(server.url)
    browser.login(username, world.passwords[username])  # lands on the home page, which DPOs may not open
    assert browser.get(f"/console/agreements/{AGREEMENT}").status_code == 200  # signed in; the page carries the CSRF token
    return browser


def _versions(gateway) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    with gateway.reading() as session:
        return [(r.version, r.status) for r in session.scalars(select(AgreementRow).where(AgreementRow.id == AGREEMENT).order_by(AgreementRow.version))]


def _audits(gateway) -> int:  # type: ignore[no-untyped-def]
    with gateway.reading() as session:
        return session.scalar(select(func.count()).select_from(AuditRow)) or 0


def _refused_and_audited(gateway, browser: Browser, path: str, data: dict[str, object] | None = None, *, username: str = "lomond-ig", says: str = "is not a party to agreement") -> None:  # type: ignore[no-untyped-def]
    """A 403 saying why, and one AuditEvent of the refusal naming the account."""
    before = _audits(gateway)
    answer = browser.get(path) if data is None else browser.post(path, data)
    assert answer.status_code == 403, (path, answer.status_code)
    assert says in unescape(answer.text), answer.text[-600:]
    assert _audits(gateway) == before + 1, path
    with gateway.reading() as session:
        event = read_event(session, session.scalars(select(AuditRow).order_by(AuditRow.seq.desc())).first())
    assert event["outcome"] == "4" and path in event["outcomeDesc"] and event["agent"][0]["altId"] == username


def test_one_party_stops_sharing_at_once_and_no_party_alone_restarts_it(gateway, server, world: World, facility_reads) -> None:  # type: ignore[no-untyped-def]
    assert facility_reads() == 200
    start = _versions(gateway)
    n = start[-1][0]
    assert start[-1][1] == "active"

    outsider = _as(server, world, "lomond-ig")
    _refused_and_audited(gateway, outsider, f"/console/agreements/{AGREEMENT}/suspend", {"reason": "We would like this stopped now"})
    assert _versions(gateway) == start and facility_reads() == 200

    # the facility's own IG officer suspends: the next read is refused
    tayview = _as(server, world, "tayview-ig")
    done = tayview.post(f"/console/agreements/{AGREEMENT}/suspend", {"reason": "Breach at the facility under investigation"})
    assert done.status_code == 200 and f"Version {n + 1} is now suspended" in unescape(done.text)
    assert _versions(gateway)[-1] == (n + 1, "suspended")
    assert facility_reads() == 404

    # the HSCP alone cannot restart sharing the facility stopped: its IG officer asks, its DPO confirms
    hscp_officer = _as(server, world, "ig-officer")
    asked = hscp_officer.post(f"/console/agreements/{AGREEMENT}/resume", {"reason": "The HSCP's review found no breach"})
    assert asked.status_code == 200 and "Requested; sharing restarts when every party's DPO has confirmed (2 still to confirm)" in unescape(asked.text)
    hscp_dpo = _as(server, world, "hscp-dpo")
    confirmed = hscp_dpo.post(f"/console/agreements/{AGREEMENT}/resume", {"reason": "No breach found by the HSCP"})
    assert confirmed.status_code == 200 and "(1 still to confirm)" in unescape(confirmed.text)
    assert hscp_dpo.post(f"/console/agreements/{AGREEMENT}/resume", {"reason": "No breach found by the HSCP"}).status_code == 409  # once per party
    assert _versions(gateway)[-1] == (n + 1, "suspended") and facility_reads() == 404
    senior = _as(server, world, "hscp-senior-officer")
    _refused_and_audited(gateway, senior, f"/console/agreements/{AGREEMENT}/resume", {"reason": "Chief officer says resume"}, username="hscp-senior-officer", says="only dpos or ig officers of a party may ask")
    outsider.get(f"/console/agreements/{AGREEMENT}")
    _refused_and_audited(gateway, outsider, f"/console/agreements/{AGREEMENT}/resume", {"reason": "We would like this resumed"})
    assert _versions(gateway)[-1] == (n + 1, "suspended") and facility_reads() == 404

    # the facility's DPO confirms too: sharing restarts, from the next read
    tayview_dpo = _as(server, world, "tayview-dpo")
    resumed = tayview_dpo.post(f"/console/agreements/{AGREEMENT}/resume", {"reason": "Investigation closed at Tayview"})
    assert resumed.status_code == 200 and f"version {n + 2} is now active" in unescape(resumed.text)
    assert _versions(gateway)[-2:] == [(n + 1, "suspended"), (n + 2, "active")]
    assert facility_reads() == 200
    with gateway.reading() as session:
        steps = [(s.step, s.party, s.version) for s in session.scalars(select(AgreementStepRow).where(AgreementStepRow.agreement_id == AGREEMENT).order_by(AgreementStepRow.id))]
    assert steps == [
        ("suspended", TAYVIEW, n + 1),
        ("resume-requested", HSCP, n + 1),
        ("resume-confirmed", HSCP, n + 1),
        ("resume-confirmed", TAYVIEW, n + 1),
        ("resumed", None, n + 2),
    ]


def test_an_officer_of_no_party_cannot_draft_change_submit_or_withdraw_nor_review_anothers_break_glass(gateway, server, world: World) -> None:  # type: ignore[no-untyped-def]
    outsider = _as(server, world, "lomond-ig")
    _refused_and_audited(gateway, outsider, f"/console/agreements/{AGREEMENT}/new-version", {})
    outsider.get("/console/agreements/new")
    body = {"agreement_id": "isa-hscp-tayview-2", "title": "Drafted by a stranger", "party": [HSCP, TAYVIEW], "purpose": ["TREAT"], "category": ["demographics"],
            "art6": "UK GDPR Art 6(1)(e)", "art9": "UK GDPR Art 9(2)(h)", "start": "2026-01-01"}
    _refused_and_audited(gateway, outsider, "/console/agreements/new", body)

    hscp = _as(server, world, "ig-officer")
    drafted = hscp.post(f"/console/agreements/{AGREEMENT}/new-version", {})
    assert drafted.status_code == 200 and "Draft of the next version saved" in unescape(drafted.text)
    draft_id = drafted.url.path.rsplit("/", 1)[1]
    outsider.get(f"/console/agreements/drafts/{draft_id}")
    assert "Change the draft" not in outsider.get(f"/console/agreements/drafts/{draft_id}").text
    _refused_and_audited(gateway, outsider, f"/console/agreements/drafts/{draft_id}/edit")
    _refused_and_audited(gateway, outsider, f"/console/agreements/drafts/{draft_id}/edit", body)
    _refused_and_audited(gateway, outsider, f"/console/agreements/drafts/{draft_id}/submit", {})
    _refused_and_audited(gateway, outsider, f"/console/agreements/drafts/{draft_id}/withdraw", {})
    with gateway.reading() as session:
        draft = session.get(AgreementDraftRow, draft_id)
        assert (draft.stage, "Drafted by a stranger" in draft.body) == ("draft", False)
        assert session.scalar(select(func.count()).select_from(AgreementDraftRow)) == 1

    # the duty social worker's break-glass was at the HSCP: Lomond Brae's officer may not close its review
    page = outsider.get("/console/break-glass")
    assert page.status_code == 200 and f"/console/break-glass/{world.grant_id}/review" not in page.text
    _refused_and_audited(gateway, outsider, f"/console/break-glass/{world.grant_id}/review", {"outcome": "justified", "note": "Looks fine to us at Lomond Brae"}, says="not by yours")
    with gateway.reading() as session:
        assert session.get(BreakGlassRow, world.grant_id).review_status == "pending"
    assert f"/console/break-glass/{world.grant_id}/review" in hscp.get("/console/break-glass").text
