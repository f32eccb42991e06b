"""Referral throughput: rehab referrals submitted end to end over HTTP on 127.0.0.1.

Starts `pathway serve` on a fresh database in a temporary directory with the demo
partnership's configuration imported and people already known, registers the HSCP's
social-work client with a real key, then submits rehab referrals (POST ServiceRequest;
each opens the pathway Task, EpisodeOfCare and CarePlan in the same transaction) from
concurrent connections for a bounded time, checks the pathway was opened for every one,
and prints referrals/s with p50/p99.

    .venv/bin/python bench/referral.py [--seconds 10] [--processes 2] [--threads 2] [--people 2000] [--database-url URL]

Target on a 2-core machine with SQLite: >= 300 referrals/s, p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._serve import add_serving_arguments, pathway_serve, percentile  # noqa: E402
from bench.fhir_api import _patient  # noqa: E402
from gateway.auth.clients import credentials, new_client_key, register_client  # noqa: E402
from gateway.client import PathwayClient  # noqa: E402
from gateway.conf import load_conf  # noqa: E402
from gateway.directory import import_conf  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from mappings.labels import label_resource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HSCP = "https://fhir.nhs.uk/Id/ods-organization-code|S037"
EXT = "https://pathway.scot/StructureDefinition/"
PATHWAY_TASK = "https://pathway.scot/CodeSystem/task-type|rehab-pathway"


def referral(patient_id: str) -> bytes:
    """A social worker's rehab referral for ``Patient/{patient_id}`` (the business id is assigned by Pathway)."""
    return orjson.dumps(
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "category": [{"coding": [{"system": "https://pathway.scot/CodeSystem/request-category", "code": "rehab-referral"}]}],
            "subject": {"reference": f"Patient/{patient_id}"},
            "requester": {"reference": "PractitionerRole/sw-aileen-soutar"},
            "reasonCode": [{"text": "Alcohol dependence; ready for residential rehab"}],
            "extension": [
                {"url": EXT + "goal", "valueString": "Stay sober and back to work"},
                {"url": EXT + "contingency-plan", "valueString": "Same-day call from key worker; naloxone kit"},
                {"url": EXT + "detox-required", "valueBoolean": True},
                {"url": EXT + "key-worker", "valueReference": {"reference": "PractitionerRole/kw-sarah-mcintyre"}},
            ],
        }
    )


def _submit_referrals(args: tuple[int, str, list[str], float, int, int]) -> tuple[list[float], int, list[str]]:
    """One load process: ``threads`` keep-alive connections referring people until the deadline.

    http.client costs the load generator far less CPU per request than an async client,
    which matters when client and server share two cores."""
    port, token, people, deadline, threads, offset = args
    latencies: list[float] = []
    referrals: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def connection_loop(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        n = offset + index
        mine: list[float] = []
        while time.time() < deadline:
            body = referral(people[n % len(people)])
            started = time.perf_counter()
            connection.request("POST", "/fhir/ServiceRequest", body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            mine.append(time.perf_counter() - started)
            with lock:
                if response.status == 201:
                    referrals.append(orjson.loads(payload)["id"])
                else:
                    errors.append(f"{response.status}: {payload[:200]!r}")
            n += threads * 64
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=connection_loop, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        print(f"  first error of {len(errors)}: {errors[0]}", file=sys.stderr)
    return latencies, len(errors), referrals


def prepare(database_url: str, secrets_dir: Path, people: int, base: str) -> tuple[dict[str, Any], list[str]]:
    """The demo configuration, ``people`` labelled Patients held by the HSCP, and the social-work client."""
    gateway = Gateway.start(Settings(database_url=database_url, secrets_dir=secrets_dir, conf_dir=REPO / "conf", run_workers=False))
    try:
        conf = load_conf(REPO / "conf")
        import_conf(gateway, conf, REPO / "conf")
        _organization, social_work = conf.client("social-work")  # type: ignore[misc]
        key = new_client_key()
        with gateway.transaction() as session:
            repo = gateway.repository(session)
            ids = [repo.create(label_resource(_patient(n)), HSCP).id for n in range(people)]
            client = register_client(session, social_work.id, HSCP, list(social_work.scopes), roles=list(social_work.roles), public_keys=[key.public_jwk])
            return credentials(client, key, base), ids
    finally:
        gateway.close()


def check_pathways_opened(client: PathwayClient, referrals: list[str]) -> None:
    """Every accepted referral has its pathway Task (spot-checked over HTTP, first and last)."""
    for referral_id in {referrals[0], referrals[-1]}:
        bundle = client.get(f"Task?focus=ServiceRequest/{referral_id}&code={PATHWAY_TASK}").json()
        tasks = [e for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "Task"]
        if len(tasks) != 1:
            raise SystemExit(f"ServiceRequest/{referral_id} was accepted but has {len(tasks)} pathway Tasks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=2, help="load-generating processes")
    parser.add_argument("--threads", type=int, default=2, help="connections per load process (2 x 2: partners submitting side by side; more only queue)")
    parser.add_argument("--people", type=int, default=2000, help="Patients known before the run (referred in turn)")
    add_serving_arguments(parser, 8766)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/bench.db"
        secrets_dir = Path(tmp) / "secrets"
        base = f"http://127.0.0.1:{args.port}"
        creds, people = prepare(database_url, secrets_dir, args.people, base)
        with pathway_serve(database_url, secrets_dir, args.port, args.workers):
            client = PathwayClient(creds)
            print(f"Pathway referrals on {database_url.split(':')[0]}, {os.cpu_count()} cores, {args.workers} worker(s), {args.seconds:g} s, {len(people)} people")
            started = time.time()
            jobs = [(args.port, client.token(), people, started + args.seconds, args.threads, p * args.threads) for p in range(args.processes)]
            with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
                results = pool.map(_submit_referrals, jobs)
            elapsed = time.time() - started
            latencies = [x for r in results for x in r[0]]
            referrals = [i for r in results for i in r[2]]
            print(
                f"referral {len(referrals) / elapsed:8.0f} referrals/s   p50 {percentile(latencies, 0.5):6.1f} ms   "
                f"p99 {percentile(latencies, 0.99):6.1f} ms   errors {sum(r[1] for r in results)}   "
                f"({len(latencies)} requests, {args.processes * args.threads} connections)"
            )
            if referrals:
                check_pathways_opened(client, referrals)


if __name__ == "__main__":
    main()
