"""FHIR API throughput: authenticated creates and reads over HTTP on 127.0.0.1.

Starts `pathway serve` on a fresh database in a temporary directory, registers a
client with a real key, then drives creates and then reads with concurrent
connections for a bounded time each, and prints requests/s with p50/p99.

    .venv/bin/python bench/fhir_api.py [--seconds 10] [--concurrency 16] [--database-url URL]

Targets on a 2-core machine with SQLite: >= 500 creates/s, >= 1,500 reads/s, p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.auth.clients import credentials, new_client_key, register_client  # noqa: E402
from gateway.client import PathwayClient  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from mappings.identifiers import CHI_SYSTEM, make_chi  # noqa: E402


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


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def drive(name: str, make_request, seconds: float, concurrency: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Run ``make_request`` from ``concurrency`` workers for ``seconds``; returns latencies."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:

        async def worker(index: int) -> None:
            nonlocal errors
            n = index
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await make_request(http, n)
                latencies.append(time.perf_counter() - started)
                if response.status_code >= 300:
                    errors += 1
                n += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    print(
        f"{name:8s} {len(latencies) / elapsed:8.0f} req/s   p50 {percentile(latencies, 0.5):6.1f} ms   "
        f"p99 {percentile(latencies, 0.99):6.1f} ms   errors {errors}   ({len(latencies)} requests, {concurrency} connections)"
    )
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=8765)
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
        env = {**os.environ, "PATHWAY_DATABASE_URL": database_url, "PATHWAY_SECRETS_DIR": str(settings.secrets_dir), "PATHWAY_LOG_LEVEL": "WARNING", "PATHWAY_RUN_WORKERS": "0"}
        server = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(args.port)], env=env)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start")
                time.sleep(0.1)
            token = PathwayClient(creds).token()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
            created: list[str] = []

            async def create(http: httpx.AsyncClient, n: int) -> httpx.Response:
                response = await http.post(f"{base}/fhir/Patient", content=orjson.dumps(_patient(n)), headers=headers)
                if response.status_code == 201:
                    created.append(response.json()["id"])
                return response

            async def read(http: httpx.AsyncClient, n: int) -> httpx.Response:
                return await http.get(f"{base}/fhir/Patient/{random.choice(created)}", headers=headers)

            print(f"Pathway FHIR API on {database_url.split(':')[0]}, {os.cpu_count()} cores, {args.seconds:.0f} s per phase")
            asyncio.run(drive("create", create, args.seconds, args.concurrency))
            asyncio.run(drive("read", read, args.seconds, args.concurrency))
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
