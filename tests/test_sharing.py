"""Consent-driven sharing end to end: agreements AND consent decide what each party sees."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.conf import load_conf
from gateway.directory import import_conf
from gateway.runtime import Gateway
from gateway.sharing.break_glass import pending_reviews, written
from mappings.identifiers import CHI_SYSTEM, make_chi

from .conftest import HSCP, REPO, privacy_consent

FACILITY = "https://pathway.scot/Id/partner|rehab-tayview-house"
CARERS_CENTRE = "https://pathway.scot/Id/partner|dundee-carers-centre"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CATEGORY = "https://pathway.scot/CodeSystem/data-category"
CHI = make_chi(date(1984, 5, 17), "female", 2)


def labelled(resource: dict, categories: list[str], security: list[str] = ()) -> dict:  # type: ignore[type-arg, assignment]
    resource["meta"] = {"tag": [{"system": CATEGORY, "code": c} for c in categories]}
    if security:  # FHIR arrays are never empty
        resource["meta"]["security"] = [{"system": ACT_CODE, "code": s} for s in security]
    return resource


@pytest.fixture
def partnership(gateway: Gateway) -> Gateway:
    """The demo partnership's directory and agreements."""
    import_conf(gateway, load_conf(REPO / "conf"), REPO / "conf")
    return gateway


@pytest.fixture
def person(partnership, make_client):  # type: ignore[no-untyped-def]
    """Ann, her sister Jean (a carer), her prescribing and a mental-health entry, held by the HSCP."""
    social = make_client("social-work-test", HSCP, ["system/*.read", "system/*.write", "consent.decide"])
    patient = social.post(
        "Patient",
        {
            "resourceType": "Patient",
            "identifier": [{"system": CHI_SYSTEM, "value": CHI}],
            "name": [{"given": ["Ann"], "family": "Reid"}],
            "gender": "female",
            "birthDate": "1984-05-17",
        },
    ).json()
    ref = f"Patient/{patient['id']}"
    carer = social.post("RelatedPerson", {"resourceType": "RelatedPerson", "patient": {"reference": ref}, "name": [{"given": ["Jean"], "family": "Reid"}]}).json()
    methadone = social.post(
        "MedicationStatement",
        labelled(
            {"resourceType": "MedicationStatement", "status": "active", "subject": {"reference": ref}, "medicationCodeableConcept": {"text": "Methadone 1mg/ml oral solution"}},
            ["prescribing", "substance-use"],
            ["OPIOIDUD"],
        ),
    ).json()
    depression = social.post(
        "Condition",
        labelled({"resourceType": "Condition", "subject": {"reference": ref}, "code": {"text": "Depressive episode"}}, ["mental-health"], ["PSY"]),
    ).json()
    progress = social.post(
        "EpisodeOfCare",
        labelled({"resourceType": "EpisodeOfCare", "status": "active", "patient": {"reference": ref}}, ["pathway-progress"]),
    ).json()
    consent = social.post(
        "Consent",
        privacy_consent(
            ref,
            {
                "type": "deny",
                "provision": [
                    {
                        "type": "permit",
                        "actor": [{"role": {"text": "recipient"}, "reference": {"identifier": {"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}}}],
                        "provision": [{"type": "deny", "securityLabel": [{"system": ACT_CODE, "code": "PSY"}]}],
                    },
                    {
                        "type": "permit",
                        "actor": [{"role": {"text": "carer"}, "reference": {"reference": f"RelatedPerson/{carer['id']}"}}],
                        "purpose": [{"system": "https://pathway.scot/CodeSystem/purpose", "code": "carer-support"}],
                        "code": [{"coding": [{"system": CATEGORY, "code": "pathway-progress"}]}],
                    },
                ],
            },
            performer="Organization/dundee-hscp",
        ),
    )
    assert consent.status_code == 201, consent.text
    return {
        "social": social,
        "patient": ref,
        "carer": f"RelatedPerson/{carer['id']}",
        "methadone": methadone["id"],
        "depression": depression["id"],
        "progress": progress["id"],
        "consent": consent.json(),
    }


def _ids(bundle: dict) -> set[str]:  # type: ignore[type-arg]
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] != "OperationOutcome"}


def _withheld(bundle: dict) -> bool:  # type: ignore[type-arg]
    return any(e["resource"]["resourceType"] == "OperationOutcome" for e in bundle.get("entry", []))


def test_facility_sees_prescribing_but_not_mental_health(person, make_client):  # type: ignore[no-untyped-def]
    facility = make_client("facility-test", FACILITY, ["system/*.read"])
    meds = facility.get(f"MedicationStatement?patient={person['patient']}").json()
    assert _ids(meds) == {person["methadone"]}
    conditions = facility.get(f"Condition?patient={person['patient']}").json()
    assert _ids(conditions) == set() and _withheld(conditions)
    assert facility.get(f"Condition/{person['depression']}").status_code == 404
    assert facility.get(f"MedicationStatement/{person['methadone']}").json()["medicationCodeableConcept"]["text"].startswith("Methadone")


def test_carer_sees_pathway_progress_only(person, make_client):  # type: ignore[no-untyped-def]
    portal = make_client("carer-portal-test", CARERS_CENTRE, ["system/*.read"], kind="portal")
    headers = {"X-Pathway-Acting-For": person["carer"], "X-Pathway-Purpose": "carer-support"}
    assert portal.get(f"EpisodeOfCare/{person['progress']}", headers=headers).status_code == 200
    assert portal.get(f"MedicationStatement/{person['methadone']}", headers=headers).status_code == 404
    assert portal.get(f"Condition/{person['depression']}", headers=headers).status_code == 404
    # without naming the person it acts for, a portal gets nothing
    assert portal.get(f"EpisodeOfCare/{person['progress']}").status_code == 400
    # another carer (not named in the consent) sees nothing
    other = {"X-Pathway-Acting-For": "RelatedPerson/someone-else", "X-Pathway-Purpose": "carer-support"}
    assert portal.get(f"EpisodeOfCare/{person['progress']}", headers=other).status_code == 404


def test_no_agreement_means_nothing_even_with_consent(person, make_client):  # type: ignore[no-untyped-def]
    stranger = make_client("stranger", "https://pathway.scot/Id/partner|not-a-partner", ["system/*.read"])
    assert stranger.get(f"MedicationStatement/{person['methadone']}").status_code == 404


def test_withdrawal_takes_effect_at_once_and_queues_a_notice(person, make_client, gateway):  # type: ignore[no-untyped-def]
    facility = make_client("facility-test", FACILITY, ["system/*.read"])
    assert facility.get(f"MedicationStatement/{person['methadone']}").status_code == 200
    withdrawn = {**person["consent"], "status": "inactive"}
    response = person["social"].put(f"Consent/{withdrawn['id']}", withdrawn, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200, response.text
    assert facility.get(f"MedicationStatement/{person['methadone']}").status_code == 404
    assert _ids(facility.get(f"MedicationStatement?patient={person['patient']}").json()) == set()
    notices = facility.get("Communication?category=https://pathway.scot/CodeSystem/communication-category|withdrawal-notice").json()
    assert len(notices["entry"]) == 1
    assert notices["entry"][0]["resource"]["about"][0]["reference"] == f"Consent/{withdrawn['id']}"


def test_disclosures_are_in_the_ledger_with_agreement_and_consent(person, make_client):  # type: ignore[no-untyped-def]
    facility = make_client("facility-test", FACILITY, ["system/*.read"])
    facility.get(f"MedicationStatement/{person['methadone']}")
    ig = make_client("ig-test", HSCP, ["system/*.read", "audit.read"], roles=["ig-officer"])
    ledger = ig.get(f"{ig.fhir_base.removesuffix('/fhir')}/disclosures?patient={person['patient']}").json()["disclosures"]
    entry = next(d for d in ledger if d["recipient"] == FACILITY)
    assert entry["resources"] == [f"MedicationStatement/{person['methadone']}/_history/1"]
    assert entry["agreements"] and entry["agreements"][0].startswith("isa-dhscp-tayview@")
    assert entry["consents"] == [f"Consent/{person['consent']['id']}"]
    events = ig.get(f"AuditEvent?patient={person['patient']}").json()
    assert any(e["resource"]["agent"][0]["who"].get("identifier", {}).get("value") == "facility-test" for e in events["entry"])
    assert facility.get(f"{ig.fhir_base.removesuffix('/fhir')}/disclosures?patient={person['patient']}").status_code == 403


def test_decide_over_http_explains_itself(person, make_client):  # type: ignore[no-untyped-def]
    base = person["social"].fhir_base.removesuffix("/fhir")
    request = {
        "patient": [{"system": CHI_SYSTEM, "value": CHI}],
        "actor": [{"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}],
        "purpose": "TREAT",
        "data": {"categories": ["prescribing"], "security": [{"system": ACT_CODE, "code": "OPIOIDUD"}]},
        "holder": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "S037"},
    }
    decision = person["social"].post(f"{base}/consent/$decide", request).json()
    assert decision["decision"] == "permit", decision
    assert decision["consents"] == [f"Consent/{person['consent']['id']}"]
    assert decision["agreements"][0].startswith("isa-dhscp-tayview@")
    mental_health = {**request, "data": {"categories": ["mental-health"], "security": [{"system": ACT_CODE, "code": "PSY"}]}}
    refused = person["social"].post(f"{base}/consent/$decide", mental_health).json()
    assert refused["decision"] == "deny" and refused["reasons"]
    no_purpose = person["social"].post(f"{base}/consent/$decide", {**request, "purpose": None}).json()
    assert no_purpose["decision"] == "deny" and "purpose required" in " ".join(no_purpose["reasons"])


def test_decide_finds_the_person_by_any_identifier_and_sees_a_changed_consent_at_once(person, make_client, gateway):  # type: ignore[no-untyped-def]
    base = person["social"].fhir_base.removesuffix("/fhir")
    request = {
        # An identifier nobody holds first: the person is found by the one after it.
        "patient": [{"system": CHI_SYSTEM, "value": "0101010000"}, {"system": CHI_SYSTEM, "value": CHI}],
        "actor": [{"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}],
        "purpose": "TREAT",
        "data": {"categories": ["prescribing"], "security": [{"system": ACT_CODE, "code": "OPIOIDUD"}]},
        "holder": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "S037"},
    }
    assert person["social"].post(f"{base}/consent/$decide", request).json()["decision"] == "permit"
    # The consent withdrawn by a write the serving process did not make (another process):
    # the next decision sees it, not the person the policy cached.
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        withdrawn = repo.read("Consent", person["consent"]["id"]).resource | {"status": "inactive"}
        repo.update(withdrawn, HSCP)
    after = person["social"].post(f"{base}/consent/$decide", request).json()
    assert after["decision"] != "permit", after


def test_simulation_shows_what_a_carer_would_see(person, make_client):  # type: ignore[no-untyped-def]
    ig = make_client("ig-test", HSCP, ["system/*.read", "audit.read"], roles=["ig-officer"])
    base = ig.fhir_base.removesuffix("/fhir")
    seen = ig.get(
        f"{base}/consent/$simulate",
        params={"patient": person["patient"], "recipient": person["carer"], "purpose": "carer-support", "organization": CARERS_CENTRE},
    ).json()
    assert _ids(seen) == {person["progress"]} and _withheld(seen)


def test_break_glass_is_time_boxed_audited_and_queued_for_review(person, make_client, gateway):  # type: ignore[no-untyped-def]
    duty = make_client("duty-test", "https://pathway.scot/Id/partner|tayside-advocacy", ["system/*.read", "break-glass"], roles=["break-glass"])
    emergency = {"X-Pathway-Purpose": "ETREAT"}
    assert duty.get(f"Condition/{person['depression']}", headers=emergency).status_code == 404
    base = duty.fhir_base.removesuffix("/fhir")
    body = {"patient": person["patient"], "user": "J Smith (duty social worker)", "reason": "Adult support and protection concern raised out of hours", "basis": "adult-support-protection", "hours": 4}
    too_long = duty.post(f"{base}/consent/$break-glass", {**body, "hours": 100}, headers=emergency)
    assert too_long.status_code == 422 and "72" in too_long.text
    started = duty.post(f"{base}/consent/$break-glass", body, headers=emergency)
    assert started.status_code == 201, started.text
    assert duty.get(f"Condition/{person['depression']}", headers=emergency).status_code == 200
    assert duty.get(f"Condition/{person['depression']}").status_code == 404  # only under ETREAT
    with gateway.sessions() as session:
        [pending] = pending_reviews(session)
        assert pending.patient == person["patient"]
        assert body["reason"] not in pending.reason  # the written reason is sealed at rest
        assert written(session, pending) == (body["reason"], None)
    ig = make_client("ig-test", HSCP, ["system/*.read", "audit.read"], roles=["ig-officer"])
    events = ig.get(f"AuditEvent?patient={person['patient']}&_count=200").json()
    assert any(s.get("code") == "110127" for e in events["entry"] for s in e["resource"]["subtype"])
    refused = make_client("no-role", HSCP, ["system/*.read", "break-glass"])
    assert refused.post(f"{base}/consent/$break-glass", body, headers=emergency).status_code == 403
