"""FHIR API throughput on the real paths: encrypted creates, and reads by another organisation
through consent, over HTTP on 127.0.0.1.

Starts `pathway serve` on a fresh database in a temporary directory with the demo
partnership's conf/ (its agreements) imported, registers the HSCP's social-work client and
a rehab-facility client with real keys. The HSCP creates Patients (sealed at rest); each
person then gets a Consent permitting the facility for treatment (and the first 200 two
Observations); the facility reads them, which is decided by the consent policy and audited:
reads, ``Observation?patient=...&_include=Observation:subject`` and
``Patient?_id=...&_revinclude=Observation:subject``. Only correct answers count (a create's
201; a read's 200 holding the person, and their Observations for the searches).

    .venv/bin/python bench/fhir_api.py [--seconds 10] [--concurrency 16] [--database-url URL]

Targets on a 2-core machine with SQLite: >= 800 encrypted creates/s; consent-filtered reads
by a non-custodian >= 2,000/s with p99 < 30 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._serve import Call, Connection, add_load_arguments, add_serving_arguments, drive, pathway_serve, sharing  # noqa: E402
from gateway.auth.clients import credentials, new_client_key, register_client  # noqa: E402
from gateway.client import PathwayClient  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from mappings.identifiers import CHI_SYSTEM, make_chi  # noqa: E402
from mappings.labels import label_resource  # noqa: E402

HSCP = "https://fhir.nhs.uk/Id/ods-organization-code|S037"
FACILITY = "https://pathway.scot/Id/partner|rehab-tayview-house"
FACILITY_ID = {"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}


# The GET of each phase after "create", for one of the ids it is given.
READS = {
    "read": "/fhir/Patient/{id}",
    "include": "/fhir/Observation?patient=Patient/{id}&_include=Observation:subject",
    "revinclude": "/fhir/Patient?_id={id}&_revinclude=Observation:subject",
}
WITH_OBSERVATIONS = 200  # patients given two Observations each for the search phases


def _patient(n: int) -> dict:  # type: ignore[type-arg]
    born = date(1960 + n % 40, 1 + n % 12, 1 + n % 28)
    gender = "female" if n % 2 else "male"
    return {
        "resourceType": "Patient",
        "identifier": [{"system": CHI_SYSTEM, "value": make_chi(born, gender, (n // 480) % 50)}],
        "name": [{"given": [f"Bench{n}"], "family": "Person"}],
        "gender": gender,
        "birthDate": born.isoformat(),
    }


def create(connection: Connection, n: int, _: None) -> None:
    """The HSCP creates a Patient (stored sealed); a correct answer is a 201 with it."""
    data = connection.call(Call("POST", "/fhir/Patient", orjson.dumps(_patient(n)), 201, (b'"resourceType":"Patient"',), kind="create"))
    if data is not None:
        connection.tally.kept.append(orjson.loads(data)["id"])


def read(connection: Connection, n: int, job: tuple[str, list[str], str]) -> None:
    """The facility reads what the HSCP holds, through the person's consent; a correct
    answer is a 200 holding the person's id (and, for the searches, their Observations)."""
    phase, ids, token = job
    ident = ids[n % len(ids)]
    wanted = (ident.encode(),) if phase == "read" else (ident.encode(), b'"resourceType":"Observation"')
    connection.call(Call("GET", READS[phase].format(id=ident), None, 200, wanted, (("Authorization", f"Bearer {token}"),), kind=phase))


def consent_to_facility(database_url: str, secrets: Path, patients: list[str]) -> None:
    """Each person's Consent (recorded by the HSCP) permitting the facility for treatment,
    and two Observations about the first WITH_OBSERVATIONS (set-up, not timed)."""
    gateway = Gateway.start(Settings(database_url=database_url, secrets_dir=secrets, run_workers=False))
    try:
        with gateway.transaction() as session:
            repo = gateway.repository(session)
            for n, patient in enumerate(patients):
                repo.create(label_resource({
                    "resourceType": "Consent", "status": "active", "scope": {"coding": [{"code": "patient-privacy"}]},
                    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                    "patient": {"reference": f"Patient/{patient}"}, "dateTime": "2026-01-01",
                    "provision": {"type": "permit", "actor": [{"reference": {"identifier": FACILITY_ID}}], "purpose": [{"code": "TREAT"}]},
                }), HSCP)
                for value in (1, 2) if n < WITH_OBSERVATIONS else ():
                    repo.create(label_resource({"resourceType": "Observation", "status": "final", "code": {"text": "bench"},
                                                "subject": {"reference": f"Patient/{patient}"}, "valueInteger": value}), HSCP)
    finally:
        gateway.close()


def facility_credentials(database_url: str, secrets: Path, base: str) -> dict[str, Any]:
    gateway = Gateway.start(Settings(database_url=database_url, secrets_dir=secrets, run_workers=False))
    try:
        key = new_client_key()
        with gateway.transaction() as session:
            return credentials(register_client(session, "bench-facility", FACILITY, ["system/*.read"], public_keys=[key.public_jwk]), key, base)
    finally:
        gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_load_arguments(parser, seconds=10.0, concurrency="16")
    add_serving_arguments(parser, 8765)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()
    from bench.referral import prepare

    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/bench.db"
        secrets = Path(tmp) / "secrets"
        base = f"http://127.0.0.1:{args.port}"
        hscp, _ = prepare(database_url, secrets, 0, base)
        facility = facility_credentials(database_url, secrets, base)
        with pathway_serve(database_url, secrets, args.port, args.workers):
            print(f"Pathway FHIR API on {database_url.split(':')[0]}, {args.workers} worker(s), {args.seconds:g} s per phase: "
                  "the HSCP creates Patients (sealed at rest), the rehab facility reads them through each person's consent")
            server = f"pathway serve ({args.workers} worker{'s' if args.workers > 1 else ''})"
            for concurrency in args.concurrency:
                print(sharing(server, concurrency=concurrency, processes=args.processes))
                made = drive(create, None, args.port, PathwayClient(hscp).token(), concurrency=concurrency, seconds=args.seconds, processes=args.processes)
                print(made.line("create", f"create x{concurrency}"))
                consent_to_facility(database_url, secrets, made.kept[:5000])
                token = PathwayClient(facility).token()
                for phase in READS:
                    ids = made.kept[: 5000 if phase == "read" else WITH_OBSERVATIONS]
                    tally = drive(read, (phase, ids, token), args.port, token, concurrency=concurrency, seconds=args.seconds, processes=args.processes)
                    print(tally.line(phase, f"{phase} x{concurrency}"))
                    for error in tally.errors[:2]:
                        print(f"  error: {error}")


if __name__ == "__main__":
    main()
