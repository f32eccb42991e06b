"""Referral throughput: rehab referrals submitted end to end over HTTP on 127.0.0.1.

Starts `pathway serve` on a fresh database in a temporary directory with the demo
partnership's configuration imported and people already known, registers the HSCP's
social-work client with a real key, then submits rehab referrals (POST ServiceRequest;
each opens the pathway Task, EpisodeOfCare and CarePlan in the same transaction) from
concurrent connections for a bounded time (``--concurrency`` in flight, closed loop), while
the delivery worker of ``pathway serve`` sends each referral's notification to a receiver
on 127.0.0.1 (``--no-deliveries`` to leave them out), spot-checks the pathway was opened,
and prints referrals/s with p50/p99 (correct answers only) and the deliveries sent.

    .venv/bin/python bench/referral.py [--seconds 10] [--concurrency 4] [--people 2000] [--sender serving|apart] [--database-url URL]

Target on a 2-core machine with SQLite: >= 300 referrals/s, p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._serve import Call, Connection, add_load_arguments, add_serving_arguments, drive, pathway_serve, sharing  # noqa: E402
from bench.delivery import ReceiverProcess  # noqa: E402
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


def refer(connection: Connection, n: int, people: list[str]) -> None:
    """One referral of the n-th person; a correct answer is a 201 with the ServiceRequest."""
    data = connection.call(Call("POST", "/fhir/ServiceRequest", referral(people[n % len(people)]), 201, (b'"resourceType":"ServiceRequest"',), kind="referral"))
    if data is not None:
        connection.tally.kept.append(orjson.loads(data)["id"])


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


def delivery_backlog(receiver: ReceiverProcess, expected: int, limit: float = 30.0) -> str:
    """How long after the last referral was answered the receiver had every referral's
    notification: the age of the delivery backlog the run left (one notification a referral)."""
    started = time.monotonic()
    while (accepted := receiver.stats()["accepted"]) < expected and time.monotonic() - started < limit:
        time.sleep(0.005)
    waited = (time.monotonic() - started) * 1000
    if accepted < expected:
        return f"deliveries: {expected - accepted} of the run's notifications still not accepted {limit:g} s after it ended"
    return f"deliveries: every referral's notification accepted within {waited:,.0f} ms of the run's end"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_load_arguments(parser, seconds=10.0, concurrency="4")
    parser.add_argument("--people", type=int, default=2000, help="Patients known before the run (referred in turn)")
    parser.add_argument("--no-deliveries", action="store_true", help="run without the delivery worker and receiver")
    parser.add_argument("--sender", choices=("serving", "apart"), default="serving",
                        help="where deliveries are sent from: the serving process's own worker (default), or a "
                             "`pathway deliveries work` process beside it (the serving process then sends none)")
    add_serving_arguments(parser, 8766)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/bench.db"
        secrets_dir = Path(tmp) / "secrets"
        base = f"http://127.0.0.1:{args.port}"
        creds, people = prepare(database_url, secrets_dir, args.people, base)
        receiver = None if args.no_deliveries else ReceiverProcess(0.0)
        try:
            if receiver is not None:
                subscribe(database_url, secrets_dir, receiver.url)
            serving_sends = receiver is not None and args.sender == "serving"
            with pathway_serve(database_url, secrets_dir, args.port, args.workers, env={"PATHWAY_RUN_WORKERS": "1" if serving_sends else "0"}), \
                    delivery_sender(database_url, secrets_dir, receiver is not None and not serving_sends):
                client = PathwayClient(creds)
                print(f"Pathway referrals on {database_url.split(':')[0]}, {args.workers} worker(s), {args.seconds:g} s, {len(people)} people, "
                      f"deliveries {'off' if receiver is None else 'flowing to a receiver on 127.0.0.1 (its own process)'}")
                others = [f"pathway serve ({args.workers} worker{'s' if args.workers > 1 else ''}{', with its delivery worker' if serving_sends else ''})"]
                if receiver is not None and not serving_sends:
                    others.append("a `pathway deliveries work` process")
                for concurrency in args.concurrency:
                    print(sharing(*others, *(["the receiver"] if receiver else []), concurrency=concurrency, processes=args.processes))
                    before = receiver.stats()["accepted"] if receiver else 0
                    tally = drive(refer, people, args.port, client.token(), concurrency=concurrency, seconds=args.seconds, processes=args.processes)
                    print(tally.line("referral", f"referral x{concurrency}", "referrals/s"))
                    if receiver is not None:
                        print(f"deliveries accepted by the receiver during the run: {(receiver.stats()['accepted'] - before) / tally.elapsed:,.0f}/s")
                        print(delivery_backlog(receiver, before + len(tally.kept)))
                    for error in tally.errors[:3]:
                        print(f"  error: {error}")
                    if tally.kept:
                        check_pathways_opened(client, tally.kept)
        finally:
            if receiver is not None:
                receiver.close()


@contextmanager
def delivery_sender(database_url: str, secrets_dir: Path, wanted: bool) -> Iterator[None]:
    """`pathway deliveries work` beside the server while the run lasts, when ``wanted``."""
    if not wanted:
        yield
        return
    env = {**os.environ, "PATHWAY_DATABASE_URL": database_url, "PATHWAY_SECRETS_DIR": str(secrets_dir), "PATHWAY_LOG_LEVEL": "WARNING"}
    sender = subprocess.Popen([sys.executable, "-m", "gateway.cli", "deliveries", "work"], env=env, cwd=REPO)
    try:
        yield
    finally:
        sender.terminate()
        sender.wait(timeout=30)


def subscribe(database_url: str, secrets_dir: Path, url: str) -> None:
    """The rehab team (the HSCP) takes its referral notifications at ``url``."""
    from gateway.delivery import sync_subscriptions

    gateway = Gateway.start(Settings(database_url=database_url, secrets_dir=secrets_dir, run_workers=False))
    try:
        with gateway.transaction() as session:
            sync_subscriptions(session, [(HSCP, url, ["referral"])])
    finally:
        gateway.close()


if __name__ == "__main__":
    main()
