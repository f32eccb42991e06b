"""Mixed load on a real gateway: referrals through the pathway, consent-filtered reads, Task moves.

Starts `pathway serve` on a fresh database with the demo partnership's conf/ loaded,
registers the HSCP's social-work client and the rehab facility's client with real keys,
then drives a mix from http.client connections in several processes for a bounded time,
paced to a target rate (0 = as fast as the connections go):

- referral (2 requests): the social worker registers a person and submits the rehab
  referral, which opens the pathway Task, EpisodeOfCare and CarePlan in one transaction;
- move (2 requests): the social worker finds the referral's Task and accepts it
  (initial-meeting, status accepted) with JSON Patch and If-Match;
- read (1 request): the social worker reads a person it holds, or the facility searches
  the Tasks it owns, or looks a stored person up by CHI: consent-filtered reads that return
  data (``--people`` people are stored first, each with a Consent permitting the facility
  and a Task the facility owns).

Prints throughput, p50/p95/p99 per kind (correct answers only) and the error count (any
status the step did not expect, or an answer without what it should hold).

    .venv/bin/python bench/load.py [--seconds 30] [--rate 300] [--concurrency 16] [--people 500] [--database-url URL]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._serve import Call, Connection, add_load_arguments, add_serving_arguments, drive, pathway_serve, percentile, sharing  # noqa: E402
from gateway.auth.clients import credentials, new_client_key, register_client  # noqa: E402
from gateway.client import PathwayClient  # noqa: E402
from gateway.conf import load_conf  # noqa: E402
from gateway.directory import import_conf  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from mappings.identifiers import CHI_SYSTEM, REFERRAL_SYSTEM, make_chi  # noqa: E402
from mappings.labels import label_resource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HSCP = "https://fhir.nhs.uk/Id/ods-organization-code|S037"
FACILITY = "https://pathway.scot/Id/partner|rehab-tayview-house"
FACILITY_ID = {"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}
STAGE = "https://pathway.scot/CodeSystem/stage"
MIX = {"referral": 0.15, "move": 0.15, "read": 0.70}  # of steps; referral and move are two requests each


def _patient(n: int) -> dict[str, Any]:
    born = date(1960 + n % 40, 1 + n % 12, 1 + n % 28)
    gender = "female" if n % 2 else "male"
    return {
        "resourceType": "Patient",
        "identifier": [{"system": CHI_SYSTEM, "value": make_chi(born, gender, (n // 480) % 50)}],
        "name": [{"given": [f"Load{n}"], "family": "Person"}],
        "gender": gender,
        "birthDate": born.isoformat(),
    }


def _referral(patient_ref: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": REFERRAL_SYSTEM, "value": f"LOAD-{n}"}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": "https://pathway.scot/CodeSystem/request-category", "code": "rehab-referral"}]}],
        "subject": {"reference": patient_ref},
        "requester": {"reference": "PractitionerRole/kw-sarah-mcintyre"},
        "reasonCode": [{"text": "Alcohol dependence; ready for rehab"}],
    }


_mine = threading.local()  # each connection's own people and referrals


def _call(connection: Connection, kind: str, method: str, path: str, token: str, body: Any = None, expect: int = 200,
          contains: tuple[bytes, ...] = (), headers: tuple[tuple[str, str], ...] = ()) -> dict[str, Any] | None:
    payload = None if body is None else orjson.dumps(body)
    data = connection.call(Call(method, path, payload, expect, contains, (("Authorization", f"Bearer {token}"), *headers), kind))
    return orjson.loads(data) if data else None


def step(connection: Connection, n: int, job: dict[str, Any]) -> None:
    """One step of the mix (see the module's description), then a pause to keep to the rate."""
    started = time.perf_counter()
    if not hasattr(_mine, "people"):
        _mine.people, _mine.referrals, _mine.chance = [], [], random.Random(n)
    chance, social, facility, known = _mine.chance, job["tokens"]["social"], job["tokens"]["facility"], job["known"]
    kind = chance.choices(list(MIX), list(MIX.values()))[0]
    if kind == "move" and not _mine.referrals:
        kind = "referral"
    if kind == "referral":
        patient = _call(connection, "referral", "POST", "/fhir/Patient", social, _patient(1_000_000 + n), 201)
        if patient:
            _mine.people.append(f"Patient/{patient['id']}")
            referral = _call(connection, "referral", "POST", "/fhir/ServiceRequest", social, _referral(_mine.people[-1], n), 201)
            if referral:
                _mine.referrals.append(referral["id"])
    elif kind == "move":
        found = _call(connection, "move", "GET", f"/fhir/Task?focus=ServiceRequest/{_mine.referrals.pop()}", social, contains=(b'"resourceType":"Task"',))
        tasks = [e["resource"] for e in (found or {}).get("entry", []) if e["resource"]["resourceType"] == "Task"]
        if tasks:
            patch = [
                {"op": "replace", "path": "/status", "value": "accepted"},
                {"op": "replace", "path": "/businessStatus", "value": {"coding": [{"system": STAGE, "code": "initial-meeting"}]}},
            ]
            version = tasks[0]["meta"]["versionId"]
            headers = (("Content-Type", "application/json-patch+json"), ("If-Match", f'W/"{version}"'))
            _call(connection, "move", "PATCH", f"/fhir/Task/{tasks[0]['id']}", social, patch, 200, headers=headers)
    elif chance.random() < 0.5:
        person = chance.choice(_mine.people or [f"Patient/{known[i][0]}" for i in range(3)])
        _call(connection, "read", "GET", f"/fhir/{person}", social, contains=(person.split("/")[1].encode(),))
    elif chance.random() < 0.5:
        _call(connection, "read", "GET", "/fhir/Task?owner=Organization/rehab-tayview-house&status=requested&_count=20", facility,
              contains=(b'"resourceType":"Task"',))
    else:
        ident, chi = known[chance.randrange(len(known))]
        _call(connection, "read", "GET", f"/fhir/Patient?_count=20&identifier={CHI_SYSTEM}|{chi}", facility, contains=(ident.encode(),))
    if job["interval"]:
        time.sleep(max(0.0, job["interval"] - (time.perf_counter() - started)))


def _prepare(database_url: str, secrets: Path, base: str, people: int) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """Load conf/ into the database, register the two clients, and store ``people`` people held
    by the HSCP, each with a Consent permitting the facility for treatment and a Task the
    facility owns (so its consent-filtered reads return data); returns the credentials and
    the people's (id, CHI)."""
    gateway = Gateway.start(Settings(database_url=database_url, secrets_dir=secrets, conf_dir=REPO / "conf", run_workers=False))
    try:
        import_conf(gateway, load_conf(REPO / "conf"), REPO / "conf")
        made = {}
        for name, organization, scopes in (
            ("load-social-work", HSCP, ["system/*.read", "system/*.write"]),
            ("load-facility", FACILITY, ["system/*.read", "system/Task.write"]),
        ):
            key = new_client_key()
            with gateway.transaction() as session:
                made[name] = credentials(register_client(session, name, organization, scopes, public_keys=[key.public_jwk]), key, base)
        known = []
        with gateway.transaction() as session:
            repo = gateway.repository(session)
            for n in range(people):
                patient = repo.create(label_resource(_patient(n)), HSCP)
                reference = {"reference": patient.reference}
                repo.create(label_resource({
                    "resourceType": "Consent", "status": "active", "scope": {"coding": [{"code": "patient-privacy"}]},
                    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}], "patient": reference, "dateTime": "2026-01-01",
                    "provision": {"type": "permit", "actor": [{"reference": {"identifier": FACILITY_ID}}], "purpose": [{"code": "TREAT"}]},
                }), HSCP)
                repo.create(label_resource({"resourceType": "Task", "status": "requested", "intent": "order", "for": reference,
                                            "owner": {"reference": "Organization/rehab-tayview-house"}}), HSCP)
                known.append((patient.id, patient.resource["identifier"][0]["value"]))
        return made, known
    finally:
        gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_load_arguments(parser, seconds=30.0, concurrency="16")
    parser.add_argument("--rate", type=float, default=300.0, help="target steps per second over all connections (0: unpaced)")
    parser.add_argument("--people", type=int, default=500, help="people stored before the run, each with a consent for the facility and a Task it owns")
    add_serving_arguments(parser, 8766)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary directory (give a fresh PostgreSQL database to test that)")
    args = parser.parse_args()

    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/load.db"
        base = f"http://127.0.0.1:{args.port}"
        creds, known = _prepare(database_url, Path(tmp) / "secrets", base, args.people)
        with pathway_serve(database_url, Path(tmp) / "secrets", args.port, args.workers):
            tokens = {"social": PathwayClient(creds["load-social-work"]).token(), "facility": PathwayClient(creds["load-facility"]).token()}
            for concurrency in args.concurrency:
                interval = concurrency / args.rate if args.rate else 0.0
                print(f"Pathway mixed load on {database_url.split(':')[0]}, {args.workers} worker(s), {args.seconds:g} s, target {args.rate:.0f} steps/s")
                print(sharing(f"pathway serve ({args.workers} worker{'s' if args.workers > 1 else ''})", concurrency=concurrency, processes=args.processes))
                job = {"tokens": tokens, "known": known, "interval": interval}
                tally = drive(step, job, args.port, None, concurrency=concurrency, seconds=args.seconds, processes=args.processes)
                every = [x for samples in tally.latencies.values() for x in samples]
                tally.latencies["all"] = every
                for kind in sorted(tally.latencies):
                    samples = tally.latencies[kind]
                    print(f"{tally.line(kind)}   p95 {percentile(samples, 0.95):6.1f} ms")
                print(f"errors    {len(tally.errors)}")
                for error in list(dict.fromkeys(tally.errors))[:10]:
                    print(f"  {error}")
                failed = failed or bool(tally.errors)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
