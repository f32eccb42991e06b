"""FHIR search as stock clients use it, over real HTTP: parameters, includes, totals, paging, handling."""

from __future__ import annotations

import re
import threading
import time
from datetime import date
from typing import Any

import httpx
import orjson
from sqlalchemy import delete, select

from gateway.cli import main as pathway
from gateway.store.models import SearchTokenRow
from mappings.identifiers import CHI_SYSTEM, make_chi

from .test_sharing import FACILITY, _withheld, partnership, person  # noqa: F401  (fixtures)

STRICT = {"Prefer": "handling=strict"}


def _patient(given: str, family: str, born: date, gender: str = "female", serial: int = 0) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": CHI_SYSTEM, "value": make_chi(born, gender, serial)}],
        "name": [{"given": [given], "family": family}],
        "gender": gender,
        "birthDate": born.isoformat(),
    }


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def _people(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    made = {
        "zoe": _patient("Zoë", "Reid-Brown", date(1984, 5, 17)),
        "ann": _patient("Ann", "REID", date(1990, 2, 1), serial=1),
        "bob": _patient("Bob", "Smith", date(1984, 11, 30), gender="male", serial=2),
    }
    ids = {}
    for key, body in made.items():
        response = client.post("Patient", body)
        assert response.status_code == 201, response.text
        ids[key] = response.json()["id"]
    return ids


def test_name_search_is_a_case_and_accent_blind_starts_with(make_client):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    ids = _people(social)

    def found(query: str) -> set[str]:
        response = social.get(f"Patient?{query}", headers=STRICT)
        assert response.status_code == 200, response.text
        return set(_ids(response.json()))

    assert found("name=zoe") == found("name=ZOË") == found("given=zo") == {ids["zoe"]}
    assert found("family=reid") == {ids["zoe"], ids["ann"]}
    assert found("name=brown") == found("family=Reid-Br") == {ids["zoe"]}
    assert found("given=reid") == set() and found("family=ann") == set()
    assert found("name=smith,ann") == {ids["bob"], ids["ann"]}
    assert found("family=reid-brownxxxxxxxxxxxxxxxxx") == set()  # longer than the indexed prefixes
    assert found("family=reid-brown&given=zoe") == {ids["zoe"]}
    assert found("birthdate=1984-05-17") == {ids["zoe"]}
    assert found("birthdate=1984") == {ids["zoe"], ids["bob"]}
    assert found("birthdate=ge1984-06-01") == {ids["bob"], ids["ann"]}
    assert found("birthdate=lt1984-11-30") == {ids["zoe"]}
    assert found("gender=male") == {ids["bob"]}
    assert found("gender:not=male") == {ids["zoe"], ids["ann"]}
    carer = social.post("RelatedPerson", {"resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{ids['ann']}"}, "name": [{"given": ["Jean"], "family": "Ménard"}]}).json()
    assert _ids(social.get("RelatedPerson?family=menard").json()) == [carer["id"]]


def test_the_search_index_holds_no_name_birth_date_or_gender_in_clear(make_client, gateway):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    ids = _people(social)
    with gateway.reading() as session:
        rows = session.execute(select(SearchTokenRow.param, SearchTokenRow.value).where(SearchTokenRow.id.in_(list(ids.values())))).all()
    params = {param for param, _ in rows}
    assert {"family", "given", "birthdate", "gender"} <= params  # name searches given and family
    blind = re.compile(r"[0-9a-f]{40}")  # a keyed hash, which may hold any digits by chance
    person_values = [value for param, value in rows if param in ("family", "given", "birthdate", "gender")]
    assert person_values and all(blind.fullmatch(value) for value in person_values)
    values = " ".join(value.lower() for _, value in rows if not blind.fullmatch(value))
    for clear in ("zo", "reid", "brown", "ann", "smith", "1984", "1990", "female", "male"):
        assert clear not in values, clear


def test_id_last_updated_sort_count_total_and_elements(make_client):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    ids = _people(social)
    order = [ids["zoe"], ids["ann"], ids["bob"]]
    assert set(_ids(social.get(f"Patient?_id={ids['ann']},{ids['bob']}").json())) == {ids["ann"], ids["bob"]}
    assert _ids(social.get("Patient?_sort=_lastUpdated").json()) == order
    assert _ids(social.get("Patient?_sort=-_lastUpdated").json()) == order[::-1]
    middle = social.get(f"Patient/{ids['ann']}").json()["meta"]["lastUpdated"]
    assert _ids(social.get("Patient", params={"_lastUpdated": f"gt{middle}", "_sort": "_lastUpdated"}).json()) == [ids["bob"]]
    assert _ids(social.get("Patient", params={"_lastUpdated": f"le{middle}", "_sort": "_lastUpdated"}).json()) == order[:2]
    assert _ids(social.get("Patient", params={"_lastUpdated": f"eq{middle}"}).json()) == [ids["ann"]]
    assert set(_ids(social.get("Patient", params={"_lastUpdated": f"ne{middle}"}).json())) == {ids["zoe"], ids["bob"]}
    assert _ids(social.get("Patient?_lastUpdated=ge2999-01-01").json()) == []

    counted = social.get("Patient?_summary=count&family=reid").json()
    assert counted["total"] == 2 and counted.get("entry", []) == []
    page = social.get("Patient?_count=1&_total=accurate").json()
    assert page["total"] == 3 and len(_ids(page)) == 1
    assert "total" not in social.get("Patient").json()

    subset = social.get(f"Patient?_id={ids['bob']}&_elements=gender").json()["entry"][0]["resource"]
    assert subset["gender"] == "male" and subset["id"] == ids["bob"] and "name" not in subset and "birthDate" not in subset
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in subset["meta"]["tag"]
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": f"Patient/{ids['bob']}"}}
    made = [social.post("Observation", {**observation, "effectiveDateTime": day}).json()["id"] for day in ("2024-03-02", "2024-01-05", "2024-02-09")]
    assert _ids(social.get("Observation?_sort=date").json()) == [made[1], made[2], made[0]]
    assert _ids(social.get("Observation?_sort=-date").json()) == [made[0], made[2], made[1]]
    assert _ids(social.get("Observation?date=ge2024-02-01&_sort=date").json()) == [made[2], made[0]]
    kept = social.get("Observation?_elements=effectiveDateTime").json()["entry"][0]["resource"]
    assert {"status", "code", "effectiveDateTime"} <= set(kept) and "subject" not in kept  # mandatory elements stay


def test_unknown_parameters_are_ignored_unless_strict(make_client):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    ids = _people(social)
    lenient = social.get("Patient?family=smith&nonsense=1&_sort=bogus")
    assert lenient.status_code == 200 and _ids(lenient.json()) == [ids["bob"]]
    self_link = next(link["url"] for link in lenient.json()["link"] if link["relation"] == "self")
    assert "family=smith" in self_link and "nonsense" not in self_link and "bogus" not in self_link
    for query in ("family=smith&nonsense=1", "_sort=bogus", "owner=Organization/x", "status:text=x", "_include=Task:focus"):
        refused = social.get(f"Patient?{query}", headers=STRICT)
        assert refused.status_code == 400 and refused.json()["resourceType"] == "OperationOutcome", query
    assert social.get("Patient?_count=abc").status_code == 400  # a known parameter with a bad value is refused either way
    assert social.get("Patient?_cursor=bm9wZQ").status_code == 400


def test_post_search_merges_the_form_with_the_query_string(make_client):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    ids = _people(social)
    response = social.request(
        "POST", "Patient/_search?gender=female", content=b"family=reid&_sort=_lastUpdated", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200, response.text
    assert _ids(response.json()) == [ids["zoe"], ids["ann"]]
    assert social.post("Patient/_search", {"family": "reid"}).status_code == 415  # a JSON body is not a form


def test_include_and_revinclude_go_through_consent(person, make_client):  # type: ignore[no-untyped-def]
    social, patient = person["social"], person["patient"]
    patient_id = patient.split("/")[1]
    everything = social.get(f"Patient?_id={patient_id}&_revinclude=Condition:subject&_revinclude=MedicationStatement:subject").json()
    assert _ids(everything) == [patient_id]
    assert set(_ids(everything, "include")) == {person["methadone"], person["depression"]}
    meds = social.get(f"MedicationStatement?patient={patient}&_include=MedicationStatement:subject&_include=*").json()
    assert _ids(meds) == [person["methadone"]] and _ids(meds, "include") == [patient_id]  # once, though asked twice

    facility = make_client("facility-test", FACILITY, ["system/*.read"])
    seen = facility.get(f"MedicationStatement?patient={patient}&_revinclude=Condition:subject&_include=MedicationStatement:subject").json()
    assert _ids(seen) == [person["methadone"]]
    assert person["depression"] not in _ids(seen, "include")  # mental health is not consented to the facility
    revincluded = facility.get(f"Patient?_id={patient_id}&_revinclude=Condition:subject&_revinclude=MedicationStatement:subject").json()
    assert person["depression"] not in _ids(revincluded, "include")
    assert [e["search"]["mode"] for e in seen["entry"] if e["resource"]["resourceType"] == "OperationOutcome"] in ([], ["outcome"])
    assert facility.get(f"Condition?patient={patient}&_total=accurate").json()["total"] == 0
    assert social.get(f"Condition?patient={patient}&_total=accurate").json()["total"] == 1
    counted = facility.get(f"Condition?patient={patient}&_summary=count").json()
    assert counted["total"] == 0 and _withheld(counted)
    assert next(e for e in counted["entry"] if e["resource"]["resourceType"] == "OperationOutcome")["search"]["mode"] == "outcome"


def test_paging_neither_repeats_nor_skips_while_others_write(make_client):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    writer = make_client("social-work-2")
    before = [social.post("Patient", _patient(f"P{i}", "Page", date(1970, 1, 1), serial=i)).json()["id"] for i in range(12)]
    for sort in ("-_lastUpdated", "_lastUpdated"):
        stop = threading.Event()

        def write() -> None:
            serial = 100
            while not stop.is_set() and serial < 140:
                writer.post("Patient", _patient(f"N{serial}", "Page", date(1971, 1, 1), serial=serial))
                serial += 1

        thread = threading.Thread(target=write)
        thread.start()
        seen: list[str] = []
        url: str | None = f"Patient?family=page&_count=3&_sort={sort}"
        pages = 0
        try:
            while url and pages < 40:
                page = social.get(url).json()
                seen += _ids(page)
                url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
                pages += 1
                time.sleep(0.02)
        finally:
            stop.set()
            thread.join(timeout=30)
        assert len(seen) == len(set(seen)), sort  # no repeats
        assert set(before) <= set(seen), sort  # no gaps
        assert "_cursor=" in social.get("Patient?_count=3").json()["link"][1]["url"]


def test_capability_statement_lists_search_parameters_and_includes(server):  # type: ignore[no-untyped-def]
    statement = httpx.get(f"{server.url}/fhir/metadata").json()
    types = {r["type"]: r for r in statement["rest"][0]["resource"]}
    patient_params = {p["name"]: p["type"] for p in types["Patient"]["searchParam"]}
    assert patient_params["name"] == "string" and patient_params["birthdate"] == "date" and patient_params["gender"] == "token"
    assert {"_id", "_lastUpdated", "_sort", "_count", "_elements"} <= set(patient_params)
    assert "Task:focus" in types["Task"]["searchInclude"] and "Condition:subject" in types["Patient"]["searchRevInclude"]
    assert {p["name"]: p["type"] for p in types["Observation"]["searchParam"]}["date"] == "date"


def test_pathway_reindex_rebuilds_the_tokens_of_an_older_database(make_client, gateway, settings, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    ids = _people(social)
    with gateway.transaction() as session:  # as a database written before name tokens existed
        session.execute(delete(SearchTokenRow).where(SearchTokenRow.param.in_(["family", "given", "birthdate", "gender"])))
    assert _ids(social.get("Patient?family=reid").json()) == []
    monkeypatch.setenv("PATHWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(settings.secrets_dir))
    assert pathway(["reindex"]) == 0
    assert orjson.loads(capsys.readouterr().out)["reindexed"] >= 3
    assert set(_ids(social.get("Patient?family=reid").json())) == {ids["zoe"], ids["ann"]}
