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
  Tasks naming it and people it has no consent for (consent-filtered, withheld warning).

Prints throughput, p50/p95/p99 per kind and the error count (any 5xx, or a status the
step did not expect).

    .venv/bin/python bench/load.py [--seconds 30] [--rate 300] [--processes 2] [--threads 8] [--database-url URL]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._serve import add_serving_arguments, pathway_serve, percentile  # noqa: E402
from gateway.auth.clients import credentials, new_client_key, register_client  # noqa: E402
from gateway.client import PathwayClient  # noqa: E402
from gateway.conf import load_conf  # noqa: E402
from gateway.directory import import_conf  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from mappings.identifiers import CHI_SYSTEM, REFERRAL_SYSTEM, make_chi  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HSCP = "https://fhir.nhs.uk/Id/ods-organization-code|S037"
FACILITY = "https://pathway.scot/Id/partner|rehab-tayview-house"
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


class Connection:
    """One keep-alive http.client connection that times and checks each request."""

    def __init__(self, port: int, token: str, latencies: dict[str, list[float]], errors: list[str]) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        self.latencies, self.errors = latencies, errors

    def call(self, kind: str, method: str, path: str, body: Any = None, expect: int = 200, headers: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, dict[str, str]]:
        payload = None if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
        started = time.perf_counter()
        try:
            self.http.request(method, path, body=payload, headers={**self.headers, **(headers or {})})
            response = self.http.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError) as failure:  # counted, then a fresh connection
            self.errors.append(f"{kind} {method} {path.split('?')[0]} -> connection failed: {failure!r}")
            self.http.close()
            return None, {}
        self.latencies[kind].append(time.perf_counter() - started)
        if response.status != expect:
            self.errors.append(f"{kind} {method} {path.split('?')[0]} -> {response.status}: {data[:160]!r}")
            return None, {}
        return orjson.loads(data) if data else None, {k.lower(): v for k, v in response.getheaders()}


def _worker(port: int, tokens: dict[str, str], seed: int, deadline: float, interval: float, known: list[str], out: dict[str, Any], lock: threading.Lock) -> None:
    chance = random.Random(seed)
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    social = Connection(port, tokens["social"], latencies, errors)
    facility = Connection(port, tokens["facility"], latencies, errors)
    people, referrals = list(known), []
    n = seed * 1_000_000
    next_at = time.perf_counter()
    while time.time() < deadline:
        kind = chance.choices(list(MIX), list(MIX.values()))[0]
        if kind == "move" and not referrals:
            kind = "referral"
        n += 1
        if kind == "referral":
            patient, _ = social.call("referral", "POST", "/fhir/Patient", _patient(n), 201)
            if patient:
                people.append(f"Patient/{patient['id']}")
                referral, _ = social.call("referral", "POST", "/fhir/ServiceRequest", _referral(people[-1], n), 201)
                if referral:
                    referrals.append(referral["id"])
        elif kind == "move":
            found, _ = social.call("move", "GET", f"/fhir/Task?focus=ServiceRequest/{referrals.pop()}")
            tasks = [e["resource"] for e in (found or {}).get("entry", []) if e["resource"]["resourceType"] == "Task"]
            if tasks:
                patch = [
                    {"op": "replace", "path": "/status", "value": "accepted"},
                    {"op": "replace", "path": "/businessStatus", "value": {"coding": [{"system": STAGE, "code": "initial-meeting"}]}},
                ]
                version = tasks[0]["meta"]["versionId"]
                social.call("move", "PATCH", f"/fhir/Task/{tasks[0]['id']}", patch, 200, {"Content-Type": "application/json-patch+json", "If-Match": f'W/"{version}"'})
        elif chance.random() < 0.5 and people:
            social.call("read", "GET", f"/fhir/{chance.choice(people)}")
        elif chance.random() < 0.5:
            facility.call("read", "GET", "/fhir/Task?owner=Organization/rehab-tayview-house&status=requested&_count=20")
        else:
            facility.call("read", "GET", f"/fhir/Patient?_count=20&identifier={CHI_SYSTEM}|{_patient(chance.randrange(n + 1))['identifier'][0]['value']}")
        if interval:
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
    with lock:
        for kind, samples in latencies.items():
            out["latencies"][kind].extend(samples)
        out["errors"].extend(errors)


def _load_process(args: tuple[int, dict[str, str], int, float, int, float, list[str]]) -> dict[str, Any]:
    port, tokens, process_index, deadline, threads, interval, known = args
    out: dict[str, Any] = {"latencies": defaultdict(list), "errors": []}
    lock = threading.Lock()
    pool = [
        threading.Thread(target=_worker, args=(port, tokens, process_index * 1000 + i + 1, deadline, interval, known, out, lock))
        for i in range(threads)
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {"latencies": dict(out["latencies"]), "errors": out["errors"]}


def _prepare(database_url: str, secrets: Path, base: str) -> dict[str, dict[str, Any]]:
    """Load conf/ into the database and register the two clients; returns their credentials."""
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
        return made
    finally:
        gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=300.0, help="target steps per second over all connections (0: unpaced)")
    parser.add_argument("--processes", type=int, default=2, help="load-generating processes")
    parser.add_argument("--threads", type=int, default=8, help="connections per load process")
    add_serving_arguments(parser, 8766)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary directory (give a fresh PostgreSQL database to test that)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/load.db"
        base = f"http://127.0.0.1:{args.port}"
        creds = _prepare(database_url, Path(tmp) / "secrets", base)
        with pathway_serve(database_url, Path(tmp) / "secrets", args.port, args.workers):
            tokens = {"social": PathwayClient(creds["load-social-work"]).token(), "facility": PathwayClient(creds["load-facility"]).token()}
            connections = args.processes * args.threads
            interval = connections / args.rate if args.rate else 0.0
            started = time.time()
            jobs = [(args.port, tokens, p, started + args.seconds, args.threads, interval, []) for p in range(args.processes)]
            with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
                results = pool.map(_load_process, jobs)
            elapsed = time.time() - started

    latencies: dict[str, list[float]] = defaultdict(list)
    for result in results:
        for kind, samples in result["latencies"].items():
            latencies[kind] += samples
    errors = [e for r in results for e in r["errors"]]
    every = [x for samples in latencies.values() for x in samples]
    print(f"Pathway mixed load on {database_url.split(':')[0]}, {os.cpu_count()} cores, {args.workers} worker(s), {elapsed:.0f} s, {connections} connections, target {args.rate:.0f} steps/s")
    for kind, samples in sorted(latencies.items()) + [("all", every)]:
        print(
            f"{kind:9s} {len(samples) / elapsed:7.0f} req/s   p50 {percentile(samples, 0.5):6.1f} ms   p95 {percentile(samples, 0.95):6.1f} ms   "
            f"p99 {percentile(samples, 0.99):6.1f} ms   ({len(samples)} requests)"
        )
    print(f"errors    {len(errors)}")
    for error in list(dict.fromkeys(errors))[:10]:
        print(f"  {error}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
