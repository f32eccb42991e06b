"""Ingest acts with the pushing organisation's authority, over HTTP with real clients and tokens:
what another organisation sends never changes or deletes a practice's records, ids are keyed
per installation and scoped to the sender, and a practice's own EMIS organisation is its alone."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.app import create_app
from gateway.audit.chain import read_event
from gateway.conf import load_conf
from gateway.directory import import_conf
from gateway.ingest.pipeline import id_scheme, pipeline_caller, run_ingest
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.store.models import AuditRow

from .conftest import HSCP, ODS, REPO

FIXTURES = Path(__file__).parent / "fixtures"
# An extract of an EMIS organisation the directory does not list (its GUID is nobody's).
UNLISTED = FIXTURES / "ingest" / "emis" / "input"
# An extract of Seagate Green, whose OrganisationGuid conf/partners.yaml lists.
SEAGATE_GREEN = FIXTURES / "emis" / "extract"
PRACTICE = f"{ODS}|21506"
CLINICAL = ("Patient", "RelatedPerson", "Encounter", "Observation", "Condition", "MedicationStatement", "MedicationRequest")
INGEST = ["system/*.read", "system/*.write", "ingest"]


@pytest.fixture
def partnership(gateway: Gateway) -> Gateway:
    import_conf(gateway, load_conf(REPO / "conf"), REPO / "conf")
    return gateway


def zipped(tables: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in tables.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def tables(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.csv"))}


def tampered(folder: Path) -> tuple[dict[str, str], set[str]]:
    """The extract with every other well-formed row of each table that has a Deleted column
    marked deleted and the values of the rest changed; also the locations ("file:line") of
    every row marked deleted, counted here with the csv module."""
    changed, deleting = {}, set()
    for name, text in tables(folder).items():
        reader = csv.reader(io.StringIO(text))
        header = next(reader)
        rows = [(reader.line_num, row) for row in reader]
        if "Deleted" not in header:
            changed[name] = text
            continue
        flag = header.index("Deleted")
        for n, (line, row) in enumerate(rows):
            if len(row) != len(header):
                continue  # a malformed row stays as it is (and quarantined)
            if n % 2 == 1:
                row[flag] = "true"
            for column in ("Surname", "Value", "Dosage", "ConsultationSourceTerm"):
                if column in header and row[header.index(column)] and row[flag] != "true":
                    row[header.index(column)] = "changed by another organisation"
            if row[flag].lower() == "true":
                deleting.add(f"{name}:{line}")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(row for _, row in rows)
        changed[name] = out.getvalue()
    return changed, deleting


def post(client: Any, source: str, body: bytes, content_type: str = "application/zip") -> Any:
    return client.request("POST", f"{client.fhir_base.removesuffix('/fhir')}/ingest/{source}", content=body, headers={"Content-Type": content_type})


def holdings(client: Any) -> dict[str, dict[str, Any]]:
    """Every clinical resource the client can read, by reference (with its version)."""
    found = {}
    for kind in CLINICAL:
        bundle = client.get(f"{kind}?_count=500").json()
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            if resource["resourceType"] == kind:
                found[f"{kind}/{resource['id']}"] = resource
    return found


def test_another_organisation_changes_and_deletes_nothing_of_the_practices(partnership: Gateway, make_client: Any) -> None:
    gp = make_client("gp-ehr", PRACTICE, INGEST)
    first = post(gp, "emis", zipped(tables(UNLISTED)))
    assert first.status_code == 200, first.text
    before = holdings(gp)
    assert len(before) == sum(first.json()["resources"].values()) > 10

    hscp = make_client("hscp-ingest", HSCP, INGEST)
    extract, deleting = tampered(UNLISTED)
    attempt = post(hscp, "emis", zipped(extract))
    assert attempt.status_code == 200, attempt.text
    report = attempt.json()
    # ids are scoped to the sender: the Deleted rows name none of the GP's records
    accepted_deleting = deleting - {q["location"] for q in report["quarantined"]}
    assert len(accepted_deleting) > 5
    assert report["deleted"] == 0 and report["deletions_refused"] == [] and report["deletions_unmatched"] == len(accepted_deleting)

    after = holdings(gp)
    assert after == before  # the same resources, versions and values

    # what the HSCP wrote is its own, under other ids
    theirs = holdings(hscp)
    encounters = lambda held: {r for r in held if r.startswith("Encounter/")}  # noqa: E731
    assert len(encounters(theirs)) > 0 and encounters(theirs).isdisjoint(encounters(before))
    # about the same person (one Patient per CHI), whom the GP still holds unchanged
    subjects = {theirs[r]["subject"]["reference"] for r in encounters(theirs)}
    assert subjects and subjects <= {r for r in before if r.startswith("Patient/")}


def test_the_same_source_ids_from_two_organisations_name_different_records(partnership: Gateway, make_client: Any) -> None:
    gp, hscp = make_client("gp-ehr", PRACTICE, INGEST), make_client("hscp-ingest", HSCP, INGEST)
    extract = zipped(tables(UNLISTED))
    assert post(gp, "emis", extract).status_code == post(hscp, "emis", extract).status_code == 200
    source_ids = lambda held: {r["identifier"][0]["value"]: ref for ref, r in held.items() if not ref.startswith(("Patient/", "RelatedPerson/"))}  # noqa: E731
    mine, theirs = source_ids(holdings(gp)), source_ids(holdings(hscp))
    assert len(mine) >= 5 and mine.keys() == theirs.keys()
    assert all(mine[source_id] != theirs[source_id] for source_id in mine)


def test_a_shared_patient_gains_identifiers_from_another_organisation_and_keeps_its_holders_details(
    partnership: Gateway, make_client: Any
) -> None:
    gp, hscp = make_client("gp-ehr", PRACTICE, INGEST), make_client("hscp-ingest", HSCP, INGEST)
    assert post(gp, "emis", zipped(tables(UNLISTED))).status_code == 200
    ann = gp.get("Patient?identifier=https://fhir.nhs.uk/Id/chi-number|0101800002").json()["entry"][0]["resource"]
    # the social-work case about Ann has other names, address and phone, and its own case id
    report = post(hscp, "socialwork", (FIXTURES / "ingest" / "socialwork.json").read_bytes(), "application/json").json()
    assert report["accepted"] == 1 and report["quarantined"][0]["location"].startswith("case[1]")
    now = gp.get(f"Patient/{ann['id']}").json()
    assert int(now["meta"]["versionId"]) == int(ann["meta"]["versionId"]) + 1
    keep = lambda p: {k: v for k, v in p.items() if k not in ("meta", "identifier")}  # noqa: E731
    assert keep(now) == keep(ann)
    added = [i for i in now["identifier"] if i not in ann["identifier"]]
    assert now["identifier"][: len(ann["identifier"])] == ann["identifier"]
    assert added == [{"system": "https://pathway.scot/Id/socialwork/case-id", "value": "SW-000123"}]
    # the change is on the record: the HSCP's ingest Provenance names the Patient
    with partnership.reading() as session:
        provenances = [s.resource for _, s in partnership.repository(session).search("Provenance", batch=50) if s.custodian == HSCP]
    assert any({"reference": f"Patient/{ann['id']}"} in p["target"] for p in provenances)


def test_an_extract_of_a_practice_from_another_organisation_is_refused_and_audited(partnership: Gateway, make_client: Any) -> None:
    hscp = make_client("hscp-ingest", HSCP, INGEST)
    refused = post(hscp, "emis", zipped(tables(SEAGATE_GREEN)))
    assert refused.status_code == 422
    diagnostics = refused.json()["issue"][0]["diagnostics"]
    assert "Seagate Green Medical Practice" in diagnostics and "7A1C0000-0000-4000-8000-000000000001" in diagnostics
    assert holdings(hscp) == {}
    with partnership.reading() as session:
        events = [read_event(session, row) for row in session.scalars(select(AuditRow).order_by(AuditRow.seq))]
    refusals = [e for e in events if "emis extract refused" in str(e)]
    assert len(refusals) == 1 and "hscp-ingest" in str(refusals[0]) and "Seagate Green" in str(refusals[0])
    # the practice itself sends it
    gp = make_client("gp-ehr", PRACTICE, INGEST)
    assert post(gp, "emis", zipped(tables(SEAGATE_GREEN))).status_code == 200


def test_patient_ids_of_one_chi_differ_between_installations_and_hold_within_one(tmp_path: Path) -> None:
    def installation(name: str) -> Settings:
        return Settings(database_url=f"sqlite:///{tmp_path / name}.db", secrets_dir=tmp_path / name, conf_dir=REPO / "conf", run_workers=False)

    def ann_after_ingest(settings: Settings) -> str:
        gateway = Gateway.start(settings)
        try:
            import_conf(gateway, load_conf(REPO / "conf"), REPO / "conf")
            fhir = create_app(gateway=gateway).state.fhir
            run_ingest(gateway, fhir, "socialwork", FIXTURES / "ingest" / "socialwork.json", caller=pipeline_caller("social-work", HSCP))
            with gateway.reading() as session:
                found = gateway.repository(session).search("Patient", [("identifier", ["https://fhir.nhs.uk/Id/chi-number|0101800002"])], batch=5)
                (patient_id,) = [s.id for _, s in found]
            assert patient_id == id_scheme(gateway, PRACTICE).person("0101800002")  # the same from every organisation
            return patient_id
        finally:
            gateway.close()

    first, second = ann_after_ingest(installation("a")), ann_after_ingest(installation("b"))
    assert first != second
    assert ann_after_ingest(installation("a")) == first  # stable for the installation's keys
