"""EMIS-style GP extracts: golden output, quarantine reasons, input forms, deltas, identity and streaming memory."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from adapters import IngestError, MemoryPatientIndex
from adapters.common import ForeignRecords, IdScheme, Quarantined
from adapters.emis import read
from adapters.emis.extract import effective

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "emis"
EXTRACT = FIXTURES / "extract"
CHI = "https://fhir.nhs.uk/Id/chi-number"
NHS = "https://fhir.nhs.uk/Id/nhs-number"
GUID = "https://pathway.scot/Id/emis/patient-guid"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ORG = "{7A1C0000-0000-4000-8000-000000000001}"
IDS = IdScheme(bytes(range(32)), "https://fhir.nhs.uk/Id/ods-organization-code|21506")  # fixed: expected.json names its ids
CALLUM = "{7A1C0000-0000-4000-8000-0000000000B1}"


def outcome(items: Any) -> dict[str, list[dict[str, Any]]]:
    """What an extract became, in the shape of expected.json."""
    mapped, quarantined = [], []
    for item in items:
        if isinstance(item, Quarantined):
            quarantined.append({"location": item.location, "reason": item.reason})
        else:
            mapped.append(
                {"location": item.location, "resources": item.resources, "persons": sorted(item.persons), "deletions": [list(d) for d in item.deletions], "reviews": item.reviews}
            )
    return {"mapped": mapped, "quarantined": quarantined}


def mapped(data: bytes | Path = EXTRACT, index: MemoryPatientIndex | None = None) -> dict[str, list[dict[str, Any]]]:
    return outcome(read(data, IDS, index))


def resources(data: bytes | Path = EXTRACT) -> list[dict[str, Any]]:
    return [r for record in mapped(data)["mapped"] for r in record["resources"]]


def at(location: str, result: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The mapped or quarantined entry for one source location."""
    result = result or mapped()
    return next(e for e in result["mapped"] + result["quarantined"] if e["location"] == location)


def copy_extract(tmp_path: Path, **replace: str) -> Path:
    """The fixture extract in tmp_path, with some tables replaced by the given CSV text."""
    folder = tmp_path / "extract"
    shutil.copytree(EXTRACT, folder)
    for name, text in replace.items():
        (folder / f"{name}.csv").write_text(text, encoding="utf-8")
    return folder


def zipped(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.glob("*.csv")):
            archive.write(path, prefix + path.name)
    return buffer.getvalue()


# --- the golden file -----------------------------------------------------------------


def test_extract_maps_to_the_expected_fhir() -> None:
    assert mapped() == json.loads((FIXTURES / "expected.json").read_text())


# --- quarantine: one reason each, and the rest still loads ------------------------------


def test_a_code_missing_from_the_coding_files_quarantines_that_row_only() -> None:
    result = mapped()
    assert at("CareRecord_Observation.csv:8", result) == {"location": "CareRecord_Observation.csv:8", "reason": "CodeId '9999' is not in Coding_ClinicalCode.csv"}
    assert at("CareRecord_Observation.csv:7", result)["resources"] and at("CareRecord_Observation.csv:10", result)["deletions"]


def test_a_bad_chi_quarantines_the_patient_and_the_rows_about_them() -> None:
    result = mapped()
    assert at("Admin_Patient.csv:5", result)["reason"] == "CHI 0808880056 fails the modulus-11 check"
    assert at("CareRecord_Consultation.csv:6", result)["reason"] == "PatientGuid 7A1C0000-0000-4000-8000-0000000000B4 was not loaded (quarantined at Admin_Patient.csv:5)"


def test_a_chi_for_another_birth_date_is_quarantined(tmp_path: Path) -> None:
    patients = (EXTRACT / "Admin_Patient.csv").read_text(encoding="utf-8-sig").replace("M,1984-03-12", "M,1984-03-13")
    result = mapped(copy_extract(tmp_path, Admin_Patient=patients))
    assert at("Admin_Patient.csv:2", result)["reason"] == "CHI 1203840012 encodes a birth date other than 1984-03-13"


@pytest.mark.parametrize("digits", ["１２０３８４００１２", "١٢٠٣٨٤٠٠١٢"])  # full-width, Arabic-Indic
def test_a_chi_in_other_scripts_digits_is_quarantined(tmp_path: Path, digits: str) -> None:
    patients = (EXTRACT / "Admin_Patient.csv").read_text(encoding="utf-8-sig").replace("1203840012", digits)
    result = mapped(copy_extract(tmp_path, Admin_Patient=patients))
    assert at("Admin_Patient.csv:2", result)["reason"] == f"CHI {digits!r} is not 10 digits"


def test_a_chi_written_in_groups_is_read_as_the_same_person(tmp_path: Path) -> None:
    patients = (EXTRACT / "Admin_Patient.csv").read_text(encoding="utf-8-sig").replace("1203840012", "120 384 0012")
    patient = at("Admin_Patient.csv:2", mapped(copy_extract(tmp_path, Admin_Patient=patients)))["resources"][0]
    assert patient["id"] == IDS.person("1203840012") and {"system": CHI, "value": "1203840012"} in patient["identifier"]


def test_a_birth_date_in_the_future_is_quarantined(tmp_path: Path) -> None:
    patients = (EXTRACT / "Admin_Patient.csv").read_text(encoding="utf-8-sig").replace("M,1984-03-12", "M,2984-03-12")
    assert at("Admin_Patient.csv:2", mapped(copy_extract(tmp_path, Admin_Patient=patients)))["reason"] == "DateOfBirth 2984-03-12 is in the future"


def test_the_practice_of_another_organisation_refuses_the_whole_extract() -> None:
    with pytest.raises(ForeignRecords, match="CareRecord_Problem.csv:2: OrganisationGuid 7A1C0000-0000-4000-8000-000000000001 is Seagate Green's"):
        list(read(EXTRACT, IDS, None, {"7A1C0000-0000-4000-8000-000000000001": "Seagate Green"}))


def test_an_impossible_date_is_quarantined() -> None:
    assert at("CareRecord_Observation.csv:9")["reason"] == "EffectiveDate '2026-02-30' is not a real date (YYYY-MM-DD)"


def test_a_row_about_an_unknown_patient_is_quarantined() -> None:
    reason = "PatientGuid 7A1C0000-0000-4000-8000-0000000000B9 is not in Admin_Patient.csv for organisation 7A1C0000-0000-4000-8000-000000000001"
    assert at("CareRecord_Consultation.csv:5")["reason"] == reason


def test_the_same_guid_in_another_organisation_is_another_patient(tmp_path: Path) -> None:
    consultations = (
        "ConsultationGuid,PatientGuid,OrganisationGuid,EffectiveDate,EffectiveDatePrecision\n"
        f"{{C0000000-0000-4000-8000-000000000001}},{CALLUM},{{7A1C0000-0000-4000-8000-000000000002}},2026-03-02,YMD\n"
    )
    result = mapped(copy_extract(tmp_path, CareRecord_Consultation=consultations))
    assert "is not in Admin_Patient.csv for organisation 7A1C0000-0000-4000-8000-000000000002" in at("CareRecord_Consultation.csv:2", result)["reason"]


def test_a_row_with_the_wrong_number_of_columns_is_quarantined() -> None:
    assert at("Admin_Patient.csv:7")["reason"] == "row has 5 fields, the header has 28"


def test_a_resource_that_is_not_valid_fhir_is_quarantined(tmp_path: Path) -> None:
    # A code may not hold two spaces in a row: the mapping succeeds, R4B validation refuses it.
    codes = (EXTRACT / "Coding_ClinicalCode.csv").read_text() + "1005,Odd local code,E2  3.,,,,Diagnosis\n"
    observations = (
        "ObservationGuid,PatientGuid,OrganisationGuid,EffectiveDate,EffectiveDatePrecision,CodeId\n"
        f"{{D0000000-0000-4000-8000-000000000001}},{CALLUM},{ORG},2026-03-02,YMD,1005\n"
        f"{{D0000000-0000-4000-8000-000000000002}},{CALLUM},{ORG},2026-03-02,YMD,1003\n"
    )
    result = mapped(copy_extract(tmp_path, Coding_ClinicalCode=codes, CareRecord_Observation=observations))
    reason = at("CareRecord_Observation.csv:2", result)["reason"]
    assert reason.startswith("does not make valid FHIR: Observation.code.coding.0.code: String should match pattern")
    assert at("CareRecord_Observation.csv:3", result)["resources"][0]["code"]["text"] == "Systolic blood pressure"


def test_every_source_row_is_either_mapped_or_quarantined() -> None:
    result = mapped()
    locations = [e["location"] for e in result["mapped"] + result["quarantined"]]
    # 1 organisation, 1 user, 6 patients, 5 consultations, 8 observations, 2 drug records, 2 issues
    # (coding and problem rows are lookups, reported only when they cannot be read).
    assert len(locations) == len(set(locations)) == 25


# --- input forms ------------------------------------------------------------------------


def test_braces_case_bom_and_quoting_are_read() -> None:
    result = mapped()
    callum = at("Admin_Patient.csv:2", result)["resources"][0]  # the header starts with a BOM
    assert callum["name"][0]["family"] == "Fraser"
    kirsty = at("Admin_Patient.csv:4", result)["resources"][0]
    assert kirsty["address"][0]["line"] == ["12 Rose Street, Top Flat", "Broughty Ferry"]
    note = at("CareRecord_Observation.csv:4", result)["resources"][0]["note"]  # a quoted newline: one record
    assert note == [{"text": "Drinking since teens, now\nabstinent 3 months"}]
    # Lower case and no braces on the observation, braces on its problem row: still a problem.
    depression = at("CareRecord_Observation.csv:6", result)["resources"][0]
    assert depression["resourceType"] == "Condition" and depression["clinicalStatus"]["coding"][0]["code"] == "resolved"


def test_a_zip_gives_the_same_as_the_folder(tmp_path: Path) -> None:
    archive = zipped(EXTRACT, prefix="extract-2026-03/")
    (tmp_path / "extract.zip").write_bytes(archive)
    assert mapped(archive) == mapped() == mapped(tmp_path / "extract.zip")


def test_input_that_is_not_an_extract_is_an_ingest_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="neither a folder nor a zip"):
        list(read(b"PatientGuid,Sex\n1,M\n", IDS, None))
    with pytest.raises(IngestError, match="no EMIS extract files found"):
        list(read(tmp_path, IDS, None))


@pytest.mark.parametrize(
    ("value", "precision", "expected"),
    [
        ("2026-03-02 10:15:00", "YMDT", "2026-03-02T10:15:00+00:00"),
        ("2026-07-02T10:15:00", "YMDT", "2026-07-02T10:15:00+01:00"),  # British Summer Time
        ("2026-03-02 10:15:00", "YMD", "2026-03-02"),
        ("2026-03-01", "YM", "2026-03"),
        ("2026-01-01", "Y", "2026"),
        ("", "U", None),
        ("", "", None),
    ],
)
def test_effective_dates_keep_their_precision(value: str, precision: str, expected: str | None) -> None:
    assert effective({"EffectiveDate": value, "EffectiveDatePrecision": precision}, "EffectiveDate", "EffectiveDatePrecision") == expected


@pytest.mark.parametrize(
    ("value", "precision", "reason"),
    [
        ("2026-03-02", "DMY", "EffectiveDatePrecision 'DMY' is not one of YMDT, YMD, YM, Y, U"),
        ("", "YMD", "EffectiveDate is empty but EffectiveDatePrecision is YMD"),
        ("2026-03-02 25:00:00", "YMDT", "EffectiveDate time '25:00:00' is not a real time (HH:MM:SS)"),
    ],
)
def test_effective_dates_that_cannot_be_read_are_refused(value: str, precision: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        effective({"EffectiveDate": value, "EffectiveDatePrecision": precision}, "EffectiveDate", "EffectiveDatePrecision")


# --- deltas, labels, identity ------------------------------------------------------------


def test_deleted_rows_become_deletions_of_what_they_made() -> None:
    result = mapped()
    callum_id = IDS.person("1203840012")
    # The practice's own record of the person goes; the CHI-keyed Patient other sources share stays.
    ailsa = (ORG.strip("{}"), "7A1C0000-0000-4000-8000-0000000000B5")
    assert at("Admin_Patient.csv:6", result)["deletions"] == [["Patient", IDS.record("emis", "Patient", *ailsa)], ["RelatedPerson", IDS.record("emis", "RelatedPerson", *ailsa, "carer")]]
    consultation = at("CareRecord_Consultation.csv:4", result)
    assert consultation["resources"] == [] and consultation["deletions"] == [["Encounter", IDS.record("emis", "Encounter", ORG.strip("{}"), "7A1C0000-0000-4000-8000-0000000000C3")]]
    observation = at("CareRecord_Observation.csv:10", result)["deletions"]
    assert [kind for kind, _ in observation] == ["Observation", "Condition"]
    assert at("Prescribing_IssueRecord.csv:3", result)["deletions"][0][0] == "MedicationRequest"
    assert all(p == f"Patient/{callum_id}" for e in result["mapped"] if "Prescribing" in e["location"] for p in e["persons"])


def test_a_deleted_patient_row_withholds_later_rows_about_them(tmp_path: Path) -> None:
    consultations = (
        "ConsultationGuid,PatientGuid,OrganisationGuid,EffectiveDate,EffectiveDatePrecision\n"
        f"{{C0000000-0000-4000-8000-000000000001}},{{7A1C0000-0000-4000-8000-0000000000B5}},{ORG},2026-03-02,YMD\n"
    )
    reason = at("CareRecord_Consultation.csv:2", mapped(copy_extract(tmp_path, CareRecord_Consultation=consultations)))["reason"]
    assert reason == "PatientGuid 7A1C0000-0000-4000-8000-0000000000B5 was not loaded (deleted at Admin_Patient.csv:6)"


def test_confidential_and_spine_sensitive_records_are_restricted() -> None:
    result = mapped()
    lorna = at("Admin_Patient.csv:3", result)["resources"][0]  # SpineSensitive
    assert "address" not in lorna and "telecom" not in lorna
    assert {"system": CONFIDENTIALITY, "code": "R"} in lorna["meta"]["security"]
    assert {t["code"] for t in lorna["meta"]["tag"]} == {"demographics"}  # no contact-details to share
    telephone = at("CareRecord_Consultation.csv:3", result)["resources"][0]  # IsConfidential
    assert [s["code"] for s in telephone["meta"]["security"] if s["system"] == CONFIDENTIALITY] == ["R"]
    ordinary = at("CareRecord_Consultation.csv:2", result)["resources"][0]
    assert [s["code"] for s in ordinary["meta"]["security"] if s["system"] == CONFIDENTIALITY] == ["N"]


def test_substance_use_is_labelled_from_the_codes_and_the_medicine() -> None:
    result = mapped()
    opioids = at("CareRecord_Observation.csv:2", result)["resources"][0]
    methadone = at("Prescribing_DrugRecord.csv:2", result)["resources"][0]
    for resource in (opioids, methadone):
        assert {"SUD", "OPIOIDUD"} <= {s["code"] for s in resource["meta"]["security"]}
    assert opioids["resourceType"] == "Condition" and methadone["reasonReference"] == [{"reference": f"Condition/{opioids['id']}"}]


def test_every_patient_has_a_chi_or_is_flagged_for_match_review() -> None:
    result = mapped()
    records = [r for r in result["mapped"] if r["resources"] and r["resources"][0]["resourceType"] == "Patient"]
    assert len(records) == 3
    for record in records:
        patient = record["resources"][0]
        ids = {i["system"]: i["value"] for i in patient["identifier"]}
        if CHI in ids:
            assert patient["id"] == IDS.person(ids[CHI]) and record["reviews"] == []
        else:  # an English NHS number: kept under the practice's id, not linked to anyone on a guess
            assert ids[NHS] == "9434765919" and patient["id"] == IDS.record("emis", "Patient", *ids[GUID].split("/"))
            assert [r["reason"] for r in record["reviews"]] == ["no CHI: kept under the practice's own id"]
    assert at("Admin_Patient.csv:5", result)["reason"].startswith("CHI 0808880056")


def test_a_person_already_known_by_chi_keeps_their_patient_id() -> None:
    index = MemoryPatientIndex()
    index.add("already-known-callum", identifiers=[(CHI, "1203840012")])
    result = mapped(index=index)
    assert at("Admin_Patient.csv:2", result)["resources"][0]["id"] == "already-known-callum"
    assert at("CareRecord_Consultation.csv:2", result)["resources"][0]["subject"] == {"reference": "Patient/already-known-callum"}


def test_mapping_is_idempotent() -> None:
    assert mapped() == mapped()


def test_every_resource_is_valid_fhir_r4b() -> None:
    for resource in resources():
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


# --- streaming memory ---------------------------------------------------------------------


def _observations(folder: Path, rows: int) -> Path:
    """An extract whose observation table has ``rows`` rows: mapped ones, unknown codes and deletions."""
    shutil.copytree(EXTRACT, folder)
    mapped_row, cheap_rows = "1003,{v},mmHg,false", ("1003,{v},mmHg,true", "9999,{v},,false")
    with (folder / "CareRecord_Observation.csv").open("w", encoding="utf-8") as out:
        out.write("ObservationGuid,PatientGuid,OrganisationGuid,EffectiveDate,EffectiveDatePrecision,CodeId,Value,NumericUnit,Deleted\n")
        for n in range(rows):
            kind = mapped_row if n % 100 == 0 else cheap_rows[n % 2]
            out.write(f"{{{n:08X}-0000-4000-8000-000000000000}},{CALLUM},{ORG},2026-03-02,YMD,{kind.format(v=100 + n % 50)}\n")
    return folder


_STREAM_AND_MEASURE = """
import resource, sys
from pathlib import Path
from adapters.common import IdScheme
from adapters.emis import read
count = sum(1 for _ in read(Path(sys.argv[1]), IdScheme.random("a|b"), None))
print(count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _streamed_in_a_fresh_process(folder: Path) -> tuple[int, int]:
    """(records read, the process's peak resident memory in kB) for reading ``folder``."""
    done = subprocess.run([sys.executable, "-c", _STREAM_AND_MEASURE, str(folder)], capture_output=True, text=True, check=True, cwd=REPO, timeout=300)
    count, peak = done.stdout.split()
    return int(count), int(peak)


@pytest.mark.slow  # about 20 s; skip with -m "not slow"
def test_a_million_row_extract_streams_in_the_memory_of_a_tenth_of_it(tmp_path: Path) -> None:
    small_count, small_peak = _streamed_in_a_fresh_process(_observations(tmp_path / "small", 100_000))
    big_count, big_peak = _streamed_in_a_fresh_process(_observations(tmp_path / "big", 1_000_000))
    assert big_count - small_count == 900_000
    # Kept records would cost hundreds of MB more; streaming costs the same peak.
    assert big_peak - small_peak < 16 * 1024, (small_peak, big_peak)
