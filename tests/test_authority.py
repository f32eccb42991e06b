"""Who may say what, and who learns what: consent grants only from authorised recorders, the
directory only from conf/, workflow records cancelled not deleted, keyed identities, portals
that see one person, decisions that expire on time, and no answer to "is this person here"."""

from __future__ import annotations

import time
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select

from gateway.store.models import AuditRow
from mappings.identifiers import CHI_SYSTEM, make_chi

from .conftest import HSCP, ODS, PARTNER, privacy_consent
from .test_sharing import ACT_CODE, CARERS_CENTRE, CATEGORY, FACILITY, labelled, partnership, person  # noqa: F401

GP = f"{ODS}|21506"
THIRD_SECTOR = f"{PARTNER}|tayside-recovery-network"


def _actor(system_value: str) -> list[dict[str, Any]]:
    system, _, value = system_value.partition("|")
    return [{"role": {"text": "recipient"}, "reference": {"identifier": {"system": system, "value": value}}}]


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] != "OperationOutcome"}


def _comparable(response: Any) -> tuple[int, Any]:
    """A response without what differs between any two calls (ids, times, links)."""
    body = response.json()
    if body.get("resourceType") == "Bundle":
        return response.status_code, [e["resource"] for e in body.get("entry", [])]
    return response.status_code, body.get("issue")


def test_a_grant_from_an_organisation_not_authorised_to_record_consent_is_refused_and_ignored(person, make_client, gateway):  # type: ignore[no-untyped-def]
    gp = make_client("gp-test", GP, ["system/*.read", "system/*.write"])
    facility = make_client("facility-test", FACILITY, ["system/*.read", "system/*.write"])
    # The facility may see Ann (her consent permits it) but may not record a grant for anyone.
    grant = privacy_consent(person["patient"], {"type": "permit", "actor": _actor(GP)})
    refused = facility.post("Consent", grant)
    assert refused.status_code == 403 and "authorises to record consent" in refused.text
    # A grant that reached the store some other way (an older database) counts for nothing.
    grant["id"] = str(uuid.uuid4())
    with gateway.transaction() as session:
        gateway.repository(session).create(labelled(grant, ["demographics"]), FACILITY)
    assert gp.get(f"MedicationStatement/{person['methadone']}").status_code == 404
    decision = person["social"].request(
        "POST",
        person["social"].fhir_base.removesuffix("/fhir") + "/consent/$decide",
        json={"patient": [{"system": "reference", "value": person["patient"]}], "actor": [{"system": ODS, "value": "21506"}], "purpose": "TREAT"},
    ).json()
    assert decision["decision"] != "permit"
    assert any(f"Consent/{grant['id']}" in r and "not authorised to record consent grants" in r for r in decision["reasons"])


def test_a_refusal_from_a_partner_that_knows_the_person_counts(person, make_client):  # type: ignore[no-untyped-def]
    facility = make_client("facility-test", FACILITY, ["system/*.read", "system/*.write"])
    assert facility.get(f"MedicationStatement/{person['methadone']}").status_code == 200
    refusal = facility.post("Consent", privacy_consent(person["patient"], {"type": "deny", "actor": _actor(FACILITY)}))
    assert refusal.status_code == 201, refusal.text
    assert facility.get(f"MedicationStatement/{person['methadone']}").status_code == 404


def test_partners_cannot_write_the_directory_and_cannot_borrow_another_organisations_identity(person, make_client, gateway):  # type: ignore[no-untyped-def]
    third = make_client("third-sector-test", THIRD_SECTOR, ["system/*.read", "system/*.write"])
    before = _ids(third.get(f"MedicationStatement?patient={person['patient']}").json())
    impostor = {
        "resourceType": "Organization",
        "identifier": [
            {"system": PARTNER, "value": "tayside-recovery-network"},
            {"system": PARTNER, "value": "rehab-tayview-house"},
            {"system": ODS, "value": "S037"},
        ],
        "name": "Tayview House Residential Rehabilitation",
    }
    assert third.post("Organization", impostor).status_code == 403
    directory_entry = third.get("Organization/rehab-tayview-house").json()
    assert third.put("Organization/rehab-tayview-house", {**directory_entry, "name": "Renamed"}).status_code == 403
    assert third.request("DELETE", "Organization/rehab-tayview-house").status_code == 403
    assert third.post("Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Look-alike"}]}).status_code == 403
    # Even an impostor already in the store (written before these rules) lends no identity.
    impostor["id"] = str(uuid.uuid4())
    with gateway.transaction() as session:
        gateway.repository(session).create(impostor, THIRD_SECTOR)
    restarted = make_client("third-sector-after", THIRD_SECTOR, ["system/*.read"])
    assert _ids(restarted.get(f"MedicationStatement?patient={person['patient']}").json()) == before == set()


def test_pathway_records_are_cancelled_not_deleted_and_a_deleted_id_stays_its_holders(person, make_client):  # type: ignore[no-untyped-def]
    social = person["social"]
    facility = make_client("facility-test", FACILITY, ["system/*.read", "system/*.write"])
    episode = person["progress"]
    assert social.request("DELETE", f"EpisodeOfCare/{episode}").status_code == 403
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": f"EpisodeOfCare/{episode}"}}]}
    assert social.post("", bundle).status_code == 403
    assert social.get(f"EpisodeOfCare/{episode}").json()["meta"]["versionId"] == "1"

    note = social.post("Observation", labelled({"resourceType": "Observation", "status": "final", "code": {"text": "Breath alcohol"}, "subject": {"reference": person["patient"]}}, ["substance-use"])).json()
    assert social.request("DELETE", f"Observation/{note['id']}").status_code == 204
    revived = {k: v for k, v in note.items() if k != "meta"} | {"status": "amended"}
    assert facility.put(f"Observation/{note['id']}", revived).status_code in (403, 404)
    assert social.get(f"Observation/{note['id']}").status_code == 410
    assert social.put(f"Observation/{note['id']}", revived).status_code == 200


def test_a_partner_cannot_choose_the_id_of_a_new_patient(make_client, partnership):  # type: ignore[no-untyped-def]
    social = make_client("social-test", HSCP)
    chosen = str(uuid.uuid4())
    body = {"resourceType": "Patient", "id": chosen, "identifier": [{"system": CHI_SYSTEM, "value": make_chi(date(1990, 2, 3), "male", 1)}], "gender": "male", "birthDate": "1990-02-03"}
    assert social.put(f"Patient/{chosen}", body).status_code == 404
    assert social.get(f"Patient/{chosen}").status_code == 404


def test_a_consent_naming_the_person_by_chi_is_linked_to_them_not_to_a_decoy(person, make_client):  # type: ignore[no-untyped-def]
    social = person["social"]
    chi = next(i["value"] for i in social.get(person["patient"]).json()["identifier"] if i["system"] == CHI_SYSTEM)
    decoy = social.post("Patient", {"resourceType": "Patient", "identifier": [{"system": "https://example.org/local-id", "value": chi}]}).json()
    consent = privacy_consent(person["patient"], {"type": "deny", "actor": _actor(THIRD_SECTOR)})
    consent["patient"] = {"identifier": {"system": CHI_SYSTEM, "value": chi}}
    stored = social.post("Consent", consent)
    assert stored.status_code == 201, stored.text
    assert stored.json()["patient"]["reference"] == person["patient"] != f"Patient/{decoy['id']}"


def test_a_delete_in_a_transaction_is_in_the_audit_of_the_person(person, make_client, gateway):  # type: ignore[no-untyped-def]
    social = person["social"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": f"Condition/{person['depression']}"}}]}
    assert social.post("", bundle).status_code == 200
    with gateway.reading() as session:
        rows = session.scalars(select(AuditRow).order_by(AuditRow.seq.desc()).limit(5)).all()
    ig = make_client("ig-test", HSCP, ["system/*.read", "audit.read"], roles=["ig-officer"])
    events = ig.get(f"AuditEvent?patient={person['patient']}&_count=100").json()
    deletes = [e["resource"] for e in events.get("entry", []) if "transaction" in str(e["resource"].get("subtype", "")) or e["resource"].get("action") == "D"]
    assert rows and any(
        any(f"Condition/{person['depression']}" in str(entity.get("what", {}).get("reference", "")) for entity in event.get("entity", []))
        for event in deletes
    ), events


def test_a_portal_sees_only_the_person_it_acts_for_and_only_what_they_granted(person, make_client):  # type: ignore[no-untyped-def]
    social = person["social"]
    other = social.post(
        "Patient",
        {"resourceType": "Patient", "identifier": [{"system": CHI_SYSTEM, "value": make_chi(date(1979, 8, 9), "male", 3)}], "gender": "male", "birthDate": "1979-08-09"},
    ).json()
    other_ref = f"Patient/{other['id']}"
    other_episode = social.post("EpisodeOfCare", labelled({"resourceType": "EpisodeOfCare", "status": "active", "patient": {"reference": other_ref}}, ["pathway-progress"])).json()
    # Bob grants the carers' centre as an organisation: that reaches none of its users.
    grant = privacy_consent(other_ref, {"type": "permit", "actor": _actor(CARERS_CENTRE), "purpose": [{"system": "https://pathway.scot/CodeSystem/purpose", "code": "carer-support"}]})
    assert social.post("Consent", grant).status_code == 201
    portal = make_client("carer-portal-test", CARERS_CENTRE, ["system/*.read"], kind="portal")
    for acting in (person["carer"], person["patient"], other_ref):
        headers = {"X-Pathway-Acting-For": acting, "X-Pathway-Purpose": "carer-support"}
        subject = other_ref if acting == other_ref else person["patient"]
        for resource_type in ("Patient", "RelatedPerson", "EpisodeOfCare", "Condition", "MedicationStatement", "Consent", "Task"):
            bundle = portal.get(resource_type, headers=headers).json()
            for entry in bundle.get("entry", []):
                resource = entry["resource"]
                if resource["resourceType"] == "OperationOutcome":
                    continue
                about = f"Patient/{resource['id']}" if resource["resourceType"] == "Patient" else (resource.get("patient") or resource.get("subject") or resource.get("for") or {}).get("reference")
                assert about == subject, (acting, resource_type, resource["id"])
    carer = {"X-Pathway-Acting-For": person["carer"], "X-Pathway-Purpose": "carer-support"}
    assert _ids(portal.get("EpisodeOfCare", headers=carer).json()) == {person["progress"]}
    assert portal.get(f"EpisodeOfCare/{other_episode['id']}", headers=carer).status_code == 404
    assert portal.get(f"MedicationStatement/{person['methadone']}", headers=carer).status_code == 404
    bob = {"X-Pathway-Acting-For": other_ref, "X-Pathway-Purpose": "carer-support"}
    assert _ids(portal.get("EpisodeOfCare", headers=bob).json()) == set()


def test_a_consent_that_ends_while_the_gateway_runs_stops_permitting_at_its_end(make_client, partnership):  # type: ignore[no-untyped-def]
    social = make_client("social-test", HSCP, ["system/*.read", "system/*.write"])
    facility = make_client("facility-test", FACILITY, ["system/*.read"])
    chi = make_chi(date(1988, 11, 12), "female", 4)
    patient = social.post("Patient", {"resourceType": "Patient", "identifier": [{"system": CHI_SYSTEM, "value": chi}], "gender": "female", "birthDate": "1988-11-12"}).json()
    ref = f"Patient/{patient['id']}"
    ends = datetime.now(timezone.utc) + timedelta(seconds=3)
    consent = privacy_consent(ref, {"type": "permit", "actor": _actor(FACILITY), "period": {"start": "2020-01-01", "end": ends.isoformat(timespec="milliseconds").replace("+00:00", "Z")}})
    assert social.post("Consent", consent).status_code == 201
    assert facility.get(ref).status_code == 200
    assert patient["id"] in _ids(facility.get(f"Patient?identifier={CHI_SYSTEM}|{chi}").json())
    time.sleep(max(0.0, (ends - datetime.now(timezone.utc)).total_seconds()) + 0.5)
    assert facility.get(ref).status_code == 404
    assert _ids(facility.get(f"Patient?identifier={CHI_SYSTEM}|{chi}").json()) == set()


def test_a_partner_cannot_tell_an_unseen_person_from_one_who_does_not_exist(person, make_client):  # type: ignore[no-untyped-def]
    third = make_client("third-sector-test", THIRD_SECTOR, ["system/*.read", "system/*.write"])
    social = person["social"]
    chi = next(i["value"] for i in social.get(person["patient"]).json()["identifier"] if i["system"] == CHI_SYSTEM)
    unused = make_chi(date(1984, 5, 17), "female", 7)
    assert _comparable(third.get(f"Patient?identifier={CHI_SYSTEM}|{chi}")) == _comparable(third.get(f"Patient?identifier={CHI_SYSTEM}|{unused}"))
    assert _comparable(third.get(f"Condition?patient={person['patient']}")) == _comparable(third.get(f"Condition?patient=Patient/{uuid.uuid4()}"))
    seen, unseen = third.get(person["patient"]), third.get(f"Patient/{uuid.uuid4()}")
    assert seen.status_code == unseen.status_code == 404
    assert seen.json()["issue"][0]["diagnostics"].split(" ")[1:] == unseen.json()["issue"][0]["diagnostics"].split(" ")[1:]
    refusal = lambda value: privacy_consent(person["patient"], {"type": "deny"}) | {"patient": {"identifier": {"system": CHI_SYSTEM, "value": value}}}  # noqa: E731
    assert _comparable(third.post("Consent", refusal(chi))) == _comparable(third.post("Consent", refusal(unused)))
    assert third.get(f"Task/{uuid.uuid4()}/$package").status_code == 404
