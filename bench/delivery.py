"""Delivery throughput: signed pushes to a local receiver, healthy and 30%-failing.

    .venv/bin/python bench/delivery.py                   # 10,000 healthy, 10,000 through a 30%-failing receiver
    .venv/bin/python bench/delivery.py --healthy 1000 --failing 1000 --processes 1 --threads 8

The senders are `pathway deliveries work` processes (two by default, one per core
here) on the bench's database, with the demo conf/ imported and pathway.yaml's
retries shortened to fractions of a second.

The receiver runs in its own process (a minimal HTTP/1.1 server on 127.0.0.1
that answers at once, counting distinct X-Pathway-Delivery keys), so it does
not compete with the sender for the interpreter lock. The database is a fresh
SQLite file unless PATHWAY_DATABASE_URL names another (e.g. PostgreSQL).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._serve import serve_answers  # noqa: E402

_KEY = re.compile(rb"(?i)x-pathway-delivery:\s*([^\r\n]+)")
HSCP = "https://fhir.nhs.uk/Id/ods-organization-code|S037"
# Demo partners with an agreement in force with the HSCP (conf/agreements.yaml): one per receiver.
RECIPIENTS = ("https://pathway.scot/Id/partner|rehab-tayview-house", "https://pathway.scot/Id/partner|rehab-lomond-brae")


# --- the receiver (its own process) ------------------------------------------------------


def serve_receiver(port: int, failure_rate: float) -> None:
    """Answer POSTs at once: 500 with ``failure_rate`` chance, else 200; GET /stats reports."""
    accepted: set[bytes] = set()
    counts = {"posts": 0}
    chance = random.Random(11)

    def answer(head: bytes) -> bytes:
        if head.startswith(b"GET /stats"):
            body = orjson.dumps({"accepted": len(accepted), "posts": counts["posts"]})
            return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        counts["posts"] += 1
        if chance.random() < failure_rate:
            return b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
        key = _KEY.search(head)
        accepted.add(key.group(1) if key else b"")
        return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    serve_answers(port, answer)


class ReceiverProcess:
    def __init__(self, failure_rate: float) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/notify"
        self.process = subprocess.Popen([sys.executable, __file__, "--receiver", str(self.port), str(failure_rate)])
        deadline = time.monotonic() + 10
        while True:
            try:
                self.stats()
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stats(self) -> dict[str, int]:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats").json()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# --- the sender ----------------------------------------------------------------------------


def consented_person(gateway) -> str:  # type: ignore[no-untyped-def]
    """A Patient held by the HSCP whose Consent permits both facilities for care management,
    so each delivery about them carries the full Task (``Patient/id``)."""
    from mappings.labels import label_resource

    facilities = [{"reference": {"identifier": {"system": system, "value": value}}} for system, _, value in (r.partition("|") for r in RECIPIENTS)]
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        patient = repo.create(label_resource({"resourceType": "Patient", "name": [{"family": "Bench", "given": ["Delivery"]}]}), HSCP)
        repo.create(label_resource({
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": patient.reference}, "performer": [{"reference": patient.reference}], "dateTime": "2026-01-01",
            "provision": {"type": "permit", "actor": facilities, "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "CAREMGT"}]},
        }), HSCP)
    return patient.reference


def queue_deliveries(gateway, count: int, recipient: str, patient: str) -> None:  # type: ignore[no-untyped-def]
    """Tasks about ``patient`` naming ``recipient`` as owner, each with its facility-referral
    delivery queued, all committed at once so the senders see the whole queue together."""
    from gateway.delivery import enqueue

    system, _, value = recipient.partition("|")
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        for _ in range(count):
            task = repo.create(
                {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "for": {"reference": patient},
                    "owner": {"identifier": {"system": system, "value": value}},
                },
                HSCP,
            )
            enqueue(session, event="facility-referral", recipient=recipient, focus=task.reference, patient=patient, purpose="CAREMGT")


def import_conf_with_quick_retries(gateway, tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """The demo conf/, its pathway.yaml retrying within a second (the receiver fails at once)."""
    import shutil

    import yaml

    from gateway.conf import load_conf
    from gateway.directory import import_conf

    conf_dir = tmp / "conf"
    shutil.copytree(REPO / "conf", conf_dir)
    pathway = yaml.safe_load((conf_dir / "pathway.yaml").read_text())
    pathway["delivery"] = {"max_attempts": 30, "base_delay_seconds": 0.01, "max_delay_seconds": 0.5, "timeout_seconds": 5, "lease_seconds": 60}
    (conf_dir / "pathway.yaml").write_text(yaml.safe_dump(pathway))
    import_conf(gateway, load_conf(conf_dir), conf_dir)


def _left(gateway, recipient: str) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from gateway.delivery.models import DeliveryRow

    with gateway.reading() as session:
        return session.scalar(
            select(func.count())
            .select_from(DeliveryRow)
            .where(DeliveryRow.recipient == recipient, DeliveryRow.status.in_(["pending", "sending"]))
        )


def start_senders(gateway, processes: int, threads: int) -> list[subprocess.Popen]:  # type: ignore[no-untyped-def,type-arg]
    """``processes`` x ``pathway deliveries work --threads THREADS``, each ready once it says so."""
    env = {**os.environ, **gateway.settings.to_env(), "PATHWAY_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "gateway.cli", "deliveries", "work", "--threads", str(threads)]
    senders = [subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    for sender in senders:
        assert sender.stderr is not None and "sending with" in sender.stderr.readline()
    return senders


def run(gateway, receiver: ReceiverProcess, count: int, recipient: str, patient: str) -> tuple[float, dict[str, int]]:  # type: ignore[no-untyped-def]
    """Queue ``count`` deliveries to ``receiver`` and time the running senders draining them
    (from the commit that queues them; senders that find nothing to do look every 0.2 s)."""
    from gateway.delivery import sync_subscriptions

    with gateway.transaction() as session:
        sync_subscriptions(session, [(recipient, receiver.url, ["facility-referral"])])
    queue_deliveries(gateway, count, recipient, patient)
    started = time.perf_counter()
    while _left(gateway, recipient):
        time.sleep(0.02)
    return time.perf_counter() - started, receiver.stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--healthy", type=int, default=10000, help="deliveries to the healthy receiver")
    parser.add_argument("--failing", type=int, default=10000, help="deliveries through the 30%%-failing receiver")
    parser.add_argument("--threads", type=int, default=8, help="sending threads per process")
    parser.add_argument("--processes", type=int, default=2, help="`pathway deliveries work` processes (default 2, one per core here)")
    parser.add_argument("--receiver", nargs=2, metavar=("PORT", "FAILURE_RATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        serve_receiver(int(args.receiver[0]), float(args.receiver[1]))
        return

    from gateway.runtime import Gateway
    from gateway.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("PATHWAY_DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
        gateway = Gateway.start(Settings(database_url=url, secrets_dir=Path(tmp) / "secrets", run_workers=False))
        import_conf_with_quick_retries(gateway, Path(tmp))
        patient = consented_person(gateway)
        senders = start_senders(gateway, args.processes, args.threads)
        for label, count, rate, recipient in (
            ("healthy receiver", args.healthy, 0.0, RECIPIENTS[0]),
            ("30%-failing receiver", args.failing, 0.3, RECIPIENTS[1]),
        ):
            if not count:
                continue
            receiver = ReceiverProcess(rate)
            try:
                elapsed, stats = run(gateway, receiver, count, recipient, patient)
            finally:
                receiver.close()
            print(
                f"{label}, {args.processes} process(es) x {args.threads} threads: {count} deliveries drained in {elapsed:.2f} s = "
                f"{stats['accepted'] / elapsed:,.0f} accepted deliveries/s ({stats['posts']} POSTs, {stats['accepted']} distinct keys accepted)"
            )
            if stats["accepted"] != count:
                raise SystemExit(f"{count - stats['accepted']} of the {count} deliveries were not accepted: dropped or dead, not delivered")
        for sender in senders:
            sender.terminate()
            sender.wait(timeout=60)
        gateway.close()


if __name__ == "__main__":
    main()
