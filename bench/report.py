"""Report generation over many referrals: the quarter's waits, completeness and MAT 1 (and the
waits CSV and MeasureReport) computed from the stored, encrypted FHIR resources.

    .venv/bin/python bench/report.py                      # 100,000 referrals
    .venv/bin/python bench/report.py --referrals 10000    # a quick run
    .venv/bin/python bench/report.py --database-url postgresql://...
    .venv/bin/python bench/report.py --database-url sqlite:////tmp/r/bench.db [--reuse]   # keep it; time again later

Stores, per referral, what the pathway would: a Patient (with a CHI), the rehab-referral
ServiceRequest, its pathway Task, and for most a resource allocation decision; some are
admitted (facility Task), some carry a clock adjustment, some start OST (MedicationStatement).
Storing goes through the repository (sealed, indexed) and is timed apart. Then it times
``Reports.load`` (reading and decrypting everything once) and the reports for one quarter,
a few runs, and prints the figures: wall time and this process's CPU time (on a shared
machine the wall time grows with the load average; the CPU time much less).
Target: under 10 s for 100,000 referrals.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.pathway import codes  # noqa: E402
from gateway.pathway.clock import CLOCK_ADJUSTMENT, CLOCK_ADJUSTMENT_SYSTEM  # noqa: E402
from gateway.reporting.export import Reports, to_csv  # noqa: E402
from gateway.reporting.measure import waits_measure_report  # noqa: E402
from gateway.reporting.quarters import Quarter  # noqa: E402
from gateway.reporting.waits import WAITS_COLUMNS  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from mappings.identifiers import CHI_SYSTEM, REFERRAL_SYSTEM, make_chi  # noqa: E402

HSCP = "https://fhir.nhs.uk/Id/ods-organization-code|S037"
QUARTER = Quarter(2026, 3)
SUBSTANCES = (["alcohol"], ["opioids"], ["opioids", "alcohol"], ["cocaine"], [])


def _person(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """One referral's resources, received during 2026 up to the end of the third quarter."""
    patient_id, request_id, task_id = f"p{n}", f"sr{n}", f"t{n}"
    received = date(2026, 1, 1) + timedelta(days=rng.randrange(273))
    patient = {"resourceType": "Patient", "id": patient_id, "identifier": [{"system": CHI_SYSTEM, "value": make_chi(date(1970, 1, 1) + timedelta(days=n % 9000), "male", n % 97)}]}
    subject = {"reference": f"Patient/{patient_id}"}
    request = {
        "resourceType": "ServiceRequest", "id": request_id, "status": "active", "intent": "order",
        "identifier": [{"system": REFERRAL_SYSTEM, "value": f"REF-{n}"}],
        "category": [codes.concept(codes.REQUEST_CATEGORY_SYSTEM, codes.REHAB_REFERRAL)],
        "subject": subject, "authoredOn": received.isoformat(), "requester": {"reference": "PractitionerRole/kw-sarah-mcintyre"},
        "reasonCode": [{"coding": [codes.coding(codes.SUBSTANCE_SYSTEM, s) for s in SUBSTANCES[n % len(SUBSTANCES)]]}],
    }
    decided = received + timedelta(days=rng.choice((3, 7, 10, 14, 18, 21, 25, 35)))
    stage = "assessment" if rng.random() < 0.8 else "initial-meeting"
    task: dict[str, Any] = {
        "resourceType": "Task", "id": task_id, "status": "in-progress", "intent": "order",
        "code": codes.concept(codes.TASK_TYPE_SYSTEM, codes.PATHWAY_TASK), "businessStatus": codes.concept(codes.STAGE_SYSTEM, stage),
        "focus": {"reference": f"ServiceRequest/{request_id}"}, "for": subject, "authoredOn": received.isoformat(),
        "owner": {"reference": "Organization/dundee-hscp"},
    }
    if n % 10 == 0:
        away = {"start": (received + timedelta(days=2)).isoformat(), "end": (received + timedelta(days=8)).isoformat()}
        task["extension"] = [{"url": CLOCK_ADJUSTMENT, "extension": [
            {"url": "reason", "valueCoding": codes.coding(CLOCK_ADJUSTMENT_SYSTEM, "unavailable")}, {"url": "period", "valuePeriod": away}]}]
    resources = [patient, request, task]
    if stage == "assessment" and n % 50:  # one in fifty past the decision has no date: a completeness problem
        resources.append({
            "resourceType": "QuestionnaireResponse", "questionnaire": codes.RESOURCE_ALLOCATION, "status": "completed",
            "authored": decided.isoformat(), "basedOn": [{"reference": f"ServiceRequest/{request_id}"}], "subject": subject,
            "item": [{"linkId": "decision", "answer": [{"valueCoding": {"code": "yes"}}]}],
        })
    if n % 4 == 1:
        resources.append({"resourceType": "MedicationStatement", "status": "active", "subject": subject,
                          "medicationCodeableConcept": {"text": "Methadone 1mg/ml oral solution"}, "effectiveDateTime": (received + timedelta(days=n % 3)).isoformat()})
    if n % 5 == 2 and stage == "assessment":
        resources.append({"resourceType": "Task", "status": "in-progress", "intent": "order", "code": codes.concept(codes.TASK_TYPE_SYSTEM, codes.FACILITY_TASK),
                          "partOf": [{"reference": f"Task/{task_id}"}], "for": subject, "focus": {"reference": f"ServiceRequest/{request_id}"},
                          "owner": {"reference": "Organization/rehab-tayview-house"}, "executionPeriod": {"start": (decided + timedelta(days=40)).isoformat()}})
    return resources


def populate(gateway: Gateway, referrals: int, batch: int = 2000) -> int:
    rng = random.Random(16)
    stored = 0
    for start in range(0, referrals, batch):
        with gateway.transaction() as session:
            repo = gateway.repository(session)
            for n in range(start, min(start + batch, referrals)):
                for resource in _person(n, rng):
                    repo.create(resource, HSCP)
                    stored += 1
    return stored


def generate(gateway: Gateway) -> dict[str, Any]:
    """The reports for the quarter, as the CLI and the MeasureReport route make them."""
    with gateway.reading() as session:
        reports = Reports.load(gateway.repository(session), date(2026, 12, 1))
        rows = reports.waits(QUARTER)
        text = to_csv(WAITS_COLUMNS, (r.csv_row() for r in rows))
        report = waits_measure_report(rows, QUARTER, None, datetime.now(timezone.utc))
        completeness = reports.completeness(QUARTER)
        mat = reports.mat1(QUARTER)
    return {"referrals": len(reports.referrals), "csv_bytes": len(text), "total": rows[0], "measure_groups": len(report["group"]), "completeness": completeness, "mat": mat}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--referrals", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url")
    parser.add_argument("--reuse", action="store_true", help="keep what --database-url already holds (from an earlier run) instead of storing referrals")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pathway-bench-report-") as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        # keys beside a given SQLite file, so that --reuse can open what an earlier run stored
        secrets = Path(url.removeprefix("sqlite:///")).parent / "secrets" if url.startswith("sqlite:///") else Path(tmp) / "secrets"
        settings = Settings(database_url=url, secrets_dir=secrets, run_workers=False)
        gateway = Gateway.start(settings)
        try:
            if not args.reuse:
                began = time.perf_counter()
                stored = populate(gateway, args.referrals)
                print(f"stored {stored:,} resources for {args.referrals:,} referrals in {time.perf_counter() - began:.1f} s (setup, not timed below)")
            times, cpu = [], []
            for _ in range(args.runs):
                began, began_cpu = time.perf_counter(), time.process_time()
                result = generate(gateway)
                times.append(time.perf_counter() - began)
                cpu.append(time.process_time() - began_cpu)
            total, completeness, mat = result["total"], result["completeness"], result["mat"]
            print(f"report generation over {result['referrals']:,} referrals ({QUARTER}): "
                  f"min {min(times):.2f} s, median {statistics.median(times):.2f} s, max {max(times):.2f} s over {args.runs} runs (target < 10 s); "
                  f"CPU time min {min(cpu):.2f} s, median {statistics.median(cpu):.2f} s (the machine's load average was {os.getloadavg()[0]:.1f})")
            print(f"  waits: {total.completed:,} completed, {total.completed_share:.1%} within 3 weeks; {total.ongoing:,} ongoing")
            print(f"  completeness: {completeness.complete:,} of {completeness.records:,} complete; MAT 1: {mat.started:,} started OST, {mat.share_same_day:.1%} same day")
        finally:
            gateway.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
