"""Consent engine throughput: in-process decisions per second on one core.

A person with three consents and ten provisions between them (a facility opt-in with
mental health withheld, a carer grant for pathway progress, a blanket opt-out kept from an
earlier conversation) is asked about by the facility, the advocate, the third sector and the
carer, for data shaped the way the gateway asks per resource.

    .venv/bin/python bench/consent.py [--seconds 3] [--agreements]

Target: >= 50,000 decisions/s for the consent layer. ``scenario()`` returns the same items in
the ``pathway consent decide`` / ``POST /consent/$decide`` shape, for an HTTP figure.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import tempfile
import threading
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._serve import add_serving_arguments  # noqa: E402
from consent import decide  # noqa: E402

PARTNER = "https://pathway.scot/Id/partner"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CAT = "https://pathway.scot/CodeSystem/data-category"
CHI = {"system": "https://fhir.nhs.uk/Id/chi-number", "value": "1503901238"}
HSCP = {"system": ODS, "value": "S037"}
HSCP_KEY = f"{ODS}|S037"
FACILITY = {"system": PARTNER, "value": "rehab-tayview-house"}
ADVOCACY = {"system": PARTNER, "value": "advocacy-dundee"}
THIRD = {"system": PARTNER, "value": "third-sector-hillcrest"}
COMMUNITY = {"system": ODS, "value": "S037-CRT"}
CARER = {"system": "https://pathway.scot/Id/demo/carer", "value": "carer-0042"}


def _actor(identifier: dict[str, str]) -> list[dict[str, Any]]:
    return [{"reference": {"identifier": identifier}}]


def _categories(*codes: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": CAT, "code": c}]} for c in codes]


def _consent(consent_id: str, root: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Consent", "id": consent_id, "meta": {"versionId": "1"}, "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "patient": {"reference": "Patient/p-ross", "identifier": CHI},
        "provision": {"period": {"start": "2026-01-01", "end": "2027-12-31"}, **root},
    }


def consents() -> list[dict[str, Any]]:
    """Three consents, ten provisions."""
    mental_health = {"type": "deny", "securityLabel": [{"system": ACT, "code": "PSY"}, {"system": ACT, "code": "MH"}],
                     "code": _categories("mental-health")}
    domestic_abuse = {"type": "deny", "securityLabel": [{"system": ACT, "code": "SDV"}]}
    opt_in = {"type": "deny", "provision": [
        {"type": "permit", "actor": _actor(FACILITY), "purpose": [{"code": "TREAT"}, {"code": "CAREMGT"}],
         "provision": [mental_health, domestic_abuse]},
        {"type": "permit", "actor": _actor(ADVOCACY), "purpose": [{"code": "CAREMGT"}], "provision": [mental_health]},
        {"type": "permit", "actor": _actor(COMMUNITY), "purpose": [{"code": "TREAT"}, {"code": "CAREMGT"}]},
    ]}
    carer = {"type": "deny", "provision": [
        {"type": "permit", "actor": _actor(CARER), "purpose": [{"code": "carer-support"}], "code": _categories("pathway-progress")},
    ]}
    return [_consent("opt-in", opt_in), _consent("carer", carer), _consent("old-opt-out", {"type": "deny"})]


def agreements() -> list[dict[str, Any]]:
    """The HSCP's agreements with the facility and the advocacy service."""
    base = {"version": 1, "status": "active", "lawful_basis": ["UK GDPR Art 6(1)(e)"], "start": "2025-04-01",
            "end": "2027-03-31", "review_date": "2026-03-31"}
    return [
        {**base, "id": "isa-dhscp-tayview", "title": "HSCP and Tayview House", "parties": [HSCP, FACILITY],
         "purposes": ["TREAT", "CAREMGT"], "categories": ["demographics", "substance-use", "prescribing", "pathway-progress", "reviews"]},
        {**base, "id": "isa-dhscp-advocacy", "title": "HSCP and advocacy", "parties": [HSCP, ADVOCACY],
         "purposes": ["CAREMGT"], "categories": ["demographics", "pathway-progress"]},
    ]


DATA = [
    {"categories": ["substance-use", "prescribing"], "security": [{"system": ACT, "code": "OPIOIDUD"}], "classes": ["MedicationStatement"], "codes": [{"system": "http://snomed.info/sct", "code": "387286002"}]},
    {"categories": ["mental-health"], "security": [{"system": ACT, "code": "PSY"}], "classes": ["Condition"], "codes": []},
    {"categories": ["pathway-progress"], "security": [], "classes": ["EpisodeOfCare"], "codes": []},
    {"categories": ["reviews", "pathway-progress"], "security": [], "classes": ["Encounter"], "codes": []},
    {"categories": ["demographics"], "security": [], "classes": ["Patient"], "codes": []},
]
ASKERS = [(FACILITY, "TREAT"), (ADVOCACY, "CAREMGT"), (THIRD, "CAREMGT"), (CARER, "carer-support"), (COMMUNITY, "TREAT")]


def scenario(with_agreements: bool = False) -> list[dict[str, Any]]:
    """The benchmark's decision items in the ``pathway consent decide`` input shape."""
    person = consents()
    items = []
    for (actor, purpose), data in itertools.product(ASKERS, DATA):
        request = {"patient": [CHI, {"system": "reference", "value": "Patient/p-ross"}], "actor": [actor],
                   "purpose": purpose, "data": data, "holder": HSCP, "at": "2026-11-22T10:00:00Z"}
        item: dict[str, Any] = {"consents": person, "request": request}
        if with_agreements:
            item["agreements"] = agreements()
        items.append(item)
    return items


def in_process_rates(items: list[dict[str, Any]], seconds: float) -> tuple[list[float], dict[str, int]]:
    """Decisions per CPU second of ``decide`` in rounds of about 0.25 s for ``seconds``; and the decision mix.

    CPU time, not wall time, so that other work on a shared machine does not count against it.
    """
    shared = [(i["request"], i["consents"], i.get("agreements")) for i in items]
    mix: dict[str, int] = {}
    for request, person, agreed in shared:
        outcome = decide(request, person, agreed)["decision"]
        mix[outcome] = mix.get(outcome, 0) + 1
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        done = 0
        started = time.process_time()
        while time.process_time() - started < 0.25:
            for request, person, agreed in shared:
                decide(request, person, agreed)
            done += len(shared)
        rates.append(done / (time.process_time() - started))
    return rates, mix


def _decide_over_http(args: tuple[int, str, list[bytes], float, int]) -> list[float]:
    """One load process: keep-alive connections posting decision requests until the deadline."""
    port, token, bodies, deadline, threads = args
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        mine, n = [], offset
        while time.time() < deadline:
            started = time.perf_counter()
            connection.request("POST", "/consent/$decide", body=bodies[n % len(bodies)], headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"$decide answered {response.status}")
            mine.append(time.perf_counter() - started)
            n += 1
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies


def http_rate(seconds: float, port: int = 8767, workers: int = 1, processes: int = 2, threads: int = 4) -> None:
    """``POST /consent/$decide`` against ``pathway serve``: the person and their three consents
    stored, the demo agreements imported; prints decisions/s with p50/p99."""
    from bench._serve import pathway_serve, percentile
    from bench.referral import prepare
    from gateway.client import PathwayClient
    from gateway.runtime import Gateway
    from gateway.settings import Settings
    from mappings.labels import label_resource

    with tempfile.TemporaryDirectory() as tmp:
        database_url, secrets, base = f"sqlite:///{tmp}/decide.db", Path(tmp) / "secrets", f"http://127.0.0.1:{port}"
        creds, _ = prepare(database_url, secrets, 0, base)
        gateway = Gateway.start(Settings(database_url=database_url, secrets_dir=secrets, run_workers=False))
        with gateway.transaction() as session:
            repo = gateway.repository(session)
            repo.create(label_resource({"resourceType": "Patient", "id": "p-ross", "identifier": [CHI], "birthDate": "1990-03-15", "gender": "male"}), HSCP_KEY)
            for consent in consents():
                repo.create(label_resource(dict(consent)), HSCP_KEY)
        gateway.close()
        bodies = [orjson.dumps(item["request"]) for item in scenario(with_agreements=True)]
        with pathway_serve(database_url, secrets, port, workers):
            token = PathwayClient(creds).token()
            started = time.time()
            jobs = [(port, token, bodies, started + seconds, threads)] * processes
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                latencies = [x for part in pool.map(_decide_over_http, jobs) for x in part]
            elapsed = time.time() - started
    print(f"HTTP POST /consent/$decide: {len(latencies) / elapsed:,.0f} decisions/s, p50 {percentile(latencies, 0.5):.1f} ms, "
          f"p99 {percentile(latencies, 0.99):.1f} ms ({len(latencies)} requests, {processes * threads} connections)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--agreements", action="store_true", help="evaluate the agreement layer too")
    parser.add_argument("--http", action="store_true", help="also measure POST /consent/$decide against pathway serve")
    add_serving_arguments(parser, 8767)
    args = parser.parse_args()
    items = scenario(args.agreements)
    rates, mix = in_process_rates(items, args.seconds)
    layers = "agreements + consents" if args.agreements else "consents"
    print(f"in-process ({layers}): median {statistics.median(rates):,.0f}, best {max(rates):,.0f} decisions per "
          f"CPU second on one core over {len(rates)} rounds; mix per {len(items)} requests: {mix}")
    if args.http:
        http_rate(max(args.seconds, 8.0), args.port, args.workers)


if __name__ == "__main__":
    main()
