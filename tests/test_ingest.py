"""Ingest of social-work and third-sector records: golden outputs, quarantine, identity, storage."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import select

import adapters
from adapters import IdScheme, IngestError, MemoryPatientIndex
from gateway.cli import main
from gateway.conf import load_conf
from gateway.directory import import_conf
from gateway.audit.chain import read_event
from gateway.store.models import AuditRow, QuarantineRow

from .conftest import HSCP, REPO

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
AGENCY = "https://pathway.scot/Id/partner|tayside-recovery-network"
KEY = bytes(range(32))  # a fixed id key: the expected files name the ids it gives
HSCP_IDS = IdScheme(KEY, HSCP)
AGENCY_IDS = IdScheme(KEY, AGENCY)


def social_work() -> adapters.IngestResult:
    return adapters.ingest("socialwork", FIXTURES / "socialwork.json", ids=HSCP_IDS)


def index_of(result: adapters.IngestResult) -> MemoryPatientIndex:
    index = MemoryPatientIndex()
    for patient in (r for r in result.resources if r["resourceType"] == "Patient"):
        name = patient["name"][0]
        index.add(patient["id"], identifiers=[(i["system"], i["value"]) for i in patient["identifier"]], given=name["given"][0], family=name["family"], birth_date=patient["birthDate"])
    return index


def expected(name: str) -> list[dict]:  # type: ignore[type-arg]
    return json.loads((FIXTURES / "expected" / name).read_text())


def test_social_work_case_maps_to_the_expected_fhir() -> None:
    assert social_work().resources == expected("socialwork.json")


def test_third_sector_records_map_to_the_expected_fhir() -> None:
    result = adapters.ingest("thirdsector", FIXTURES / "thirdsector.csv", ids=AGENCY_IDS, index=index_of(social_work()))
    assert result.resources == expected("thirdsector.json")


def test_each_bad_record_is_quarantined_with_its_reason_and_the_rest_loads() -> None:
    report = social_work().report()
    assert report["records"] == 3 and report["accepted"] == 1 and report["persons"] == 1
    assert report["quarantined"] == [
        {"location": "case[1] (SW-000124)", "reason": "CHI 0101801234 fails the modulus-11 check"},
        {"location": "case[2] (SW-000125)", "reason": "birth_date '1985-02-30' is not a real date (YYYY-MM-DD)"},
    ]
    third = adapters.ingest("thirdsector", FIXTURES / "thirdsector.csv", ids=AGENCY_IDS, index=index_of(social_work()), known_organisations={"tayside-recovery-network", "lochee-peer-recovery"}).report()
    assert third["quarantined"] == [
        {"location": "thirdsector.csv:4", "reason": "Outcome Star community score '11' is not a whole number from 1 to 10"},
        {"location": "thirdsector.csv:6", "reason": "unmatched: no CHI and no single person with this name and birth date"},
        {"location": "thirdsector.csv:8", "reason": "row has 5 fields, the header has 20"},
    ]
    assert third["unknown_organisations"] == ["new-community-cafe"]
    assert third["resources"] == {"Encounter": 4, "QuestionnaireResponse": 1, "Observation": 10, "MedicationDispense": 1}


def test_near_miss_goes_to_review_not_a_wrong_merge() -> None:
    index = index_of(social_work())
    row = "org_id,client_ref,given_name,family_name,birth_date,contact_date,contact_type\ntayside-recovery-network,T9,Anne,Reid,1980-01-01,2026-10-05,phone\n"
    result = adapters.ingest("thirdsector", row.encode(), ids=AGENCY_IDS, index=index)
    assert result.resources == [] and "possible matches sent for review" in result.quarantined[0].reason
    assert result.match_review[0]["candidates"] == [f"Patient/{next(iter(index_of(social_work())._people.values()))[0]}"]


def test_every_resource_validates_and_every_patient_has_a_chi() -> None:
    for result in (social_work(), adapters.ingest("thirdsector", FIXTURES / "thirdsector.csv", ids=AGENCY_IDS, index=index_of(social_work()))):
        for resource in result.resources:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            if resource["resourceType"] == "Patient":
                assert any(i["system"] == "https://fhir.nhs.uk/Id/chi-number" for i in resource["identifier"])


def test_mapping_is_idempotent() -> None:
    assert social_work().resources == social_work().resources


def test_json_lines_reads_like_a_json_array() -> None:
    cases = json.loads((FIXTURES / "socialwork.json").read_text())
    lines = "\n".join(json.dumps(c) for c in cases).encode()
    assert adapters.ingest("socialwork", lines, ids=HSCP_IDS).resources == social_work().resources


def test_unreadable_input_is_an_ingest_error() -> None:
    with pytest.raises(IngestError):
        adapters.ingest("socialwork", b"", ids=HSCP_IDS)
    bad_bytes = (FIXTURES / "thirdsector.csv").read_bytes().replace(b"Discussed goals", b"Discussed \xff goals")
    result = adapters.ingest("thirdsector", bad_bytes, ids=HSCP_IDS)
    assert ("thirdsector.csv:2", "row contains bytes that are not valid UTF-8") in [(q.location, q.reason) for q in result.quarantined]


@pytest.fixture
def partnership(gateway):  # type: ignore[no-untyped-def]
    import_conf(gateway, load_conf(REPO / "conf"), REPO / "conf")
    return gateway


def test_ingest_over_http_stores_opens_the_pathway_and_is_idempotent(partnership, make_client):  # type: ignore[no-untyped-def]
    social = make_client("sw-ingest", HSCP, ["system/*.read", "system/*.write", "ingest"])
    body = (FIXTURES / "socialwork.json").read_bytes()
    base = social.fhir_base.removesuffix("/fhir")
    report = social.request("POST", f"{base}/ingest/socialwork", content=body, headers={"Content-Type": "application/json"}).json()
    # 7 mapped resources, plus the pathway Task, EpisodeOfCare and CarePlan the referral opened
    assert report["accepted"] == 1 and len(report["quarantined"]) == 2 and report["written"] == 10
    patient = social.get("Patient?identifier=https://fhir.nhs.uk/Id/chi-number|0101800002").json()["entry"][0]["resource"]
    referral = social.get(f"ServiceRequest?patient=Patient/{patient['id']}").json()["entry"][0]["resource"]
    task = social.get(f"Task?focus=ServiceRequest/{referral['id']}").json()["entry"][0]["resource"]
    assert task["status"] == "requested"  # the referral opened the pathway in the same transaction
    quarantine = social.get(f"{base}/ingest/quarantine").json()["quarantined"]
    assert {q["location"] for q in quarantine} == {"case[1] (SW-000124)", "case[2] (SW-000125)"}
    again = social.request("POST", f"{base}/ingest/socialwork", content=body, headers={"Content-Type": "application/json"}).json()
    assert again["written"] == 0
    assert len(social.get(f"Task?focus=ServiceRequest/{referral['id']}").json()["entry"]) == 1

    # the third sector's rows land on the same person, matched by CHI and by name and birth date
    agency = make_client("ts-ingest", AGENCY, ["system/*.read", "ingest"])
    third = agency.request("POST", f"{base}/ingest/thirdsector", content=(FIXTURES / "thirdsector.csv").read_bytes(), headers={"Content-Type": "text/csv"}).json()
    assert third["accepted"] == 4 and third["persons"] == 1 and third["unknown_organisations"] == ["new-community-cafe"]
    encounters = agency.get(f"Encounter?patient=Patient/{patient['id']}").json()
    assert len([e for e in encounters["entry"] if e["resource"]["resourceType"] == "Encounter"]) == 4

    # fixing a quarantined case and sending it again loads it and resolves the entry
    fixed = json.loads(body)[2] | {"birth_date": "1985-02-28", "chi": "2802850001"}
    from mappings.identifiers import chi_problem, make_chi
    from datetime import date

    fixed["chi"] = make_chi(date(1985, 2, 28), "male", 0)
    assert chi_problem(fixed["chi"], "1985-02-28", "male") is None
    social.request("POST", f"{base}/ingest/socialwork", content=orjson.dumps([{}, {}, fixed]), headers={"Content-Type": "application/json"})
    open_now = {q["location"] for q in social.get(f"{base}/ingest/quarantine").json()["quarantined"]}
    assert "case[2] (SW-000125)" not in open_now


def test_ingest_needs_the_ingest_scope(partnership, make_client):  # type: ignore[no-untyped-def]
    reader = make_client("reader", HSCP, ["system/*.read"])
    response = reader.request("POST", f"{reader.fhir_base.removesuffix('/fhir')}/ingest/socialwork", content=b"[]")
    assert response.status_code == 403 and response.json()["resourceType"] == "OperationOutcome"


def test_command_line_ingest_and_dry_run(partnership, settings, monkeypatch, capsys, tmp_path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATHWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(settings.secrets_dir))
    assert main(["ingest", "socialwork", str(FIXTURES / "socialwork.json"), "--dry-run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True and report["accepted"] == 1 and "written" not in report
    assert main(["ingest", "socialwork", str(FIXTURES / "socialwork.json")]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 10
    assert main(["ingest", "socialwork", str(tmp_path / "missing.json")]) == 2


def test_a_quarantine_reason_quoting_the_record_is_sealed_with_it(partnership, make_client, gateway):  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP, ["system/*.read", "ingest"])
    case = {"case_id": "SW-000900", "chi": "0101809999", "names": {"given": ["Isla"], "family": "Gowrie"},
            "birth_date": "1980-01-01", "sex": "female"}
    base = social.fhir_base.removesuffix("/fhir")
    assert social.request("POST", f"{base}/ingest/socialwork", content=orjson.dumps([case]), headers={"Content-Type": "application/json"}).status_code == 200
    [listed] = social.get(f"{base}/ingest/quarantine").json()["quarantined"]
    assert "0101809999" in listed["reason"]  # the pushing organisation reads the whole reason
    with gateway.reading() as session:
        stored = [row.reason for row in session.scalars(select(QuarantineRow))]
    assert len(stored) == 1 and "0101809999" not in stored[0] and stored[0].startswith("CHI")


def test_a_dry_run_is_audited_without_naming_anyone(partnership, make_client, gateway):  # type: ignore[no-untyped-def]
    """A dry run writes nothing but still answers whether the extract's people are known (its
    report counts a new Patient only for a CHI Pathway does not know), so it leaves an entry in
    the audit trail: who checked how many records, about no one."""
    social = make_client("social-work", HSCP, ["system/*.read", "ingest"])
    base = social.fhir_base.removesuffix("/fhir")
    with gateway.reading() as session:
        before = session.scalars(select(AuditRow.seq)).all()
    answer = social.request("POST", f"{base}/ingest/socialwork?dry_run=true", content=(FIXTURES / "socialwork.json").read_bytes(),
                            headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json()["dry_run"] is True
    with gateway.reading() as session:
        added = [(row, read_event(session, row)) for row in session.scalars(select(AuditRow)) if row.seq not in set(before)]
    [(row, event)] = [(row, event) for row, event in added if event["subtype"][0]["code"] == "ingest"]
    assert row.patient is None and "entity" not in event
    assert event["outcomeDesc"] == f"socialwork extract checked (dry run, nothing stored): {answer.json()['records']} records"
    assert event["agent"][0]["who"]["identifier"]["value"] == "social-work"
