"""Delivery throughput: signed pushes to a local receiver, healthy and 30%-failing.

    .venv/bin/python bench/delivery.py                   # 5,000 healthy, 10,000 through a 30%-failing receiver
    .venv/bin/python bench/delivery.py --healthy 1000 --failing 1000 --threads 8

The receiver runs in its own process (a minimal HTTP/1.1 server on 127.0.0.1
that answers at once, counting distinct X-Pathway-Delivery keys), so it does
not compete with the sender for the interpreter lock. The database is a fresh
SQLite file unless PATHWAY_DATABASE_URL names another (e.g. PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_LENGTH = re.compile(rb"(?i)content-length:\s*(\d+)")
_KEY = re.compile(rb"(?i)x-pathway-delivery:\s*([^\r\n]+)")


# --- the receiver (its own process) ------------------------------------------------------


def serve_receiver(port: int, failure_rate: float) -> None:
    """Answer POSTs at once: 500 with ``failure_rate`` chance, else 200; GET /stats reports."""
    accepted: set[bytes] = set()
    counts = {"posts": 0}
    chance = random.Random(11)

    class Receiver(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                head = self.buffer[:end]
                length = int(m.group(1)) if (m := _LENGTH.search(head)) else 0
                if len(self.buffer) < end + 4 + length:
                    return
                self.buffer = self.buffer[end + 4 + length :]
                self.transport.write(self._answer(head))

        def _answer(self, head: bytes) -> bytes:
            if head.startswith(b"GET /stats"):
                body = orjson.dumps({"accepted": len(accepted), "posts": counts["posts"]})
                return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            counts["posts"] += 1
            if chance.random() < failure_rate:
                return b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
            key = _KEY.search(head)
            accepted.add(key.group(1) if key else b"")
            return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Receiver, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


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


def queue_deliveries(gateway, count: int, recipient: str) -> None:  # type: ignore[no-untyped-def]
    """Tasks naming ``recipient`` as owner, each with its facility-referral delivery queued."""
    from gateway.delivery import enqueue

    system, _, value = recipient.partition("|")
    for start in range(0, count, 500):
        with gateway.transaction() as session:
            repo = gateway.repository(session)
            for _ in range(min(500, count - start)):
                task = repo.create(
                    {
                        "resourceType": "Task",
                        "status": "requested",
                        "intent": "order",
                        "for": {"reference": "Patient/bench"},
                        "owner": {"identifier": {"system": system, "value": value}},
                    },
                    "https://fhir.nhs.uk/Id/ods-organization-code|S037",
                )
                enqueue(session, event="facility-referral", recipient=recipient, focus=task.reference, patient="Patient/bench", purpose="CAREMGT")


def _worker(gateway, threads: int):  # type: ignore[no-untyped-def]
    from gateway.delivery.retry import RetrySettings
    from gateway.delivery.worker import DeliveryWorker
    from gateway.fhir.access import CustodianPolicy

    settings = RetrySettings(base_delay_seconds=0.01, max_delay_seconds=0.5, max_attempts=30, timeout_seconds=5)
    return DeliveryWorker(gateway, CustodianPolicy(), threads=threads, settings=settings, idle_sleep=0.005)


def _left(gateway, recipient: str) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from gateway.delivery.models import DeliveryRow

    with gateway.reading() as session:
        return session.scalar(
            select(func.count())
            .select_from(DeliveryRow)
            .where(DeliveryRow.recipient == recipient, DeliveryRow.status.in_(["pending", "sending"]))
        )


def send_in_process(database_url: str, secrets_dir: str, threads: int) -> None:
    """A second gateway process's worker: start on "go" from stdin, stop at end of input."""
    from gateway.runtime import Gateway
    from gateway.settings import Settings

    gateway = Gateway.start(Settings(database_url=database_url, secrets_dir=Path(secrets_dir), run_workers=False), run_migrations=False)
    worker = _worker(gateway, threads)
    print("ready", flush=True)
    sys.stdin.readline()
    worker.start()
    sys.stdin.readline()
    worker.close()
    gateway.close()


def run(gateway, receiver: ReceiverProcess, count: int, threads: int, processes: int, recipient: str) -> tuple[float, dict[str, int]]:  # type: ignore[no-untyped-def]
    """Queue ``count`` deliveries to ``receiver`` and time ``processes`` workers draining them."""
    from gateway.delivery import sync_subscriptions

    with gateway.transaction() as session:
        sync_subscriptions(session, [(recipient, receiver.url, ["facility-referral"])])
    queue_deliveries(gateway, count, recipient)
    helpers = [
        subprocess.Popen(
            [sys.executable, __file__, "--send", gateway.settings.database_url, str(gateway.settings.secrets_dir), str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for _ in range(processes - 1)
    ]
    for helper in helpers:
        assert helper.stdout is not None and helper.stdout.readline().strip() == "ready"
    worker = _worker(gateway, threads)
    started = time.perf_counter()
    for helper in helpers:
        helper.stdin.write("go\n")  # type: ignore[union-attr]
        helper.stdin.flush()  # type: ignore[union-attr]
    worker.start()
    while _left(gateway, recipient):
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    for helper in helpers:
        helper.communicate("stop\n", timeout=60)
    worker.close()
    return elapsed, receiver.stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--healthy", type=int, default=5000, help="deliveries to the healthy receiver")
    parser.add_argument("--failing", type=int, default=10000, help="deliveries through the 30%%-failing receiver")
    parser.add_argument("--threads", type=int, default=8, help="sending threads")
    parser.add_argument("--processes", type=int, default=1, help="gateway processes sending (each with its own engine)")
    parser.add_argument("--receiver", nargs=2, metavar=("PORT", "FAILURE_RATE"), help=argparse.SUPPRESS)
    parser.add_argument("--send", nargs=3, metavar=("DATABASE_URL", "SECRETS_DIR", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        serve_receiver(int(args.receiver[0]), float(args.receiver[1]))
        return
    if args.send:
        send_in_process(args.send[0], args.send[1], int(args.send[2]))
        return

    from gateway.runtime import Gateway
    from gateway.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("PATHWAY_DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
        gateway = Gateway.start(Settings(database_url=url, secrets_dir=Path(tmp) / "secrets", run_workers=False))
        for label, count, rate, recipient in (
            ("healthy receiver", args.healthy, 0.0, "https://pathway.scot/Id/partner|bench-healthy"),
            ("30%-failing receiver", args.failing, 0.3, "https://pathway.scot/Id/partner|bench-failing"),
        ):
            if not count:
                continue
            receiver = ReceiverProcess(rate)
            try:
                elapsed, stats = run(gateway, receiver, count, args.threads, args.processes, recipient)
            finally:
                receiver.close()
            print(
                f"{label}, {args.processes} process(es) x {args.threads} threads: {count} deliveries drained in {elapsed:.2f} s = {count / elapsed:,.0f} deliveries/s "
                f"({stats['posts']} POSTs, {stats['accepted']} distinct keys accepted)"
            )
        gateway.close()


if __name__ == "__main__":
    main()
