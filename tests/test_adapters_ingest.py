"""The ingest entry point: the DESIGN §5.4 report, batches, store order, provenance, one person across sources."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

import adapters
from adapters.common import IdScheme
from adapters import IngestError, Mapped

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
EMIS = FIXTURES / "emis"
PRACTICE = {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "21506"}
PRACTICE_IDS = IdScheme(bytes(range(32)), "https://fhir.nhs.uk/Id/ods-organization-code|21506")  # fixed key: report.json names its ids


def emis(**options: Any) -> adapters.IngestResult:
    return adapters.ingest("emis", EMIS / "input", ids=PRACTICE_IDS, **options)


def outcome(result: adapters.IngestResult) -> dict[str, Any]:
    return json.loads(json.dumps({"report": result.report(), "deletions": result.deletions, "match_review": result.match_review}))


def test_emis_report_deletions_and_match_review_are_as_expected() -> None:
    assert outcome(emis()) == json.loads((EMIS / "expected" / "report.json").read_text())


def test_the_report_has_the_design_keys_and_accounts_for_every_input_row() -> None:
    result = emis()
    report = result.report()
    assert {"source", "records", "accepted", "quarantined", "resources", "persons"} <= set(report)
    assert all(set(q) == {"location", "reason"} for q in report["quarantined"])
    # every data row of the record tables, counted here with the csv module, is accepted or held back
    rows = set()
    for table in ("Admin_Organisation", "Admin_UserInRole", "Admin_Patient", "CareRecord_Consultation", "CareRecord_Observation", "Prescribing_DrugRecord", "Prescribing_IssueRecord"):
        with (EMIS / "input" / f"{table}.csv").open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            start = reader.line_num + 1  # a quoted field may span lines: a row is where it starts
            for row in reader:
                rows |= {f"{table}.csv:{start}"} if row else set()
                start = reader.line_num + 1
    outcomes = result.accepted_locations + [q["location"] for q in report["quarantined"]]
    assert sorted(outcomes) == sorted(rows) and report["records"] == len(rows) == 21


def test_batches_carry_the_same_records_in_the_same_order_and_the_same_report() -> None:
    batches: list[list[Mapped]] = []
    streamed = emis(on_batch=batches.append, batch_size=4)
    whole = emis()
    assert [r for batch in batches for record in batch for r in record.resources] == whole.resources
    assert all(len(batch) <= 4 for batch in batches) and streamed.records == []
    assert streamed.report() == whole.report()


def references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value["reference"]
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def test_resources_come_in_a_safe_store_order() -> None:
    """Whatever a resource refers to in the same extract is stored before it."""
    resources = emis().resources
    position = {f"{r['resourceType']}/{r['id']}": i for i, r in enumerate(resources)}
    for i, resource in enumerate(resources):
        assert all(position[ref] < i for ref in references(resource) if ref in position), resource["resourceType"]


def written(result: adapters.IngestResult) -> list[str]:
    return [f"{r['resourceType']}/{r['id']}" for r in result.resources]


def test_the_provenance_names_the_pushing_organisation_and_what_was_written() -> None:
    result = emis()
    provenance = result.provenance(written(result))
    get_fhir_model_class("Provenance").model_validate(provenance)
    assert provenance["agent"][0]["who"]["identifier"] == PRACTICE
    assert sorted(t["reference"] for t in provenance["target"]) == sorted(written(result))
    assert len(provenance["target"]) == sum(result.report()["resources"].values())


def test_the_provenance_stays_bounded_and_lists_patients_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters, "PROVENANCE_TARGET_LIMIT", 3)
    result = emis()
    patients = [r for r in written(result) if r.startswith("Patient/")]
    others = [r for r in written(result) if not r.startswith("Patient/")]
    assert len(patients) == 3 and len(others) > 3
    provenance = result.provenance(others + patients)
    assert [t["reference"] for t in provenance["target"]] == patients
    assert "records accepted" in provenance["entity"][0]["what"]["display"]


def test_gp_and_social_work_records_about_one_person_share_one_patient() -> None:
    social = adapters.ingest("socialwork", FIXTURES / "socialwork.json", ids=PRACTICE_IDS)
    ann = lambda result: {r["id"] for r in result.resources if r["resourceType"] == "Patient" and r["identifier"][0]["value"] == "0101800002"}  # noqa: E731
    assert ann(emis()) == ann(social) and len(ann(social)) == 1


def test_every_resource_from_every_source_validates_and_is_labelled() -> None:
    social = adapters.ingest("socialwork", FIXTURES / "socialwork.json", ids=PRACTICE_IDS)
    for resource in emis().resources + social.resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert resource["meta"]["source"].startswith("https://pathway.scot/source/")
        assert resource["meta"]["security"]


def test_an_unknown_source_or_unreadable_input_is_an_ingest_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="unknown source"):
        adapters.ingest("vision", b"", ids=PRACTICE_IDS)
    with pytest.raises(IngestError):
        adapters.ingest("emis", tmp_path / "missing.zip", ids=PRACTICE_IDS)


if __name__ == "__main__":  # regenerate the expected report (check every difference by hand)
    (EMIS / "expected" / "report.json").write_text(json.dumps(outcome(emis()), indent=1, ensure_ascii=False) + "\n")
