"""Ingest benchmark: map a generated EMIS extract and compare with fhir.resources validation alone.

    python bench/ingest.py                 # 100,000 patients (about 700,000 rows)
    python bench/ingest.py --patients 5000 # a quick run
    python bench/ingest.py --patients 20000 --store-patients 5000

Prints rows/s and resources/s for mapping (read, map, label, validate), the
process's peak memory, and the rate at which ``fhir.resources.R4B`` validates
the very same resources on its own (each batch is validated a second time, timed
apart from mapping, so memory stays flat): the ceiling mapping is measured against
(target: mapping at least half the ceiling, peak memory under 500 MB).

Then the real pipeline: `pathway ingest emis` of the same number of people (or
``--store-patients``) into a fresh SQLite database with the demo conf/ imported (mapping,
validation, labelling, sealing, blind indexes, audit and the writes), with its rows/s and
peak memory.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import adapters  # noqa: E402
from adapters.common import IdScheme, Mapped  # noqa: E402
from fhir.resources.R4B import get_fhir_model_class  # noqa: E402
from mappings.identifiers import make_chi  # noqa: E402

ORG = "{5B0E0000-0000-4000-8000-000000000001}"
GP = "{5B0E0000-0000-4000-8000-0000000000A1}"
CLINICAL_CODES = [
    ("1001", "Opioid dependence", "E240.00", "75544000"),
    ("1002", "Alcohol dependence syndrome", "E23..00", "66590003"),
    ("1003", "Systolic blood pressure", "2469.00", "271649006"),
    ("1004", "Depressive disorder NEC", "E2B..00", ""),
]
DRUG_CODES = [("2001", "Methadone 1mg/ml oral solution sugar free", "900000000000001"), ("2002", "Buprenorphine 8mg sublingual tablets", "900000000000002")]


def _write(path: Path, header: list[str], rows: object) -> int:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        count = 0
        for row in rows:  # type: ignore[attr-defined]
            writer.writerow(row)
            count += 1
    return count


def _guid(kind: int, n: int) -> str:
    return f"{{{kind:08X}-0000-4000-8000-{n:012X}}}"


def generate(folder: Path, patients: int, observations: int, drugs: int, practice: tuple[str, str] = (ORG, "99999")) -> int:
    """Write an EMIS extract of ``patients`` people of ``practice`` (organisation GUID, ODS
    code); returns the number of data rows."""
    org, ods = practice
    rows = _write(folder / "Admin_Organisation.csv", ["OrganisationGuid", "OrganisationName", "ODSCode", "OrganisationType"], [[org, "Bench Practice", ods, "General Practice"]])
    rows += _write(folder / "Admin_UserInRole.csv", ["UserInRoleGuid", "OrganisationGuid", "Title", "GivenName", "Surname", "JobCategoryCode", "JobCategoryName"], [[GP, org, "Dr", "Ada", "Bench", "R0260", "GP"]])
    rows += _write(folder / "Coding_ClinicalCode.csv", ["CodeId", "Term", "ReadTermId", "SnomedCTConceptId"], CLINICAL_CODES)
    rows += _write(folder / "Coding_DrugCode.csv", ["CodeId", "Term", "DmdProductCodeId"], DRUG_CODES)

    def people() -> object:
        for n in range(patients):
            born = date(1950, 1, 1) + timedelta(days=n % 18_000)
            sex = "M" if n % 2 else "F"
            chi = make_chi(born, "male" if sex == "M" else "female", n // 36_000)
            yield [_guid(1, n), org, GP, sex, born.isoformat(), "Given", f"Family{n}", chi, "1 Bench St", "Dundee", "DD1 1AA", "false", "false", "false"]

    rows += _write(
        folder / "Admin_Patient.csv",
        ["PatientGuid", "OrganisationGuid", "UsualGpUserInRoleGuid", "Sex", "DateOfBirth", "GivenName", "Surname", "NhsNumber", "NumberAndStreet", "Town", "Postcode", "Deleted", "SpineSensitive", "IsConfidential"],
        people(),
    )
    rows += _write(
        folder / "CareRecord_Observation.csv",
        ["ObservationGuid", "PatientGuid", "OrganisationGuid", "EffectiveDate", "EffectiveDatePrecision", "ClinicianUserInRoleGuid", "CodeId", "Value", "NumericUnit", "Deleted", "IsConfidential"],
        (
            [_guid(2, n * observations + k), _guid(1, n), org, "2026-03-02", "YMD", GP, CLINICAL_CODES[k % len(CLINICAL_CODES)][0], "128" if k % 4 == 2 else "", "mmHg" if k % 4 == 2 else "", "false", "false"]
            for n in range(patients)
            for k in range(observations)
        ),
    )
    rows += _write(
        folder / "Prescribing_DrugRecord.csv",
        ["DrugRecordGuid", "PatientGuid", "OrganisationGuid", "EffectiveDate", "EffectiveDatePrecision", "ClinicanUserInRoleGuid", "CodeId", "Dosage", "PrescriptionType", "IsActive", "Deleted"],
        ([_guid(3, n * drugs + k), _guid(1, n), org, "2026-01-05", "YMD", GP, DRUG_CODES[k % 2][0], "as directed", "Repeat", "true", "false"] for n in range(patients) for k in range(drugs)),
    )
    rows += _write(
        folder / "Prescribing_IssueRecord.csv",
        ["IssueRecordGuid", "PatientGuid", "OrganisationGuid", "DrugRecordGuid", "EffectiveDate", "CodeId", "Dosage", "Quantity", "QuantityUnit", "CourseDurationInDays", "Deleted"],
        ([_guid(4, n * drugs + k), _guid(1, n), org, _guid(3, n * drugs + k), "2026-02-01", DRUG_CODES[k % 2][0], "as directed", "14", "tablet", "14", "false"] for n in range(patients) for k in range(drugs)),
    )
    return rows


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


# A practice of the demo conf/, so that `pathway ingest` accepts its extract.
DEMO_PRACTICE = ("{7A1C0000-0000-4000-8000-000000000001}", "21506")
DEMO_PRACTICE_KEY = "https://fhir.nhs.uk/Id/ods-organization-code|21506"


def store_run(tmp: Path, patients: int, observations: int, drugs: int) -> None:
    """`pathway ingest emis` (the real pipeline: map, validate, label, seal, index, audit, write)
    of ``patients`` people into a fresh SQLite database with the demo conf/ imported; prints
    rows/s, resources written/s and the command's peak memory."""
    from gateway.conf import load_conf
    from gateway.directory import import_conf
    from gateway.runtime import Gateway
    from gateway.settings import Settings

    folder = tmp / "extract-for-store"
    folder.mkdir()
    rows = generate(folder, patients, observations, drugs, DEMO_PRACTICE)
    settings = Settings(database_url=f"sqlite:///{tmp}/ingest.db", secrets_dir=tmp / "secrets", conf_dir=REPO / "conf", run_workers=False)
    gateway = Gateway.start(settings)
    import_conf(gateway, load_conf(REPO / "conf"), REPO / "conf")
    gateway.close()
    env = {**os.environ, **settings.to_env(), "PATHWAY_LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "ingest", "emis", str(folder), "--org", DEMO_PRACTICE_KEY],
                          env=env, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pathway ingest failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    written = report.get("accepted", 0)
    print(f"store:    pathway ingest of {patients:,} patients ({rows:,} rows) into SQLite in {elapsed:.1f} s = {rows / elapsed:,.0f} rows/s, "
          f"{written / elapsed:,.0f} records/s ({written:,} accepted), peak memory {peak_rss_mb(resource.RUSAGE_CHILDREN):,.0f} MB "
          "(sharing the cores with nothing else of this bench)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--observations", type=int, default=4, help="observations per patient")
    parser.add_argument("--drugs", type=int, default=1, help="drug records (and issues) per patient")
    parser.add_argument("--store-patients", type=int, default=None, help="patients for the `pathway ingest` run into a database (default: --patients; 0: skip it)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        rows = generate(folder, args.patients, args.observations, args.drugs)
        print(f"generated {rows:,} rows for {args.patients:,} patients in {time.perf_counter() - started:.1f} s")

        produced, validating = 0, 0.0
        models: dict[str, Any] = {}

        def validate_again(batch: list[Mapped]) -> None:
            """The ceiling: fhir.resources alone validating the very resources mapping produced."""
            nonlocal produced, validating
            started = time.perf_counter()
            for record in batch:
                for built in record.resources:
                    kind = built["resourceType"]
                    model = models.get(kind) or models.setdefault(kind, get_fhir_model_class(kind))
                    model.model_validate(built)
                produced += len(record.resources)
            validating += time.perf_counter() - started

        started = time.perf_counter()
        result = adapters.ingest("emis", folder, ids=IdScheme.random("https://fhir.nhs.uk/Id/ods-organization-code|99999"), on_batch=validate_again)
        mapping = time.perf_counter() - started - validating
        report = result.report()
    rate, ceiling = produced / mapping, produced / validating
    print(f"mapping:  {mapping:.1f} s, {rows / mapping:,.0f} rows/s, {rate:,.0f} resources/s "
          f"({report['accepted']:,} accepted, {len(report['quarantined']):,} quarantined), peak memory {peak_rss_mb():,.0f} MB")
    print(f"ceiling:  fhir.resources alone validates the same {produced:,} resources at {ceiling:,.0f} resources/s")
    print(f"mapping runs at {rate / ceiling:.0%} of the ceiling (target >= 50%); peak memory target < 500 MB")
    store_patients = args.patients if args.store_patients is None else args.store_patients
    if store_patients:
        with tempfile.TemporaryDirectory() as tmp:
            store_run(Path(tmp), store_patients, args.observations, args.drugs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
