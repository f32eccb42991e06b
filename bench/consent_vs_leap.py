"""Consent decisions over HTTP, side by side: Pathway's ``POST /consent/$decide`` and the LEAP
consent decision service (sdhealthconnect/leap-cds, Node), on the same person and Consent.

The Consent permits the rehab facility to see the person's records for treatment, except
what is labelled ETH (a nested deny). LEAP reads it from a tiny fixed-answer FHIR store
this bench serves on 127.0.0.1 (it looks the Patient up by identifier, searches their
Consents, reads the Organization the provision names and writes an AuditEvent: four calls
per decision); Pathway holds it in its own database (SQLite, one ``pathway serve`` worker)
and audits each decision in its hash chain. Both are driven by the same closed-loop load
generator (``bench/_serve.py``), purpose TREAT, at each concurrency, in interleaved runs;
every answer is checked (LEAP: CONSENT_PERMIT with the ETH redaction; Pathway: permit).

    PATHWAY_LEAP_DIR=/work/leap-cds .venv/bin/python bench/consent_vs_leap.py [--seconds 5] [--rounds 3] [--concurrency 1,32]

LEAP is GPL-3 and is never copied here: the bench runs a work tree of it given in
PATHWAY_LEAP_DIR, installed with its own yarn from its lockfile. To make one:

    git clone https://github.com/sdhealthconnect/leap-cds /work/leap-cds   (or the search tool's fetch + git worktree add)
    cd /work/leap-cds && node .yarn/releases/yarn-*.cjs install --immutable

It runs with NODE_ENV=production (no request log), LOG_LEVEL=warn (Pathway logs at WARNING
too) and CONSENT_FHIR_SERVERS naming the local store.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._serve import Call, Tally, add_load_arguments, cycle, drive, pathway_serve, serve_answers, sharing, wait_until  # noqa: E402

CHI = {"system": "https://fhir.nhs.uk/Id/chi-number", "value": "1503901238"}
FACILITY = {"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}
HSCP = "https://fhir.nhs.uk/Id/ods-organization-code|S037"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def consent(actor: dict[str, Any]) -> dict[str, Any]:
    """Permit the facility (``actor``) for treatment; deny what is labelled ETH."""
    return {
        "resourceType": "Consent",
        "id": "c-1",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                     {"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p-1"},
        "dateTime": "2026-01-01",
        "provision": {
            "type": "permit",
            "period": {"start": "2026-01-01", "end": "2030-01-01"},
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}, "reference": actor}],
            "purpose": [{"system": PURPOSE, "code": "TREAT"}],
            "provision": [{"type": "deny", "securityLabel": [{"system": ACT, "code": "ETH"}]}],
        },
    }


# --- the fixed-answer FHIR store LEAP reads (its own process) ------------------------------



def _store_answers(base: str) -> dict[bytes, bytes]:
    patient = {"resourceType": "Patient", "id": "p-1", "identifier": [CHI]}
    organization = {"resourceType": "Organization", "id": "org-1", "identifier": [FACILITY], "name": "Tayview House"}
    stored = consent({"reference": "Organization/org-1"})

    def bundle(resource: dict[str, Any]) -> dict[str, Any]:
        entry = {"fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}", "resource": resource}
        return {"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [entry]}

    return {b"GET /fhir/Patient?": orjson.dumps(bundle(patient)), b"GET /fhir/Consent?": orjson.dumps(bundle(stored)),
            b"GET /fhir/Organization/org-1": orjson.dumps(organization), b"POST /fhir/AuditEvent": b'{"resourceType":"AuditEvent","id":"a"}'}


def serve_store(port: int) -> None:
    """Answer LEAP's four calls at once with fixed resources (keep-alive HTTP/1.1)."""
    answers = _store_answers(f"http://127.0.0.1:{port}/fhir")

    def answer(head: bytes) -> bytes:
        for prefix, body in answers.items():
            if head.startswith(prefix):
                status = b"201 Created" if prefix.startswith(b"POST") else b"200 OK"
                return b"HTTP/1.1 %s\r\ncontent-type: application/fhir+json\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)
        return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"

    serve_answers(port, answer)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the two services ----------------------------------------------------------------------


def start_leap(leap_dir: Path, port: int, store_port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NODE_ENV": "production", "LOG_LEVEL": "warn", "PORT": str(port), "ORG_NAME": "bench", "ORG_URL": "http://127.0.0.1",
           "CONSENT_FHIR_SERVERS": f"http://127.0.0.1:{store_port}/fhir"}
    leap = subprocess.Popen(["node", "server.js"], cwd=leap_dir, env=env, stdout=subprocess.DEVNULL)
    wait_until(f"http://127.0.0.1:{port}/ping", "LEAP CDS")
    return leap


def leap_call() -> Call:
    body = {"hook": "patient-consent-consult", "hookInstance": "bench",
            "context": {"patientId": [CHI], "category": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}],
                        "actor": [FACILITY], "purposeOfUse": ["TREAT"]}}
    return Call("POST", "/cds-services/patient-consent-consult", orjson.dumps(body), 200, (b'"decision":"CONSENT_PERMIT"', b'"code":"REDACT"', b'"code":"ETH"'), (("Content-Type", "application/json"),), "leap")


def prepare_pathway(database_url: str, secrets: Path, base: str) -> tuple[dict[str, Any], Call]:
    """The demo conf/, the social-work client, the person and the Consent (held by the HSCP)."""
    from bench.referral import prepare
    from gateway.runtime import Gateway
    from gateway.settings import Settings
    from mappings.labels import label_resource

    creds, _ = prepare(database_url, secrets, 0, base)
    gateway = Gateway.start(Settings(database_url=database_url, secrets_dir=secrets, run_workers=False))
    try:
        with gateway.transaction() as session:
            repo = gateway.repository(session)
            repo.create(label_resource({"resourceType": "Patient", "id": "p-1", "identifier": [CHI], "gender": "male", "birthDate": "1990-03-15"}), HSCP)
            repo.create(label_resource(consent({"identifier": FACILITY})), HSCP)
    finally:
        gateway.close()
    body = {"patient": [CHI], "actor": [FACILITY], "purpose": "TREAT",
            "data": {"categories": ["substance-use"], "security": [], "classes": ["MedicationStatement"], "codes": []}}
    return creds, Call("POST", "/consent/$decide", orjson.dumps(body), 200, (b'"decision":"permit"', b'Consent/c-1'), (("Content-Type", "application/json"),), "pathway")


def summary(name: str, runs: list[Tally]) -> tuple[float, str]:
    rates = [t.rate(name) for t in runs]
    p50 = [_p(t, name, 0.5) for t in runs]
    p99 = [_p(t, name, 0.99) for t in runs]
    errors = sum(len(t.errors) for t in runs)
    first = next((e for t in runs for e in t.errors), None)
    text = f"{statistics.median(rates):7,.0f}/s ({min(rates):,.0f}-{max(rates):,.0f})  p50 {_range(p50)} ms  p99 {_range(p99)} ms  errors {errors}" + (f" (first: {first})" if first else "")
    return statistics.median(rates), text


def _p(tally: Tally, name: str, q: float) -> float:
    from bench._serve import percentile

    return percentile(tally.latencies.get(name, []), q)


def _range(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_load_arguments(parser, seconds=5.0, concurrency="1,32")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each service per concurrency")
    parser.add_argument("--store", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.store:
        serve_store(args.store)
        return
    leap_dir = os.environ.get("PATHWAY_LEAP_DIR")
    if not leap_dir or not (Path(leap_dir) / "node_modules").is_dir():
        raise SystemExit(
            "PATHWAY_LEAP_DIR must name a work tree of https://github.com/sdhealthconnect/leap-cds with its dependencies installed:\n"
            "  git clone https://github.com/sdhealthconnect/leap-cds /work/leap-cds\n"
            "  cd /work/leap-cds && node .yarn/releases/yarn-*.cjs install --immutable\n"
            "then: PATHWAY_LEAP_DIR=/work/leap-cds .venv/bin/python bench/consent_vs_leap.py"
        )
    from gateway.client import PathwayClient

    store_port, leap_port, pathway_port = _free_port(), _free_port(), _free_port()
    store = subprocess.Popen([sys.executable, __file__, "--store", str(store_port)])
    leap = None
    try:
        leap = start_leap(Path(leap_dir), leap_port, store_port)
        with tempfile.TemporaryDirectory() as tmp:
            database_url, secrets = f"sqlite:///{tmp}/decide.db", Path(tmp) / "secrets"
            creds, pathway = prepare_pathway(database_url, secrets, f"http://127.0.0.1:{pathway_port}")
            with pathway_serve(database_url, secrets, pathway_port, 1):
                token = PathwayClient(creds).token()
                print("Both services run while each is measured: LEAP CDS (node, 1 process) + its FHIR store (1 Python process), "
                      "and pathway serve (1 worker, SQLite), with the load generator, on the same cores.")
                for concurrency in args.concurrency:
                    print(sharing("LEAP CDS", "its fixed-answer FHIR store", "pathway serve (1 worker)", concurrency=concurrency, processes=args.processes))
                    runs: dict[str, list[Tally]] = {"leap": [], "pathway": []}
                    for round_ in range(args.rounds):
                        order = [("leap", leap_port, None, leap_call()), ("pathway", pathway_port, token, pathway)]
                        for name, port, bearer, call in order if round_ % 2 == 0 else order[::-1]:
                            runs[name].append(drive(cycle, [call], port, bearer, concurrency=concurrency, seconds=args.seconds, processes=args.processes))
                    leap_rate, leap_text = summary("leap", runs["leap"])
                    pathway_rate, pathway_text = summary("pathway", runs["pathway"])
                    print(f"  x{concurrency:<3d} LEAP     {leap_text}")
                    print(f"  x{concurrency:<3d} Pathway  {pathway_text}")
                    print(f"  x{concurrency:<3d} Pathway / LEAP = {pathway_rate / leap_rate:.2f} (medians of {args.rounds} interleaved runs of {args.seconds:g} s)")
    finally:
        for process in (leap, store):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
