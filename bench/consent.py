"""Consent engine throughput: in-process decisions per second on one core.

A person with three consents and ten provisions between them (a facility opt-in with
mental health withheld, a carer grant for pathway progress, a blanket opt-out kept from an
earlier conversation) is asked about by the facility, the advocate, the third sector and the
carer, for data shaped the way the gateway asks per resource.

    .venv/bin/python bench/consent.py [--seconds 3] [--agreements] [--http --concurrency 1,32]

Warm: the same consent objects every time (what the gateway's caches give it); cold: fresh
consent objects for every decision, so nothing compiled before is reused.

Target: >= 50,000 decisions/s for the consent layer. ``scenario()`` returns the same items in
the ``pathway consent decide`` / ``POST /consent/$decide`` shape, for an HTTP figure.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._serve import Call, add_load_arguments, add_serving_arguments, cycle, drive, pathway_serve, sharing  # noqa: E402
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


def in_process_rates(items: list[dict[str, Any]], seconds: float, cold: bool = False) -> tuple[list[float], dict[str, int]]:
    """Decisions per CPU second of ``decide`` in rounds of about 0.25 s for ``seconds``; and the decision mix.

    CPU time, not wall time, so that other work on a shared machine does not count against it.
    ``cold``: every decision gets consent and agreement objects it has not seen (copies made
    before each round, outside the timing), so nothing compiled for an earlier one is reused.
    """
    shared = [(i["request"], i["consents"], i.get("agreements")) for i in items]
    mix: dict[str, int] = {}
    for request, person, agreed in shared:
        outcome = decide(request, person, agreed)["decision"]
        mix[outcome] = mix.get(outcome, 0) + 1
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        rounds = [[(r, orjson.loads(orjson.dumps(p)), orjson.loads(orjson.dumps(a)) if a else a) for r, p, a in shared] for _ in range(20)] if cold else [shared] * 20
        done, spent = 0, 0.0
        while spent < 0.25 and rounds:
            batch = rounds.pop()
            started = time.process_time()
            for request, person, agreed in batch:
                decide(request, person, agreed)
            spent += time.process_time() - started
            done += len(batch)
        rates.append(done / spent)
    return rates, mix


def _store_person(database_url: str, secrets: Path, base: str) -> tuple[dict[str, Any], list[Call]]:
    """The demo conf/ and the social-work client, the person and their three consents stored;
    the decision calls, each expecting the decision the engine gives in process."""
    from bench.referral import prepare
    from gateway.runtime import Gateway
    from gateway.settings import Settings
    from gateway.sharing.policy import ConsentPolicy
    from mappings.labels import label_resource

    creds, _ = prepare(database_url, secrets, 0, base)
    gateway = Gateway.start(Settings(database_url=database_url, secrets_dir=secrets, run_workers=False))
    try:
        with gateway.transaction() as session:
            repo = gateway.repository(session)
            repo.create(label_resource({"resourceType": "Patient", "id": "p-ross", "identifier": [CHI], "birthDate": "1990-03-15", "gender": "male"}), HSCP_KEY)
            stored = [repo.create(label_resource(orjson.loads(orjson.dumps(c))), HSCP_KEY).resource for c in consents()]
            current = ConsentPolicy(gateway.keyring).current_agreements(session)[1]
    finally:
        gateway.close()
    calls = []
    for item in scenario():
        expected = decide(item["request"], stored, current)["decision"]
        calls.append(Call("POST", "/consent/$decide", orjson.dumps(item["request"]), 200, (b'"decision":"%s"' % expected.encode(),), kind="decide"))
    return creds, calls


def http_rates(seconds: float, concurrencies: list[int], port: int = 8767, workers: int = 1, processes: int = 2) -> None:
    """``POST /consent/$decide`` against ``pathway serve``: the person and their three consents
    stored, the demo agreements imported; decisions/s with p50/p99 at each concurrency."""
    from gateway.client import PathwayClient

    with tempfile.TemporaryDirectory() as tmp:
        database_url, secrets, base = f"sqlite:///{tmp}/decide.db", Path(tmp) / "secrets", f"http://127.0.0.1:{port}"
        creds, calls = _store_person(database_url, secrets, base)
        with pathway_serve(database_url, secrets, port, workers):
            token = PathwayClient(creds).token()
            for concurrency in concurrencies:
                print(sharing(f"pathway serve ({workers} worker{'s' if workers > 1 else ''}, SQLite)", concurrency=concurrency, processes=processes))
                tally = drive(cycle, calls, port, token, concurrency=concurrency, seconds=seconds, processes=processes)
                print(tally.line("decide", f"$decide x{concurrency}", "decisions/s"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--agreements", action="store_true", help="evaluate the agreement layer too")
    parser.add_argument("--http", action="store_true", help="also measure POST /consent/$decide against pathway serve")
    add_load_arguments(parser, concurrency="1,32")
    add_serving_arguments(parser, 8767)
    args = parser.parse_args()
    items = scenario(args.agreements)
    layers = "agreements + consents" if args.agreements else "consents"
    for label, cold in (("warm", False), ("cold", True)):
        rates, mix = in_process_rates(items, args.seconds, cold)
        print(f"in-process {label} ({layers}): median {statistics.median(rates):,.0f}, best {max(rates):,.0f} decisions per "
              f"CPU second on one core over {len(rates)} rounds; mix per {len(items)} requests: {mix}")
    if args.http:
        http_rates(max(args.seconds, 5.0), args.concurrency, args.port, args.workers, args.processes)


if __name__ == "__main__":
    main()
