"""The IG console over real HTTP: sign-in, roles, CSRF, audit of every page, consents,
agreements, break-glass reviews, dead letters and exports."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.audit.chain import read_event
from gateway.audit.ledger import disclosure, insert_disclosures
from gateway.console.agreements import diff
from gateway.sharing.agreement_lifecycle import LifecycleRefused, set_status
from gateway.console.consents import ConsentChoices, build_consent, choices_of
from gateway.console.people import csv_cell
from gateway.delivery.models import DeliveryRow
from gateway.sharing.policy import ConsentPolicy
from gateway.store.models import AgreementRow, AuditRow, BreakGlassRow
from gateway.store.repository import Stored, now_utc
from tests.browser.world import DRAFT_AGREEMENT, TAYVIEW, Browser, World, build_world


@pytest.fixture
def app(gateway):  # type: ignore[no-untyped-def]
    return create_app(gateway=gateway, policy=ConsentPolicy(gateway.keyring))


@pytest.fixture
def world(gateway, app, server, tmp_path: Path) -> World:  # type: ignore[no-untyped-def]
    return build_world(gateway, app, tmp_path / "demo")


def signed_in(server, world: World, username: str = "ig-officer") -> Browser:  # type: ignore[no-untyped-def]
    browser = Browser(server.url)
    assert browser.login(username, world.passwords[username]).status_code == 200
    return browser


def audit_count(gateway) -> int:  # type: ignore[no-untyped-def]
    with gateway.reading() as session:
        return session.scalar(select(func.count()).select_from(AuditRow)) or 0


def last_audit(gateway) -> dict:  # type: ignore[no-untyped-def,type-arg]
    with gateway.reading() as session:
        return read_event(session, session.scalars(select(AuditRow).order_by(AuditRow.seq.desc())).first())


def test_sign_in_is_required_and_a_wrong_password_is_refused(server, world: World) -> None:  # type: ignore[no-untyped-def]
    browser = Browser(server.url)
    page = browser.get("/console/people")
    assert page.url.path == "/console/login" and "Sign in" in page.text
    assert browser.login("ig-officer", "not-the-password").status_code == 401
    assert browser.login("ig-officer", world.passwords["ig-officer"]).url.path == "/console/"


def test_partnership_lead_cannot_open_person_level_pages(gateway, server, world: World) -> None:  # type: ignore[no-untyped-def]
    lead = signed_in(server, world, "partnership-lead")
    person_pages = [
        "/console/people?q=Duncan",
        f"/console/people/{world.patient_id}",
        f"/console/people/{world.patient_id}/disclosures.csv",
        f"/console/people/{world.patient_id}/subject-access.json",
        f"/console/people/{world.patient_id}/consents/new",
        f"/console/people/{world.patient_id}/simulate",
        "/console/break-glass",
        "/console/agreements",
        "/console/deliveries",
    ]
    for path in person_pages:
        before = audit_count(gateway)
        page = lead.get(path)
        assert page.status_code == 403, path
        assert "Duncan" not in page.text and world.chi not in page.text
        assert audit_count(gateway) == before + 1
        refused = last_audit(gateway)
        assert refused["outcome"] == "4" and path.split("?")[0] in refused["outcomeDesc"]
    assert lead.get("/console/dashboard").status_code == 200


def test_every_console_page_view_writes_an_audit_event(gateway, server, world: World) -> None:  # type: ignore[no-untyped-def]
    officer = signed_in(server, world)
    pages = [
        "/console/",
        f"/console/people?q={world.chi}",
        f"/console/people/{world.patient_id}",
        f"/console/people/{world.patient_id}/consents/new",
        f"/console/people/{world.patient_id}/simulate",
        f"/console/people/{world.patient_id}/disclosures.csv",
        f"/console/people/{world.patient_id}/subject-access.json",
        "/console/agreements",
        f"/console/agreements/{DRAFT_AGREEMENT}",
        "/console/break-glass",
        "/console/deliveries",
        "/console/dashboard",
    ]
    for path in pages:
        before = audit_count(gateway)
        assert officer.get(path).status_code == 200, path
        assert audit_count(gateway) == before + 1, path
        event = last_audit(gateway)
        assert event["agent"][0]["altId"] == "ig-officer"
        if "/people/" in path:
            assert event["entity"][0]["what"]["reference"] == f"Patient/{world.patient_id}"


def test_pages_carry_security_headers_and_forms_need_the_session_csrf_token(server, world: World) -> None:  # type: ignore[no-untyped-def]
    officer = signed_in(server, world)
    page = officer.get("/console/deliveries")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    cookie = next(c for c in officer.http.cookies.jar if c.name == "pathway_console")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "strict"
    forged = officer.http.post("/console/deliveries/replay", data={"csrf": "forged", "all": "yes"})
    assert forged.status_code == 403 and "did not come from the console" in forged.text


def test_person_search_by_chi_and_by_name(server, world: World) -> None:  # type: ignore[no-untyped-def]
    officer = signed_in(server, world)
    assert "Isla Duncan" in officer.get("/console/people", q=world.chi).text
    assert "Isla Duncan" in officer.get("/console/people", q="isla duncan", dob="1984-03-09").text
    assert "Isla Duncan" in officer.get("/console/people", q="dunc").text
    assert "not a valid CHI number" in officer.get("/console/people", q="0101801235").text


def test_officer_records_amends_and_withdraws_a_consent(gateway, server, world: World) -> None:  # type: ignore[no-untyped-def]
    officer = signed_in(server, world)
    officer.get(f"/console/people/{world.patient_id}/consents/new")
    form = {
        "recipient": ["Organization/rehab-tayview-house", f"RelatedPerson/{world.carer_id}"],
        "purpose": ["TREAT", "carer-support"],
        "category": ["pathway-progress", "substance-use"],
        "exclude": ["mental-health"],
        "start": "2026-01-01",
        "end": "2027-12-31",
        "witness": "PractitionerRole/adv-fiona-crichton",
    }
    person = officer.post(f"/console/people/{world.patient_id}/consents", form)
    assert person.status_code == 200 and "recorded" in person.text
    assert "Morven Laird" in person.text and "Fiona Crichton" in person.text
    consent_id = person.text.split("/console/consents/")[1].split("/")[0]
    assert "Amend" in person.text
    # a disclosure under this consent earlier, so the facility must be told of the withdrawal
    with gateway.transaction() as session:
        insert_disclosures(session, [disclosure(at=now_utc(), patient=f"Patient/{world.patient_id}", recipient=TAYVIEW, acting_for=None, client_id="rehab-facility", purpose="TREAT", channel="api", resources=[f"Patient/{world.patient_id}/_history/1"], agreements=["isa-dhscp-tayview@2"], consents=[f"Consent/{consent_id}"], break_glass=None)])
    preview = officer.get(f"/console/consents/{consent_id}/withdraw")
    assert "Tayview House" in preview.text and "pushed to their endpoint" in preview.text
    after = officer.post(f"/console/consents/{consent_id}/withdraw", {})
    assert "withdrawn" in after.text and "Withdrawal notices" in after.text
    with gateway.reading() as session:
        notices = session.scalars(select(DeliveryRow).where(DeliveryRow.event == "withdrawal-notice")).all()
    assert [(n.recipient, n.status) for n in notices] == [(TAYVIEW, "pending")]


def test_an_officer_alone_cannot_activate_an_agreement_but_can_suspend_with_a_reason(gateway, server, world: World) -> None:  # type: ignore[no-untyped-def]
    officer = signed_in(server, world)
    listing = officer.get("/console/agreements")
    assert "review overdue" in listing.text
    page = officer.get(f"/console/agreements/{DRAFT_AGREEMENT}")
    assert "Draft the next version" in page.text and "Approve (" not in page.text
    assert officer.post(f"/console/agreements/{DRAFT_AGREEMENT}/status", {"to": "active"}).status_code in (404, 405)
    assert "give a reason" in officer.post("/console/agreements/isa-dhscp-tayview/suspend", {"reason": "no"}).text
    suspended = officer.post("/console/agreements/isa-dhscp-tayview/suspend", {"reason": "Data breach at the facility under investigation"})
    assert "Version 4 is now suspended" in suspended.text and "Version 3 → 4" in suspended.text
    with gateway.reading() as session:
        row = session.get(AgreementRow, ("isa-dhscp-tayview", 4))
    assert row.status == "suspended" and row.approved_by == "Morven Laird (IG officer, demo) (ig-officer)"
    assert "Data breach at the facility under investigation" in officer.get("/console/agreements/isa-dhscp-tayview").text
    assert officer.post("/console/agreements/isa-dhscp-tayview/suspend", {"reason": "Data breach at the facility under investigation"}).status_code == 409


def test_break_glass_review_and_dead_letter_replay(gateway, server, world: World) -> None:  # type: ignore[no-untyped-def]
    officer = signed_in(server, world)
    queue = officer.get("/console/break-glass")
    assert "Adult protection concern raised out of hours" in queue.text
    officer.post(f"/console/break-glass/{world.grant_id}/review", {"outcome": "justified", "note": "Risk to life documented; access proportionate."})
    with gateway.reading() as session:
        assert session.get(BreakGlassRow, world.grant_id).review_status == "justified"
    officer.get("/console/deliveries")
    confirm = officer.post("/console/deliveries/replay", {"delivery": world.dead_id})
    assert "Replay 1 delivery?" in confirm.text
    with gateway.reading() as session:
        assert session.get(DeliveryRow, world.dead_id).status == "dead"  # nothing happens before confirming
    done = officer.post("/console/deliveries/replay/confirmed", {"delivery": world.dead_id})
    assert "1 deliveries queued again" in done.text
    with gateway.reading() as session:
        assert session.get(DeliveryRow, world.dead_id).status == "pending"


def test_subject_access_exports(gateway, server, world: World) -> None:  # type: ignore[no-untyped-def]
    with gateway.transaction() as session:
        insert_disclosures(session, [disclosure(at=now_utc(), patient=f"Patient/{world.patient_id}", recipient=TAYVIEW, acting_for="=HYPERLINK(\"http://x\")", client_id="-cmd", purpose="TREAT", channel="api", resources=["Patient/x/_history/1"], agreements=[], consents=[], break_glass=None)])
    officer = signed_in(server, world)
    rows = list(csv.reader(io.StringIO(officer.get(f"/console/people/{world.patient_id}/disclosures.csv").text)))
    assert rows[0][:3] == ["at", "recipient", "recipient_name"]
    assert rows[1][2].startswith("Tayview House")
    assert rows[1][3] == "'=HYPERLINK(\"http://x\")" and rows[1][4] == "'-cmd"
    bundle = officer.get(f"/console/people/{world.patient_id}/subject-access.json").json()
    Bundle.model_validate(bundle)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[0] == "Patient" and kinds.count("AuditEvent") == 1


def test_csv_cells_never_start_a_formula() -> None:
    assert [csv_cell(v) for v in ("=1+1", "+44", "-2", "@SUM", "plain", None, ["a", "b"])] == ["'=1+1", "'+44", "'-2", "'@SUM", "plain", "", "a b"]


def test_consent_form_round_trips_through_the_fhir_consent() -> None:
    patient = Stored("Patient", "p1", 1, now_utc(), False, "Patient/p1", "x|y", frozenset(), frozenset(), orjson.dumps({"resourceType": "Patient", "id": "p1"}))
    choices = ConsentChoices(["Organization/a"], ["TREAT"], ["reviews"], ["mental-health"], "2026-01-01", "", "")
    consent = build_consent(patient, choices, actors={"Organization/a": {"reference": "Organization/a"}}, witness=None, recorder="me", organization=None)
    assert consent["provision"]["provision"][0]["provision"][0]["type"] == "deny"
    assert choices_of(consent) == choices
    assert ConsentChoices(["Organization/a"], [], ["reviews"], ["reviews"], "x").problems({"Organization/a"}) == [
        "Choose at least one purpose.",
        "reviews is both shared and excluded; choose one.",
        "Give the date the consent starts (YYYY-MM-DD).",
    ]


def test_agreement_lifecycle_refuses_moves_it_does_not_allow(gateway) -> None:  # type: ignore[no-untyped-def]
    with gateway.transaction() as session:
        session.add(AgreementRow(id="a", version=1, status="active", body=orjson.dumps({"id": "a", "version": 1, "status": "active", "purposes": ["TREAT"]}).decode(), loaded=now_utc()))
    with gateway.transaction() as session, pytest.raises(LifecycleRefused, match="cannot become active"):
        set_status(session, "a", "active", reason="resume it, please", by="me")
    assert [(c.field, c.added, c.removed) for c in diff({"purposes": ["TREAT"]}, {"purposes": ["TREAT", "CAREMGT"]})] == [("purposes", ("CAREMGT",), ())]
