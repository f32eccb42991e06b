"""The FHIR REST API over real HTTP: CRUD, versions, search, transactions, errors."""

from __future__ import annotations

import threading
from datetime import date

import httpx

from mappings.identifiers import CHI_SYSTEM, make_chi

from .conftest import FACILITY


def patient(given: str = "Ann", family: str = "Reid", born: date = date(1980, 1, 1), serial: int = 0) -> dict:  # type: ignore[type-arg]
    return {
        "resourceType": "Patient",
        "identifier": [{"system": CHI_SYSTEM, "value": make_chi(born, "female", serial)}],
        "name": [{"given": [given], "family": family}],
        "gender": "female",
        "birthDate": born.isoformat(),
        "address": [{"line": ["2 Hill St"], "city": "Dundee", "postalCode": "DD3 6AB"}],
    }


def test_metadata_lists_what_is_supported(server):  # type: ignore[no-untyped-def]
    statement = httpx.get(f"{server.url}/fhir/metadata").json()
    assert statement["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {"Patient", "Task", "ServiceRequest", "Consent", "Communication"} <= set(types)
    task_params = {p["name"] for p in types["Task"]["searchParam"]}
    assert {"owner", "focus", "part-of", "status", "patient", "identifier"} <= task_params
    assert "owner" not in {p["name"] for p in types["Patient"]["searchParam"]}


def test_create_read_update_vread_history(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    created = client.post("Patient", patient())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["meta"]["versionId"] == "1" and created.headers["ETag"] == 'W/"1"'
    assert created.headers["Location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert client.get(f"Patient/{body['id']}").json()["name"][0]["family"] == "Reid"

    body["name"][0]["family"] = "Reid-Brown"
    updated = client.put(f"Patient/{body['id']}", body, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200 and updated.json()["meta"]["versionId"] == "2"
    assert client.get(f"Patient/{body['id']}/_history/1").json()["name"][0]["family"] == "Reid"
    history = client.get(f"Patient/{body['id']}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


def test_stale_if_match_gets_412_and_loses_nothing(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    body = client.post("Patient", patient()).json()
    results: list[httpx.Response] = []

    def change(family: str) -> None:
        edited = {**body, "name": [{"given": ["Ann"], "family": family}]}
        results.append(client.put(f"Patient/{body['id']}", edited, headers={"If-Match": 'W/"1"'}))

    writers = [threading.Thread(target=change, args=(f"Name{i}",)) for i in range(6)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 412, 412, 412, 412, 412]
    winner = next(r for r in results if r.status_code == 200).json()["name"][0]["family"]
    refused = next(r for r in results if r.status_code == 412).json()
    assert refused["resourceType"] == "OperationOutcome" and "not current" in refused["issue"][0]["diagnostics"]
    current = client.get(f"Patient/{body['id']}").json()
    assert current["meta"]["versionId"] == "2" and current["name"][0]["family"] == winner
    assert len(client.get(f"Patient/{body['id']}/_history").json()["entry"]) == 2


def test_patch_with_json_patch(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    body = client.post("Patient", patient()).json()
    ops = [{"op": "replace", "path": "/name/0/family", "value": "Moir"}]
    patched = client.request(
        "PATCH", f"Patient/{body['id']}", content=__import__("orjson").dumps(ops),
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"][0]["family"] == "Moir" and patched.json()["meta"]["versionId"] == "2"


def test_bad_input_gets_an_operation_outcome_naming_the_element(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    bad_date = {**patient(), "birthDate": "1980-13-01"}
    response = client.post("Patient", bad_date)
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Patient.birthDate"]
    response = client.post("Patient", {**patient(), "identifier": [{"system": CHI_SYSTEM, "value": "0101801234"}]})
    assert response.status_code == 422 and "modulus-11" in response.json()["issue"][0]["diagnostics"]
    response = client.post("Patient", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    assert response.status_code == 400 and "expected Patient" in response.text
    response = client.request("POST", "Patient", content=b"{not json", headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"
    assert client.get("Patient/does-not-exist").status_code == 404
    assert client.get("Patient?nonsense=1", headers={"Prefer": "handling=strict"}).status_code == 400
    assert client.get("Widget/1").status_code == 404


def test_search_by_identifier_and_paging_with_next_links(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    ids = [client.post("Patient", patient(given=f"P{i}", serial=i)).json()["id"] for i in range(7)]
    chi = make_chi(date(1980, 1, 1), "female", 3)
    found = client.get(f"Patient?identifier={CHI_SYSTEM}|{chi}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [ids[3]]
    assert client.get(f"Patient?identifier={chi}").json()["entry"][0]["resource"]["id"] == ids[3]
    seen: list[str] = []
    url = "Patient?_count=3"
    while url:
        page = client.get(url).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    assert "total" not in page


def test_transaction_is_all_or_nothing(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    good = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {
                    "resourceType": "RelatedPerson",
                    "patient": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
                    "name": [{"text": "Mary Reid"}],
                },
                "request": {"method": "POST", "url": "RelatedPerson"},
            },
        ],
    }
    answer = client.post("", good)
    assert answer.status_code == 200, answer.text
    locations = [e["response"]["location"] for e in answer.json()["entry"]]
    patient_ref = locations[0].split("/_history")[0]
    carer = client.get(locations[1].split("/_history")[0]).json()
    assert carer["patient"]["reference"] == patient_ref

    bad = {**good, "entry": [good["entry"][0], {"resource": {"resourceType": "Patient", "birthDate": "nope"}, "request": {"method": "POST", "url": "Patient"}}]}
    before = len(client.get("Patient").json()["entry"])
    answer = client.post("", bad)
    assert answer.status_code == 422 and "Bundle.entry[1]" in answer.json()["issue"][0]["diagnostics"]
    assert len(client.get("Patient").json()["entry"]) == before


def test_an_organisation_cannot_read_or_change_another_organisations_resources(make_client):  # type: ignore[no-untyped-def]
    hscp = make_client("social-work")
    facility = make_client("facility", FACILITY)
    body = hscp.post("Patient", patient()).json()
    assert facility.get(f"Patient/{body['id']}").status_code == 404
    # Nothing of the person is visible, so not even "some information withheld": that would say they exist.
    assert facility.get("Patient").json().get("entry", []) == []
    assert facility.get(f"Patient/{body['id']}/_history").status_code == 404
    changed = {**body, "name": [{"family": "Hijacked"}]}
    assert facility.put(f"Patient/{body['id']}", changed).status_code in (403, 404)
    assert facility.request("DELETE", f"Patient/{body['id']}").status_code in (403, 404)
    assert hscp.get(f"Patient/{body['id']}").json()["name"][0]["family"] == "Reid"


def test_scopes_limit_what_a_token_may_do(make_client):  # type: ignore[no-untyped-def]
    reader = make_client("reader", scopes=["system/*.read"])
    response = reader.post("Patient", patient())
    assert response.status_code == 403 and "system/Patient.write" in response.text


def test_delete_keeps_history_and_answers_410(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    body = client.post("Patient", patient()).json()
    assert client.request("DELETE", f"Patient/{body['id']}").status_code == 204
    assert client.get(f"Patient/{body['id']}").status_code == 410
    assert client.get(f"Patient/{body['id']}/_history/1").status_code == 200
