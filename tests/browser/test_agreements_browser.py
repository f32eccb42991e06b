"""An agreement's whole life in a real browser (Debian's Chromium driven by Playwright): an IG
officer drafts one between the HSCP and a new facility, each party's DPO approves and senior
officer signs, and the facility's FHIR reads over HTTP are refused before activation, permitted
after, and refused again on the next read after suspension. axe-core (npm, pinned in
tests/browser/package-lock.json) checks every agreement page. Screenshots of each step go to
the test's tmp_path/screens and to /tmp/shots15."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.auth.tokens import Principal
from gateway.console.auth import DPO, SENIOR_OFFICER, save_account
from gateway.directory import store_if_changed
from gateway.fhir.access import DIRECTORY_CUSTODIAN, Caller
from gateway.store.models import AgreementRow
from gateway.store.repository import now_utc
from tests.browser.test_console_browser import CHROMIUM, app, page  # noqa: F401 - the shared browser fixtures
from tests.browser.world import HSCP, World, build_world

AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = Path("/tmp/shots15")
NEWHAVEN = "https://pathway.scot/Id/partner|rehab-newhaven-house"
AGREEMENT = "isa-dhscp-newhaven"
PASSWORD = "correct horse battery staple 15"

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)"),
    pytest.mark.skipif(shutil.which("npm") is None or shutil.which("node") is None, reason="node and npm are needed for axe-core (apt-get install npm)"),
]


def _newhaven(gateway) -> None:  # type: ignore[no-untyped-def]
    """A facility new to the partnership: in the directory, with a DPO and a senior officer."""
    with gateway.transaction() as session:
        store_if_changed(gateway.repository(session), {
            "resourceType": "Organization", "id": "rehab-newhaven-house", "active": True, "name": "Newhaven House",
            "identifier": [{"system": "https://pathway.scot/Id/partner", "value": "rehab-newhaven-house"}],
            "telecom": [{"system": "email", "value": "governance@newhaven-house.example", "use": "work"}],
        }, DIRECTORY_CUSTODIAN)
        save_account(session, "newhaven-dpo", display_name="Isobel Grant (Newhaven House DPO)", organization=NEWHAVEN, roles=[DPO], password=PASSWORD)
        save_account(session, "newhaven-senior-officer", display_name="Alasdair Munro (Newhaven House director)", organization=NEWHAVEN, roles=[SENIOR_OFFICER], password=PASSWORD)


def _consent_for_everyone_covered(app, world: World) -> None:  # type: ignore[no-untyped-def]
    """Isla consents to sharing wherever an agreement allows it (so the agreement decides)."""
    social_work = Caller(Principal("social-work", HSCP, frozenset(), frozenset({"key-worker"}), "system", 0), "CAREMGT")
    app.state.fhir.create(social_work, {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{world.patient_id}"}, "performer": [{"reference": "Organization/dundee-hscp"}], "provision": {"type": "permit"},
    }, "Consent")


def test_an_agreement_is_drafted_reviewed_signed_enforced_and_suspended(gateway, app, server, page, make_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert AXE.exists(), "axe-core is not installed: run `npm ci` in tests/browser (scripts/setup.sh does)"
    world = build_world(gateway, app, tmp_path / "demo")
    _newhaven(gateway)
    _consent_for_everyone_covered(app, world)
    facility = make_client("newhaven-house", NEWHAVEN, ["system/*.read"])
    screens = tmp_path / "screens"
    screens.mkdir()
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(server.url) else None)
    passwords = world.passwords | {"newhaven-dpo": PASSWORD, "newhaven-senior-officer": PASSWORD}
    taken: list[str] = []
    violations: dict[str, list[dict[str, Any]]] = {}

    def shot(name: str) -> None:
        page.screenshot(path=str(screens / f"{name}.png"), full_page=True)
        shutil.copy(screens / f"{name}.png", SHOTS / f"{name}.png")
        taken.append(name)

    axe_source = AXE.read_text(encoding="utf-8")

    def axe(name: str) -> None:
        page.evaluate(axe_source)  # evaluated by the driver: the console's CSP forbids inline scripts, rightly
        result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
        violations[name] = [{"id": v["id"], "impact": v["impact"], "nodes": len(v["nodes"])} for v in result if v["impact"] in ("serious", "critical")]

    def sign_in(username: str, target: str = "/console/agreements") -> None:
        page.context.clear_cookies()
        page.goto(f"{server.url}/console/login?next={target}")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(passwords[username])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server.url}{target}*")

    def read() -> int:
        return facility.get(f"Patient/{world.patient_id}").status_code

    assert read() == 404  # no agreement yet

    # the IG officer drafts the agreement
    sign_in("ig-officer")
    axe("agreements")
    shot("01-agreements")
    page.get_by_role("link", name="Draft a new agreement").click()
    page.get_by_label("Agreement id").fill(AGREEMENT)
    page.keyboard.press("Tab")  # the keyboard goes from the id to the title, in reading order
    assert page.evaluate("document.activeElement.id") == "title"
    page.keyboard.type("Dundee HSCP and Newhaven House - residential rehabilitation")
    page.get_by_label("Dundee Health and Social Care Partnership", exact=False).check()
    page.get_by_label("Newhaven House").check()
    page.get_by_label("Care and treatment (TREAT)").check()
    page.get_by_label("Care coordination (CAREMGT)").check()
    for category in ("demographics", "substance-use", "pathway-progress"):
        page.locator(f"#category-{category}").check()
    page.get_by_label("UK GDPR Article 6 basis").select_option("UK GDPR Art 6(1)(e)")
    page.get_by_label("UK GDPR Article 9 condition", exact=False).select_option("UK GDPR Art 9(2)(h)")
    page.get_by_label("Retention").fill("Kept by each party for 8 years after the end of care (SG records management code)")
    today = now_utc().date()
    page.get_by_label("Start").fill(today.isoformat())
    page.get_by_label("Review date").fill((today + timedelta(days=365)).isoformat())
    page.get_by_label("Document title").fill("DPIA: residential rehabilitation referrals v2")
    page.get_by_label("Where it is kept", exact=False).fill("https://dpia.dundee-hscp.example/rehab-referrals-v2.pdf")
    page.get_by_label("SHA-256 digest", exact=False).fill("9f2c" * 16)
    axe("draft-form")
    shot("02-draft-form")
    page.get_by_role("button", name="Save draft").click()
    page.get_by_role("status").filter(has_text="Draft saved").wait_for()
    draft_url = page.url.split("?")[0].removeprefix(server.url)
    page.get_by_role("button", name="Submit for review").click()
    page.get_by_role("status").filter(has_text="Submitted for review").wait_for()
    axe("draft-in-review")
    shot("03-submitted")
    assert read() == 404

    # each party's DPO approves: the HSCP's with the keyboard only
    sign_in("hscp-dpo", draft_url)
    page.get_by_label("Review comments", exact=False).focus()
    page.keyboard.type("Checked against the DPIA; retention agreed.")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent").startswith("Approve for Dundee Health and Social Care Partnership")
    page.keyboard.press("Enter")
    page.get_by_role("status").filter(has_text="Recorded").wait_for()
    shot("04-hscp-dpo-approved")
    sign_in("newhaven-dpo", draft_url)
    page.get_by_role("button", name="Approve for Newhaven House").click()
    page.get_by_role("status").filter(has_text="now needs every party's signature").wait_for()
    shot("05-newhaven-dpo-approved")
    assert read() == 404

    # each party's senior officer signs; the second signature makes it active at once (it starts today)
    sign_in("hscp-senior-officer", draft_url)
    page.get_by_label("Your name and position, as signed").fill("Fiona Reid, Chief Social Work Officer")
    axe("draft-signing")
    page.get_by_role("button", name="Sign for Dundee Health and Social Care Partnership", exact=False).click()
    page.get_by_role("status").filter(has_text="Recorded").wait_for()
    shot("06-hscp-signed")
    assert read() == 404  # one party has not signed yet
    sign_in("newhaven-senior-officer", draft_url)
    page.get_by_label("Your name and position, as signed").fill("Alasdair Munro, Director")
    page.get_by_role("button", name="Sign for Newhaven House").click()
    page.get_by_role("status").filter(has_text="the new version is active now").wait_for()
    shot("07-newhaven-signed-active")
    assert read() == 200  # permitted from the next read

    # the IG officer suspends it; the next read is refused
    sign_in("ig-officer", f"/console/agreements/{AGREEMENT}")
    axe("agreement")
    shot("08-agreement-active")
    page.get_by_label("Reason for suspending", exact=False).fill("Facility's registration under review by the Care Inspectorate")
    page.get_by_role("button", name="Suspend now (make version 2 suspended)").click()
    page.get_by_role("status").filter(has_text="Version 2 is now suspended").wait_for()
    axe("agreement-suspended")
    shot("09-suspended")
    assert read() == 404

    with gateway.reading() as session:
        active = session.get(AgreementRow, (AGREEMENT, 1))
        suspended = session.get(AgreementRow, (AGREEMENT, 2))
    assert (active.status, suspended.status) == ("active", "suspended")
    assert sorted(s["name"] for s in orjson.loads(active.body)["signatories"]) == ["Alasdair Munro, Director", "Fiona Reid, Chief Social Work Officer"]
    assert violations == {name: [] for name in ("agreements", "draft-form", "draft-in-review", "draft-signing", "agreement", "agreement-suspended")}
    assert external == []
    assert len(taken) == 9
