"""The demo partnership attacked as its own partners could: each test one finding of issue 17
(who may assert what) or issue 11 (privacy at the edges), over HTTP with the demo's clients.

Read-only attacks share one built demo (``world``); those that change what is stored get a
demo of their own (``own_world``, a second or so to build).
"""

from __future__ import annotations

import io
import re
import time
import uuid
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import MetaData, select

from gateway.client import PathwayClient
from gateway.fhir.capability import SUPPORTED_TYPES
from gateway.store.db import make_engine
from gateway.store.models import ClientRow
from mappings.identifiers import CHI_SYSTEM, make_chi
from tests.conftest import REPO
from tests.demo_world import DemoWorld, chi_of, demo_world

ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
PARTNER = "https://pathway.scot/Id/partner"
GP_PRACTICE = [{"system": ODS, "value": "21506"}, {"system": PARTNER, "value": "gp-seagate-green"}]
FACILITY = {"system": PARTNER, "value": "rehab-tayview-house"}
HSCP = {"system": ODS, "value": "S037"}
THIRD_SECTOR = {"system": PARTNER, "value": "tayside-recovery-network"}
DIRECTORY_TYPES = {"Organization", "Practitioner", "PractitionerRole"}
PERSON_TYPES = ["Patient", "Condition", "MedicationStatement", "ServiceRequest", "CarePlan", "Task"]
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
DATA_CATEGORY = "https://pathway.scot/CodeSystem/data-category"
ACTING_FOR = "X-Pathway-Acting-For"
# Patient ids as adapters/common.py derived them before issue 17: uuid5 of the CHI.
OLD_NAMESPACE = uuid.UUID("6f1c2b0e-5b7a-4c1e-9a55-7d0c6b3e2a10")
MAX_PAGES = 50


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoWorld]:
    with demo_world(tmp_path_factory.mktemp("demo")) as built:
        yield built


@pytest.fixture
def own_world(tmp_path: Path) -> Iterator[DemoWorld]:
    with demo_world(tmp_path) as built:
        yield built


# --- helpers -----------------------------------------------------------------------------------


def search_all(client: PathwayClient, path: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every entry's resource of a search, following ``next`` links (at most MAX_PAGES pages)."""
    found: list[dict[str, Any]] = []
    url: str | None = path
    for _ in range(MAX_PAGES):
        response = client.get(url, headers=headers)  # type: ignore[arg-type]
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
        bundle = response.json()
        found += [entry["resource"] for entry in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        if url is None:
            return found
    raise AssertionError(f"{path}: more than {MAX_PAGES} pages")


def records(resources: list[dict[str, Any]], resource_type: str | None = None) -> list[dict[str, Any]]:
    """The resources proper (no OperationOutcome), of one type when given."""
    return [r for r in resources if r["resourceType"] != "OperationOutcome" and resource_type in (None, r["resourceType"])]


def patients_named(value: Any) -> set[str]:
    """Every Patient a resource is about or points to (any ``Patient/...`` reference, or itself)."""
    found: set[str] = set()
    if isinstance(value, dict):
        if value.get("resourceType") == "Patient":
            found.add(f"Patient/{value.get('id')}")
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item.startswith("Patient/"):
                found.add(item.split("/_history")[0])
            else:
                found |= patients_named(item)
    elif isinstance(value, list):
        for item in value:
            found |= patients_named(item)
    return found


def categories(resource: dict[str, Any]) -> set[str]:
    return {t["code"] for t in resource.get("meta", {}).get("tag", []) if t.get("system") == DATA_CATEGORY}


def recipient(identifier: dict[str, str]) -> dict[str, Any]:
    role = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}
    return {"role": role, "reference": {"identifier": identifier}}


def consent(patient: dict[str, Any], provision: dict[str, Any], organization: dict[str, Any] | None = None) -> dict[str, Any]:
    """A privacy Consent the person signed (performer: the person), as a partner would POST it."""
    body: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": patient,
        "dateTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "performer": [patient],
        "provision": provision,
    }
    if organization:
        body["organization"] = [organization]
    return body


def permit(actor: dict[str, str], purposes: list[str], period: dict[str, str] | None = None) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [recipient(actor)],
        "purpose": [{"system": ACT_REASON, "code": p} for p in purposes],
    }
    if period:
        provision["period"] = period
    return provision


def by_chi(chi: str) -> dict[str, Any]:
    return {"identifier": {"system": CHI_SYSTEM, "value": chi}}


def unused_chi(world: DemoWorld) -> str:
    """A well-formed CHI that no demo person has."""
    chi = make_chi(date(1979, 2, 3), "male", 3)
    assert chi not in {chi_of(p) for p in world.people}
    return chi


def sees_of_person(client: PathwayClient, patient_id: str) -> dict[str, int]:
    """How many resources of each person-level type ``client`` receives about the person."""
    seen = {"Patient": 1 if client.get(f"Patient/{patient_id}").status_code == 200 else 0}
    for resource_type in PERSON_TYPES[1:]:
        seen[resource_type] = len(records(search_all(client, f"{resource_type}?patient=Patient/{patient_id}"), resource_type))
    return seen


def visible_counts(client: PathwayClient) -> dict[str, int]:
    return {t: len(records(search_all(client, f"{t}?_count=100"), t)) for t in ("Patient", "Condition", "MedicationStatement")}


def without_volatile(value: Any) -> Any:
    """A response with what differs between any two responses (ids, times, links) taken out."""
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in ("id", "lastUpdated", "link", "fullUrl")}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def diagnostics(response: Any, *names: str) -> list[str]:
    """An OperationOutcome's diagnostics with the given ids/identifiers replaced by a placeholder."""
    texts = [issue.get("diagnostics", "") for issue in response.json().get("issue", [])]
    for name in names:
        texts = [t.replace(name, "{named}") for t in texts]
    return texts


def delete(client: PathwayClient, path: str) -> Any:
    return client.request("DELETE", path)


# --- issue 17: who may say what ------------------------------------------------------------------


@pytest.mark.parametrize("whom", ["opted out of sharing", "registered with the GP, no grant to it"])
def test_gp_cannot_grant_itself_access_by_forging_a_consent(own_world: DemoWorld, whom: str) -> None:
    gp, social_work = own_world.client("gp-practice"), own_world.client("social-work")
    if whom == "opted out of sharing":  # a stranger to the GP
        person = own_world.opted_out()
    else:  # the GP holds their Conditions, but their consent shares the HSCP's records with others only
        person = next(p for p in own_world.people if p.stage == "resource-allocation")
        assert person.patient["generalPractitioner"][0]["reference"] == "Organization/gp-seagate-green"
    patient_id, chi = own_world.patient_id(person), chi_of(person)
    before = sees_of_person(gp, patient_id)
    assert [before[t] for t in ("Patient", "ServiceRequest", "CarePlan", "Task")] == [0, 0, 0, 0], before
    assert sees_of_person(social_work, patient_id)["Task"] == 1  # the data is there: the referral's Task

    forged = consent(
        {"reference": f"Patient/{patient_id}", **by_chi(chi)},
        permit(GP_PRACTICE[0], ["TREAT", "CAREMGT"]),
        {"identifier": GP_PRACTICE[0]},
    )
    answer = gp.post("Consent", forged)
    # Refused outright (403), refused as about a person the GP may not know of (422, what a
    # person who does not exist gets), or stored but without effect: never a grant.
    assert answer.status_code in (201, 403, 422), answer.text

    assert sees_of_person(gp, patient_id) == before
    request = {"patient": [{"system": CHI_SYSTEM, "value": chi}], "actor": GP_PRACTICE, "purpose": "TREAT"}
    decided = social_work.post(f"{own_world.url}/consent/$decide", request)
    assert decided.status_code == 200, decided.text
    decision = decided.json()
    assert decision["decision"] == "deny", decision
    if answer.status_code == 201:
        forged_ref = f"Consent/{answer.json()['id']}"
        assert forged_ref not in decision["consents"], decision
        assert any(forged_ref in reason for reason in decision["reasons"]), f"no reason says the forged grant was ignored: {decision}"


def test_a_gp_holding_a_persons_records_may_record_their_refusal(own_world: DemoWorld) -> None:
    """The other side of the rule: a refusal counts from any partner with a relationship to the person."""
    gp, social_work = own_world.client("gp-practice"), own_world.client("social-work")
    person = next(p for p in own_world.people if p.stage == "resource-allocation")  # permits the recovery service
    patient_id, chi = own_world.patient_id(person), chi_of(person)
    assert len(records(search_all(gp, f"Condition?patient=Patient/{patient_id}"), "Condition")) == 2  # the GP's own
    recovery_service = {"system": ODS, "value": "S037R1"}
    request = {"patient": [{"system": CHI_SYSTEM, "value": chi}], "actor": [recovery_service], "purpose": "CAREMGT"}
    assert social_work.post(f"{own_world.url}/consent/$decide", request).json()["decision"] == "permit"

    refusal = {"type": "deny", "actor": [recipient(recovery_service)]}
    recorded = gp.post("Consent", consent({"reference": f"Patient/{patient_id}"}, refusal, {"identifier": GP_PRACTICE[0]}))
    assert recorded.status_code == 201, recorded.text
    decision = social_work.post(f"{own_world.url}/consent/$decide", request).json()
    assert decision["decision"] == "deny" and f"Consent/{recorded.json()['id']}" in decision["consents"], decision


def test_third_sector_cannot_publish_or_change_the_directory(own_world: DemoWorld) -> None:
    third_sector = own_world.client("third-sector")
    before = visible_counts(third_sector)

    impostor = {
        "resourceType": "Organization",
        "active": True,
        "name": "Tayside Recovery Network",
        "identifier": [THIRD_SECTOR, FACILITY, HSCP],
    }
    published = third_sector.post("Organization", impostor)
    assert published.status_code == 403, published.text
    for organization_id in ("tayside-recovery-network", "rehab-tayview-house"):
        entry = third_sector.get(f"Organization/{organization_id}")
        assert entry.status_code == 200, entry.text
        changed = {**entry.json(), "identifier": [*entry.json()["identifier"], HSCP, FACILITY]}
        assert third_sector.put(f"Organization/{organization_id}", changed).status_code == 403
        assert delete(third_sector, f"Organization/{organization_id}").status_code == 403

    own_world.restart()
    third_sector = own_world.client("third-sector")
    assert visible_counts(third_sector) == before
    listed = records(search_all(third_sector, f"Organization?identifier={FACILITY['system']}|{FACILITY['value']}"))
    assert [o["id"] for o in listed] == ["rehab-tayview-house"]


def test_facility_cannot_delete_a_pathway_task_or_recreate_it(own_world: DemoWorld) -> None:
    facility, social_work = own_world.client("rehab-facility"), own_world.client("social-work")
    person = next(p for p in own_world.people if p.stage == "residential" and p.facility == "rehab-tayview-house")
    patient_id = own_world.patient_id(person)
    tasks = {t["id"]: t for t in records(search_all(social_work, f"Task?patient=Patient/{patient_id}"), "Task")}
    stay = next(t for t in tasks.values() if t["owner"]["reference"] == "Organization/rehab-tayview-house")
    assert len(tasks) == 2 and stay["status"] == "in-progress"  # the pathway Task and the facility's stay

    for task_id in tasks:
        refused = delete(facility, f"Task/{task_id}")
        assert refused.status_code == 403, f"Task/{task_id}: {refused.status_code} {refused.text}"
    moved_away = {**stay, "status": "completed", "owner": {"reference": "Organization/rehab-lomond-brae"}}
    moved_away.pop("meta")
    recreated = facility.put(f"Task/{stay['id']}", moved_away)
    assert recreated.status_code in (403, 409), recreated.text

    for task_id, task in tasks.items():
        now = social_work.get(f"Task/{task_id}")
        assert now.status_code == 200, now.text
        assert (now.json()["meta"]["versionId"], now.json()["status"]) == (task["meta"]["versionId"], task["status"])


def test_another_organisation_cannot_put_back_a_resource_the_hscp_deleted(own_world: DemoWorld) -> None:
    social_work, gp = own_world.client("social-work"), own_world.client("gp-practice")
    person = next(p for p in own_world.people if p.stage == "assessment")
    patient_id = own_world.patient_id(person)
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Key worker note: attended group"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    created = social_work.post("Observation", observation)
    assert created.status_code == 201, created.text
    observation_id = created.json()["id"]
    assert delete(social_work, f"Observation/{observation_id}").status_code == 204

    squatted = gp.put(f"Observation/{observation_id}", {**observation, "id": observation_id, "code": {"text": "planted"}})
    assert squatted.status_code in (403, 404), squatted.text  # 404: the GP may not know of this person at all
    assert social_work.get(f"Observation/{observation_id}").status_code == 410


def test_a_person_with_no_relationship_is_indistinguishable_from_no_person(own_world: DemoWorld) -> None:
    third_sector = own_world.client("third-sector")  # no agreement covers the opted-out person's data
    person = own_world.opted_out()
    patient_id, chi, absent_chi, absent_id = own_world.patient_id(person), chi_of(person), unused_chi(own_world), str(uuid.uuid4())

    def same_search(path_for: Any) -> None:
        known, unknown = third_sector.get(path_for(patient_id, chi)), third_sector.get(path_for(absent_id, absent_chi))
        assert known.status_code == unknown.status_code == 200
        assert without_volatile(known.json()) == without_volatile(unknown.json()), f"{path_for(patient_id, chi)}: {known.text[:400]}"

    same_search(lambda _, c: f"Patient?identifier={CHI_SYSTEM}|{c}")
    for resource_type in PERSON_TYPES[1:]:
        same_search(lambda p, _: f"{resource_type}?patient=Patient/{p}")

    known, unknown = third_sector.get(f"Patient/{patient_id}"), third_sector.get(f"Patient/{absent_id}")
    assert known.status_code == unknown.status_code == 404
    assert diagnostics(known, patient_id) == diagnostics(unknown, absent_id)

    refusal = {"type": "deny", "actor": [recipient(FACILITY)]}
    known, unknown = third_sector.post("Consent", consent(by_chi(chi), refusal)), third_sector.post("Consent", consent(by_chi(absent_chi), refusal))
    assert known.status_code == unknown.status_code, f"{known.status_code} {known.text[:300]} / {unknown.status_code} {unknown.text[:300]}"
    assert diagnostics(known, chi) == diagnostics(unknown, absent_chi)

    package = third_sector.get(f"Task/{uuid.uuid4()}/$package")
    assert package.status_code == 404, package.text


def _socialwork_case(chi: str) -> bytes:
    case = {
        "case_id": "SW-ATTACK-1",
        "chi": chi,
        "names": {"given": ["Morgan"], "family": "Threipland"},
        "birth_date": "1979-02-03",
        "sex": "male",
    }
    return orjson.dumps([case])


def test_patient_ids_are_not_derived_from_the_chi_and_cannot_be_squatted(own_world: DemoWorld) -> None:
    social_work, third_sector = own_world.client("social-work"), own_world.client("third-sector")
    newcomer = unused_chi(own_world)
    ingested = social_work.post(f"{own_world.url}/ingest/socialwork", content=_socialwork_case(newcomer), headers={"Content-Type": "application/json"})
    assert ingested.status_code == 200 and ingested.json()["accepted"] == 1, ingested.text
    people = {chi: social_work.get(f"Patient?identifier={CHI_SYSTEM}|{chi}").json() for chi in [*map(chi_of, own_world.people), newcomer]}
    for chi, bundle in people.items():
        (patient,) = records([e["resource"] for e in bundle.get("entry", [])], "Patient")
        assert patient["id"] != str(uuid.uuid5(OLD_NAMESPACE, f"person/chi/{chi}")), f"Patient/{patient['id']} is uuid5 of CHI {chi}"

    squatter_chi = make_chi(date(1983, 7, 9), "female", 1)
    for chosen_id in (str(uuid.uuid5(OLD_NAMESPACE, f"person/chi/{squatter_chi}")), str(uuid.uuid4())):
        planted = {
            "resourceType": "Patient",
            "id": chosen_id,
            "identifier": [{"system": CHI_SYSTEM, "value": squatter_chi}],
            "name": [{"family": "Planted"}],
            "gender": "female",
            "birthDate": "1983-07-09",
        }
        answer = third_sector.put(f"Patient/{chosen_id}", planted)
        assert answer.status_code in (403, 404, 405), f"PUT Patient/{chosen_id}: {answer.status_code} {answer.text[:300]}"
        assert social_work.get(f"Patient/{chosen_id}").status_code == 404


def test_consent_naming_a_person_by_chi_is_linked_to_them_not_to_a_decoy(own_world: DemoWorld) -> None:
    social_work, third_sector = own_world.client("social-work"), own_world.client("third-sector")
    person = next(p for p in own_world.people if p.stage == "initial-meeting")
    patient_id, chi = own_world.patient_id(person), chi_of(person)
    decoy = third_sector.post(
        "Patient", {"resourceType": "Patient", "identifier": [{"system": "https://example.org/local-id", "value": chi}], "name": [{"family": "Decoy"}]}
    )
    assert decoy.status_code == 201, decoy.text

    recorded = social_work.post("Consent", consent(by_chi(chi), {"type": "deny", "actor": [recipient(THIRD_SECTOR)]}, {"identifier": HSCP}))
    assert recorded.status_code == 201, recorded.text
    stored = social_work.get(f"Consent/{recorded.json()['id']}").json()
    assert stored["patient"].get("reference") == f"Patient/{patient_id}", stored["patient"]


def test_a_transaction_delete_is_in_the_persons_audit_trail(own_world: DemoWorld) -> None:
    social_work, ig_officer = own_world.client("social-work"), own_world.client("ig-officer")
    person = next(p for p in own_world.people if p.stage == "preparation")
    patient_id = own_world.patient_id(person)
    note = {"resourceType": "Observation", "status": "final", "code": {"text": "Missed appointment"}, "subject": {"reference": f"Patient/{patient_id}"}}
    created = social_work.post("Observation", note)
    assert created.status_code == 201, created.text
    target = f"Observation/{created.json()['id']}"

    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": target}}]}
    applied = social_work.post("", bundle)
    assert applied.status_code == 200, applied.text
    assert social_work.get(target).status_code == 410

    trail = search_all(ig_officer, f"{own_world.url}/fhir/AuditEvent?patient=Patient/{patient_id}&_count=200")
    deletions = [
        event
        for event in trail
        if event["subtype"][0]["code"] in ("transaction", "delete")
        and any(e["what"].get("reference", "").split("/_history")[0] == target for e in event.get("entity", []))
    ]
    assert deletions, f"no deletion of {target} among {len(trail)} AuditEvents for Patient/{patient_id}"
    entities = {e["what"].get("reference") for e in deletions[0]["entity"]}
    assert f"Patient/{patient_id}" in entities, deletions[0]


def test_a_disabled_clients_token_is_refused_on_every_route(own_world: DemoWorld) -> None:
    social_work, ig_officer = own_world.client("social-work"), own_world.client("ig-officer")
    person = next(p for p in own_world.people if p.stage == "residential" and p.facility)
    patient_id = own_world.patient_id(person)
    tasks = records(search_all(social_work, f"Task?patient=Patient/{patient_id}"), "Task")
    task_id = next(t["id"] for t in tasks if t["owner"]["reference"] == "Organization/dundee-hscp")
    base = own_world.url
    decide = {"patient": [{"system": CHI_SYSTEM, "value": chi_of(person)}], "actor": [FACILITY], "purpose": "TREAT"}
    calls = [
        (social_work, "GET", f"{base}/fhir/Patient", {}),
        (social_work, "POST", f"{base}/ingest/socialwork", {"content": b"[]", "headers": {"Content-Type": "application/json"}}),
        (social_work, "POST", f"{base}/consent/$decide", {"json": decide}),
        (social_work, "GET", f"{base}/fhir/Task/{task_id}/$package", {}),
        (social_work, "GET", f"{base}/ingest/quarantine", {}),
        (social_work, "GET", f"{base}/pathway/metrics", {}),
        (ig_officer, "GET", f"{base}/fhir/AuditEvent?patient=Patient/{patient_id}", {}),
        (ig_officer, "GET", f"{base}/disclosures?patient=Patient/{patient_id}", {}),
    ]
    for client, method, url, extra in calls:
        answer = client.request(method, url, **extra)
        assert answer.status_code == 200, f"before: {method} {url}: {answer.status_code} {answer.text[:200]}"

    assert own_world.gateway is not None
    with own_world.gateway.transaction() as session:
        for row in session.scalars(select(ClientRow).where(ClientRow.id.in_(["social-work", "ig-officer"]))):
            row.active = False
    time.sleep(1.2)  # the gateway may take up to a second to notice a disabled client

    refused = {}
    for client, method, url, extra in calls:
        answer = client.request(method, url, **extra)  # the token fetched before the client was disabled
        refused[f"{method} {url.removeprefix(base)}"] = answer.status_code
    assert refused == dict.fromkeys(refused, 401)


# --- issue 11: privacy at the edges ------------------------------------------------------------


def test_portal_sees_only_the_person_it_acts_for_and_only_what_they_granted(world: DemoWorld) -> None:
    social_work, portal = world.client("social-work"), world.client("carer-portal")
    carers = records(search_all(social_work, "RelatedPerson?_count=100"), "RelatedPerson")
    patients = records(search_all(social_work, "Patient?_count=100"), "Patient")
    assert len(carers) == sum(len(p.related) for p in world.people) and len(patients) == len(world.people)
    acting = [(f"RelatedPerson/{c['id']}", c["patient"]["reference"]) for c in carers]
    acting += [(f"Patient/{p['id']}", f"Patient/{p['id']}") for p in patients]
    # Carers whose person granted them pathway-progress (a second Consent), known by their identifier.
    granted_carers = {r["identifier"][0]["value"] for p in world.people if len(p.consents) > 1 for r in p.related}
    granted = {c["id"] for c in carers if c["identifier"][0]["value"] in granted_carers}
    assert granted

    strays: list[str] = []
    seen_by_granted_carers = 0
    for actor, person in acting:
        headers = {ACTING_FOR: actor}
        for resource_type in SUPPORTED_TYPES:
            for resource in records(search_all(portal, f"{resource_type}?_count=100", headers)):
                if resource["resourceType"] in DIRECTORY_TYPES:
                    continue
                versions = records(search_all(portal, f"{resource['resourceType']}/{resource['id']}/_history", headers))
                for shown in [resource, *versions]:
                    about = patients_named(shown)
                    if about != {person}:
                        strays.append(f"{actor} for {person} got {shown['resourceType']}/{shown['id']} about {sorted(about)}")
                    if actor.startswith("RelatedPerson/") and not categories(shown) <= {"pathway-progress"}:
                        strays.append(f"{actor} got {shown['resourceType']}/{shown['id']} labelled {sorted(categories(shown))}")
                seen_by_granted_carers += actor.removeprefix("RelatedPerson/") in granted
    assert not strays, f"{len(strays)} disclosures beyond the person acted for or their grant, e.g. {strays[:5]}"
    assert seen_by_granted_carers > 0  # carers whose person granted them pathway-progress do see it


def test_a_consent_that_ends_stops_sharing_at_its_end_without_a_restart(own_world: DemoWorld) -> None:
    social_work, facility = own_world.client("social-work"), own_world.client("rehab-facility")
    person = next(p for p in own_world.people if p.stage == "initial-meeting")  # no facility grant of their own
    patient_id = own_world.patient_id(person)
    assert facility.get(f"Patient/{patient_id}").status_code == 404

    now = datetime.now(timezone.utc).replace(microsecond=0)
    ends = now + timedelta(seconds=5)
    period = {"start": (now - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"), "end": ends.isoformat().replace("+00:00", "Z")}
    recorded = social_work.post(
        "Consent",
        consent({"reference": f"Patient/{patient_id}", **by_chi(chi_of(person))}, permit(FACILITY, ["TREAT", "CAREMGT"], period), {"identifier": HSCP}),
    )
    assert recorded.status_code == 201, recorded.text
    assert facility.get(f"Patient/{patient_id}").status_code == 200
    assert records(search_all(facility, f"Task?patient=Patient/{patient_id}"), "Task")

    time.sleep(max(0.0, (ends - datetime.now(timezone.utc)).total_seconds()) + 1.5)
    assert facility.get(f"Patient/{patient_id}").status_code == 404
    assert records(search_all(facility, f"Task?patient=Patient/{patient_id}")) == []


def _emis_zip(edit: Any = None) -> bytes:
    """The hand-made EMIS extract (tests/fixtures/emis) as a zip, each file passed through ``edit``."""
    folder = REPO / "tests" / "fixtures" / "emis" / "extract"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            body = path.read_text(encoding="utf-8-sig")
            archive.writestr(path.name, edit(path.name, body) if edit else body)
    return buffer.getvalue()


def _tampered(name: str, body: str) -> str:
    """Every row deleted, every free-text value changed."""
    body = re.sub(r"(?i),false(?=,|\r?$)", ",true", body, flags=re.MULTILINE) if name != "Coding_ClinicalCode.csv" else body
    return body.replace("Opioid", "Tampered").replace("methadone", "tampered")


def test_another_organisation_cannot_change_or_delete_the_gps_ingested_records(own_world: DemoWorld) -> None:
    gp, recovery = own_world.client("gp-practice"), own_world.client("recovery-service")
    zip_headers = {"Content-Type": "application/zip"}
    first = gp.post(f"{own_world.url}/ingest/emis", content=_emis_zip(), headers=zip_headers)
    assert first.status_code == 200 and first.json()["accepted"] > 0, first.text
    held = ("Patient", "Condition", "Observation", "MedicationStatement", "Encounter")

    def gp_records() -> dict[str, tuple[str, str]]:
        return {
            f"{r['resourceType']}/{r['id']}": (r["meta"]["versionId"], orjson.dumps(r, option=orjson.OPT_SORT_KEYS).decode())
            for t in held
            for r in records(search_all(gp, f"{t}?_count=100"), t)
            if r["meta"].get("source", "").startswith("https://pathway.scot/source/emis/")
        }

    before = gp_records()
    assert before
    second = recovery.post(f"{own_world.url}/ingest/emis", content=_emis_zip(_tampered), headers=zip_headers)
    assert second.status_code in (200, 403, 422), second.text
    assert gp_records() == before


def test_the_database_holds_no_demo_person_in_plaintext(world: DemoWorld) -> None:
    names = {n for p in world.people for r in (p.patient, *p.related) for name in r["name"] for n in (name["family"], *name["given"])}
    chis = {chi_of(p) for p in world.people}
    word = re.compile(r"\b(" + "|".join(sorted(names)) + r")\b", re.IGNORECASE)
    found: list[str] = []
    engine = make_engine(world.settings.database_url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as connection:
            for table in metadata.sorted_tables:
                for row in connection.execute(table.select()):
                    for column, value in zip(table.columns, row):
                        if isinstance(value, (bytes, memoryview)):
                            data = bytes(value)
                            hits = [c for c in chis if c.encode() in data] + [n for n in names if f'"{n}"'.encode() in data]
                        elif isinstance(value, str):
                            hits = [c for c in chis if c in value] + word.findall(value)
                        else:
                            continue
                        found += [f"{table.name}.{column.name}: {hit}" for hit in hits]
    finally:
        engine.dispose()
    assert not found, f"{len(found)} plaintext occurrences, e.g. {sorted(set(found))[:10]}"
