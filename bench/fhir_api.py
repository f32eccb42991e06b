"""FHIR API throughput: authenticated creates, reads and searches with _include over HTTP on 127.0.0.1.

Starts `pathway serve` on a fresh database in a temporary directory, registers a
client with a real key, then drives creates, reads, and two searches that add
resources (``Observation?patient=...&_include=Observation:subject`` and
``Patient?_id=...&_revinclude=Observation:subject``, over patients with two
Observations each) with concurrent connections for a bounded time each, and
prints requests/s with p50/p99.

    .venv/bin/python bench/fhir_api.py [--seconds 10] [--processes 2] [--threads 8] [--database-url URL]

Targets on a 2-core machine with SQLite: >= 500 creates/s, >= 1,500 reads/s, p99 < 50 ms.
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
from datetime import date
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._serve import add_serving_arguments, pathway_serve, percentile  # noqa: E402
from gateway.auth.clients import credentials, new_client_key, register_client  # noqa: E402
from gateway.client import PathwayClient  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from mappings.identifiers import CHI_SYSTEM, make_chi  # noqa: E402


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


def _load_process(args: tuple[str, int, str, str, list[str], float, int, int]) -> tuple[list[float], int, list[str]]:
    """One load process: ``threads`` keep-alive connections issuing requests until the deadline.

    The standard library's http.client is used because it costs the load
    generator far less CPU per request than an async client, which matters
    when client and server share two cores.
    """
    phase, port, token, body_kind, ids, deadline, threads, offset = args
    latencies: list[float] = []
    created: list[str] = []
    errors = 0
    lock = threading.Lock()

    def worker(index: int) -> None:
        nonlocal errors
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        n = offset + index
        mine: list[float] = []
        while time.time() < deadline:
            started = time.perf_counter()
            if phase == "create":
                connection.request("POST", "/fhir/Patient", body=orjson.dumps(_patient(n)), headers=headers)
            else:
                connection.request("GET", READS[phase].format(id=ids[n % len(ids)]), headers=headers)
            response = connection.getresponse()
            payload = response.read()
            mine.append(time.perf_counter() - started)
            with lock:
                if response.status >= 300:
                    errors += 1
                elif phase == "create":
                    created.append(orjson.loads(payload)["id"])
            n += threads * 64
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies, errors, created


def drive(phase: str, port: int, token: str, ids: list[str], seconds: float, processes: int, threads: int) -> list[str]:
    """Run one phase from ``processes`` x ``threads`` connections; prints its figures."""
    started = time.time()
    deadline = started + seconds
    jobs = [(phase, port, token, phase, ids, deadline, threads, p * threads) for p in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_load_process, jobs)
    elapsed = time.time() - started
    latencies = [x for r in results for x in r[0]]
    errors = sum(r[1] for r in results)
    print(
        f"{phase:10s} {len(latencies) / elapsed:8.0f} req/s   p50 {percentile(latencies, 0.5):6.1f} ms   "
        f"p99 {percentile(latencies, 0.99):6.1f} ms   errors {errors}   ({len(latencies)} requests, {processes * threads} connections)"
    )
    return [i for r in results for i in r[2]]


def _observe(client: PathwayClient, patients: list[str]) -> None:
    """Two Observations about each patient (set-up for the search phases, not timed)."""
    for patient in patients:
        for value in (1, 2):
            observation = {"resourceType": "Observation", "status": "final", "code": {"text": "bench"}, "subject": {"reference": f"Patient/{patient}"}, "valueInteger": value}
            client.post("Observation", observation).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=2, help="load-generating processes")
    parser.add_argument("--threads", type=int, default=8, help="connections per load process")
    add_serving_arguments(parser, 8765)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=database_url, secrets_dir=Path(tmp) / "secrets", run_workers=False)
        gateway = Gateway.start(settings)
        key = new_client_key()
        base = f"http://127.0.0.1:{args.port}"
        with gateway.transaction() as session:
            client = register_client(session, "bench", "https://fhir.nhs.uk/Id/ods-organization-code|S037", ["system/*.read", "system/*.write"], public_keys=[key.public_jwk])
            creds = credentials(client, key, base)
        gateway.close()
        with pathway_serve(database_url, settings.secrets_dir, args.port, args.workers):
            token = PathwayClient(creds).token()
            print(f"Pathway FHIR API on {database_url.split(':')[0]}, {os.cpu_count()} cores, {args.workers} worker(s), {args.seconds:.0f} s per phase")
            created = drive("create", args.port, token, [], args.seconds, args.processes, args.threads)
            drive("read", args.port, token, created, args.seconds, args.processes, args.threads)
            observed = created[:WITH_OBSERVATIONS]
            _observe(PathwayClient(creds), observed)
            for phase in ("include", "revinclude"):
                drive(phase, args.port, token, observed, args.seconds, args.processes, args.threads)


if __name__ == "__main__":
    main()
