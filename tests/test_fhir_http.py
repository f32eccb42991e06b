"""HTTP semantics stock FHIR clients rely on, over real HTTP: conditional create and
update, strict validation, validators and 304s, Prefer, gzip and history Bundles."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from mappings.identifiers import CHI_SYSTEM

from .conftest import FACILITY
from .test_fhir_api import patient


def chi_of(body: dict) -> str:  # type: ignore[type-arg]
    return f"identifier={CHI_SYSTEM}|{body['identifier'][0]['value']}"


def patients_with(client, condition: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["resource"]["id"] for e in client.get(f"Patient?{condition}").json().get("entry", []) if e["resource"]["resourceType"] == "Patient"]


def test_if_none_exist_twice_gives_one_patient(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    body = patient(serial=1)
    first = client.post("Patient", body, headers={"If-None-Exist": chi_of(body)})
    second = client.post("Patient", body, headers={"If-None-Exist": chi_of(body)})
    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["Location"] == first.headers["Location"] and second.headers["ETag"] == 'W/"1"'
    assert patients_with(client, chi_of(body)) == [first.json()["id"]]
    in_the_query = client.post(f"Patient?{chi_of(body)}", body)  # fhirpy's get_or_create
    assert in_the_query.status_code == 200 and in_the_query.json()["id"] == first.json()["id"]


def test_if_none_exist_with_several_matches_is_412(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    body = patient(serial=2)
    assert client.post("Patient", body).status_code == 201
    assert client.post("Patient", body).status_code == 201
    refused = client.post("Patient", body, headers={"If-None-Exist": chi_of(body)})
    assert refused.status_code == 412, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert len(patients_with(client, chi_of(body))) == 2


def test_if_none_exist_counts_only_what_the_caller_may_see(make_client):  # type: ignore[no-untyped-def]
    """No existence oracle: a caller that may not see the person gets a new Patient (documented)."""
    hscp, facility = make_client("social-work"), make_client("facility", FACILITY)
    body = patient(serial=3)
    mine = hscp.post("Patient", body, headers={"If-None-Exist": chi_of(body)}).json()["id"]
    theirs = facility.post("Patient", body, headers={"If-None-Exist": chi_of(body)})
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["id"] != mine
    assert patients_with(hscp, chi_of(body)) == [mine]


def test_if_none_exist_refuses_unknown_criteria(make_client):  # type: ignore[no-untyped-def]
    """An unknown parameter is never ignored here: it would widen the match."""
    client = make_client("social-work")
    refused = client.post("Patient", patient(serial=4), headers={"If-None-Exist": "colour=blue"})
    assert refused.status_code == 400, refused.text
    assert client.post("Patient", patient(serial=4), headers={"If-None-Exist": "_count=1"}).status_code == 400


def test_conditional_update_creates_then_updates_then_refuses_ambiguity(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    body = {**patient(serial=5), "id": "chosen-by-client"}
    created = client.put(f"Patient?{chi_of(body)}", body)
    assert created.status_code == 201, created.text
    new_id = created.json()["id"]
    assert new_id != "chosen-by-client"  # Patient ids are Pathway's

    renamed = {**patient(serial=5), "name": [{"given": ["Ann"], "family": "Reid-Brown"}]}
    updated = client.put(f"Patient?{chi_of(body)}", renamed, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == new_id and updated.json()["meta"]["versionId"] == "2"
    stale = client.put(f"Patient?{chi_of(body)}", renamed, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412

    wrong_id = client.put(f"Patient?{chi_of(body)}", {**renamed, "id": "someone-else"})
    assert wrong_id.status_code == 400, wrong_id.text

    assert client.post("Patient", patient(serial=5)).status_code == 201
    ambiguous = client.put(f"Patient?{chi_of(body)}", renamed)
    assert ambiguous.status_code == 412, ambiguous.text


@pytest.mark.parametrize(
    ("change", "status", "element"),
    [
        ({"active": "yes"}, 400, "Patient.active"),
        ({"gender": "bogus"}, 422, "Patient.gender"),
        ({"multipleBirthInteger": "2"}, 400, "Patient.multipleBirthInteger"),
        ({"birthDate": "1980-02-30"}, 422, "Patient.birthDate"),
        ({"colour": "blue"}, 422, "Patient.colour"),
        ({"name": [{"family": "Reid", "use": "formal"}]}, 422, "Patient.name[0].use"),
    ],
)
def test_strict_validation_names_the_element(make_client, change, status, element):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    refused = client.post("Patient", {**patient(serial=6), **change})
    assert refused.status_code == status, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [element]
    assert element in outcome["issue"][0]["diagnostics"]


def test_strict_validation_in_updates_and_transactions(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    body = client.post("Patient", patient(serial=7)).json()
    assert client.put(f"Patient/{body['id']}", {**body, "active": "yes"}).status_code == 400
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": {**patient(serial=8), "gender": "bogus"}, "request": {"method": "POST", "url": "Patient"}}],
    }
    refused = client.post("", bundle)
    assert refused.status_code == 422, refused.text
    assert client.get(f"Patient/{body['id']}").json()["meta"]["versionId"] == "1"


def test_what_is_stored_is_what_was_validated(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    subject = client.post("Patient", patient(serial=9)).json()
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "units per week"},
        "subject": {"reference": f"Patient/{subject['id']}"},
        "issued": "2024-03-01T10:00:00.5+00:00",
        "valueQuantity": {"value": 14.0, "unit": "units"},
        "note": [],
    }
    created = client.post("Observation", observation)
    assert created.status_code == 201, created.text
    stored = client.get(f"Observation/{created.json()['id']}").json()
    assert stored["issued"] == "2024-03-01T10:00:00.5+00:00"  # a valid instant, kept as sent
    assert stored["valueQuantity"] == {"value": 14.0, "unit": "units"}
    assert "note" not in stored  # FHIR JSON has no empty arrays


def test_read_and_vread_validators_and_304(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    created = client.post("Patient", patient(serial=10))
    pid = created.json()["id"]
    for path in (f"Patient/{pid}", f"Patient/{pid}/_history/1"):
        read = client.get(path)
        assert read.headers["ETag"] == 'W/"1"' and read.headers["Last-Modified"] == created.headers["Last-Modified"]
        modified = datetime.strptime(read.headers["Last-Modified"], "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=timezone.utc)
        cached = client.get(path, headers={"If-None-Match": 'W/"1"'})
        assert cached.status_code == 304 and cached.content == b"" and cached.headers["ETag"] == 'W/"1"'
        assert client.get(path, headers={"If-None-Match": 'W/"2"'}).status_code == 200
        assert client.get(path, headers={"If-Modified-Since": format_datetime(modified, usegmt=True)}).status_code == 304
        earlier = format_datetime(modified - timedelta(seconds=1), usegmt=True)
        assert client.get(path, headers={"If-Modified-Since": earlier}).status_code == 200
        assert client.get(path, headers={"If-Modified-Since": "not a date"}).status_code == 200


def test_prefer_return_on_create_update_and_patch(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    minimal = client.post("Patient", patient(serial=11), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b"" and minimal.headers["ETag"] == 'W/"1"'
    pid = minimal.headers["Location"].split("/Patient/")[1].split("/")[0]
    body = client.get(f"Patient/{pid}").json()
    outcome = client.put(f"Patient/{pid}", {**body, "active": True}, headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 200 and outcome.json()["resourceType"] == "OperationOutcome"
    assert outcome.json()["issue"][0]["severity"] == "information"
    patched = client.request(
        "PATCH",
        f"Patient/{pid}",
        json=[{"op": "replace", "path": "/active", "value": False}],
        headers={"Content-Type": "application/json-patch+json", "Prefer": "return=representation"},
    )
    assert patched.status_code == 200 and patched.json()["active"] is False and patched.json()["meta"]["versionId"] == "3"


def test_gzip_when_asked_for_bodies_over_a_kilobyte(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    for serial in range(12, 18):
        client.post("Patient", patient(serial=serial))
    headers = {"Authorization": f"Bearer {client.token()}"}
    base = client.credentials["fhir_base"]
    zipped = httpx.get(f"{base}/Patient?_count=6", headers={**headers, "Accept-Encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.headers["content-encoding"] == "gzip"
    assert len(zipped.json()["entry"]) == 6  # httpx decoded it
    plain = httpx.get(f"{base}/Patient?_count=6", headers={**headers, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    small = httpx.get(f"{base}/metadata", headers={"Accept-Encoding": "gzip"})
    assert small.status_code == 200


def test_history_says_how_each_version_came_about(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    body = client.post("Patient", patient(serial=19)).json()
    client.put(f"Patient/{body['id']}", {**body, "active": True})
    assert client.request("DELETE", f"Patient/{body['id']}").status_code == 204
    history = client.get(f"Patient/{body['id']}/_history").json()
    entries = history["entry"]
    assert [(e["request"]["method"], e["response"]["status"]) for e in entries] == [
        ("DELETE", "204 No Content"),
        ("PUT", "200 OK"),
        ("POST", "201 Created"),
    ]
    assert "resource" not in entries[0] and entries[1]["resource"]["meta"]["versionId"] == "2"
    assert entries[2]["request"]["url"] == "Patient" and entries[1]["request"]["url"] == f"Patient/{body['id']}"


def test_transaction_if_none_exist_and_conditional_put(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    existing = client.post("Patient", patient(serial=20)).json()
    body = patient(serial=20)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:p", "resource": body, "request": {"method": "POST", "url": "Patient", "ifNoneExist": chi_of(body)}},
            {
                "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:p"}},
                "request": {"method": "POST", "url": "Observation"},
            },
            {"resource": {**body, "active": True}, "request": {"method": "PUT", "url": f"Patient?{chi_of(body)}"}},
        ],
    }
    answer = client.post("", bundle)
    assert answer.status_code == 200, answer.text
    responses = [e["response"] for e in answer.json()["entry"]]
    assert responses[0]["status"] == "200 OK" and responses[0]["location"] == f"Patient/{existing['id']}/_history/1"
    observation = client.get(responses[1]["location"].rsplit("/_history", 1)[0]).json()
    assert observation["subject"]["reference"] == f"Patient/{existing['id']}"
    assert responses[2]["location"] == f"Patient/{existing['id']}/_history/2"
    assert patients_with(client, chi_of(body)) == [existing["id"]]


def test_conditional_create_of_a_service_request(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    subject = client.post("Patient", patient(serial=21, born=date(1975, 5, 5))).json()
    request = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": "https://example.org/referrals", "value": "R-1"}],
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{subject['id']}"},
    }
    condition = {"If-None-Exist": "identifier=https://example.org/referrals|R-1"}
    first, second = client.post("ServiceRequest", request, headers=condition), client.post("ServiceRequest", request, headers=condition)
    assert (first.status_code, second.status_code) == (201, 200), second.text
    assert first.json()["id"] == second.json()["id"]
