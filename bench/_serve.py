"""What the bench scripts share: running `pathway serve` for a bench, the closed-loop load
loop over keep-alive connections in a few processes, and percentiles."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]



_LENGTH = re.compile(rb"(?i)content-length:\s*(\d+)")


def serve_answers(port: int, answer: Callable[[bytes], bytes]) -> None:
    """Serve keep-alive HTTP/1.1 on 127.0.0.1:``port`` until killed, answering each request
    with ``answer(its head)`` (bodies are read and dropped): a fixed-answer peer cheap enough
    not to be what a bench measures."""

    class Answering(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport, self.buffer = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                head = self.buffer[:end]
                length = int(m.group(1)) if (m := _LENGTH.search(head)) else 0
                if len(self.buffer) < end + 4 + length:
                    return
                self.buffer = self.buffer[end + 4 + length :]
                self.transport.write(answer(head))  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Answering, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile of latencies in seconds, in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def wait_until(url: str, name: str, seconds: float = 30) -> None:
    """Return once ``url`` answers 200; exit saying ``name`` did not, after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{name} did not answer {url} within {seconds:g} s")


def add_serving_arguments(parser: argparse.ArgumentParser, port: int) -> None:
    """``--port`` and ``--workers`` for the `pathway serve` a bench starts."""
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument(
        "--workers", type=int, default=1, help="pathway serve --workers (default 1)"
    )


def add_load_arguments(parser: argparse.ArgumentParser, seconds: float | None = None, concurrency: str = "32") -> None:
    """``--concurrency`` (requests in flight, comma-separated for several runs), ``--processes``
    (load-generating processes) and, when given a default, ``--seconds`` (per run)."""
    if seconds is not None:
        parser.add_argument("--seconds", type=float, default=seconds, help="seconds per run")
    parser.add_argument("--concurrency", type=lambda text: [int(n) for n in text.split(",")], default=concurrency,
                        help=f"requests in flight (closed loop, keep-alive), comma-separated for several runs (default {concurrency})")
    parser.add_argument("--processes", type=int, default=2, help="load-generating processes (default 2)")


@contextmanager
def pathway_serve(database_url: str, secrets_dir: Path, port: int, workers: int = 1, env: dict[str, str] | None = None) -> Iterator[str]:
    """`pathway serve --workers N` on 127.0.0.1:port (quiet logs, no background work unless
    ``env`` asks for it); yields its base URL."""
    env = {
        **os.environ,
        "PATHWAY_DATABASE_URL": database_url,
        "PATHWAY_SECRETS_DIR": str(secrets_dir),
        "PATHWAY_LOG_LEVEL": "WARNING",
        "PATHWAY_RUN_WORKERS": "0",
        # One client drives the whole gateway here, past the per-client limit (2,000/s) that
        # keeps partners from crowding each other out; the limiter still runs on every request.
        "PATHWAY_RATE_LIMIT": "1000000",
        **(env or {}),
    }
    server = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", str(workers)], env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(f"{base}/healthz", "pathway serve")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- the load loop -----------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request of a bench, and what a correct answer is: the status, and pieces the body must hold."""

    method: str
    path: str
    body: bytes | None = None
    expect: int = 200
    contains: tuple[bytes, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    kind: str = "request"


class Connection:
    """One keep-alive http.client connection that times each call and counts only correct
    answers (the expected status, and every expected piece in the body).

    http.client costs the load generator far less CPU per request than an async client,
    which matters when client and server share two cores."""

    def __init__(self, port: int, token: str | None, tally: "Tally") -> None:
        self.port, self.tally = port, tally
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/fhir+json", **({"Authorization": f"Bearer {token}"} if token else {})}

    def call(self, call: Call) -> bytes | None:
        """The answer's body when correct (its latency counted under ``call.kind``), else None (an error counted)."""
        started = time.perf_counter()
        try:
            self.http.request(call.method, call.path, body=call.body, headers={**self.headers, **dict(call.headers)})
            response = self.http.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError) as failure:  # counted, then a fresh connection
            self.tally.error(f"{call.kind} {call.method} {call.path.split('?')[0]} -> connection failed: {failure!r}")
            self.http.close()
            return None
        elapsed = time.perf_counter() - started
        if response.status != call.expect or not all(piece in data for piece in call.contains):
            self.tally.error(f"{call.kind} {call.method} {call.path.split('?')[0]} -> {response.status}: {data[:160]!r}")
            return None
        self.tally.latencies.setdefault(call.kind, []).append(elapsed)
        return data


@dataclass
class Tally:
    """Latencies of correct answers by kind, errors, and what the steps kept (``kept``)."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    kept: list[Any] = field(default_factory=list)
    elapsed: float = 0.0

    def error(self, message: str) -> None:
        self.errors.append(message)

    def merge(self, other: "Tally") -> None:
        for kind, samples in other.latencies.items():
            self.latencies.setdefault(kind, []).extend(samples)
        self.errors += other.errors
        self.kept += other.kept

    def rate(self, kind: str) -> float:
        return len(self.latencies.get(kind, ())) / self.elapsed if self.elapsed else 0.0

    def line(self, kind: str, label: str | None = None, unit: str = "req/s") -> str:
        """``label  N unit  p50  p99  (answers, errors)``: the summary line of one kind."""
        samples = self.latencies.get(kind, [])
        return (
            f"{label or kind:12s} {self.rate(kind):8,.0f} {unit}   p50 {percentile(samples, 0.5):6.1f} ms   "
            f"p99 {percentile(samples, 0.99):6.1f} ms   ({len(samples)} correct answers, {len(self.errors)} errors)"
        )


Step = Callable[[Connection, int, Any], None]


def cycle(connection: Connection, n: int, calls: Sequence[Call]) -> None:
    """The simplest step: the n-th of a fixed list of calls, round and round."""
    connection.call(calls[n % len(calls)])


def _load_process(job: tuple[Step, Any, int, str | None, float, int, int, int], ready: Any, results: Any) -> None:
    """One load process: once every process is ready, ``threads`` connections for ``seconds``."""
    step, argument, port, token, seconds, threads, first, stride = job
    tallies = [Tally() for _ in range(threads)]
    ready.wait(timeout=300)  # starting a process (its imports) is not part of the run
    started = time.time()
    deadline = started + seconds

    def loop(index: int) -> None:
        connection = Connection(port, token, tallies[index])
        n = first + index
        while time.time() < deadline:
            step(connection, n, argument)
            n += stride

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    for tally in tallies[1:]:
        tallies[0].merge(tally)
    results.put((started, time.time(), tallies[0]))


def drive(step: Step, argument: Any, port: int, token: str | None, *, concurrency: int, seconds: float, processes: int = 2) -> Tally:
    """Closed-loop load: ``concurrency`` keep-alive connections (spread over up to ``processes``
    load processes), each calling ``step(connection, n, argument)`` again as soon as the last
    returned, for ``seconds`` from when every process is ready. ``step`` and ``argument`` must
    pickle (a module-level function)."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (1 if p < concurrency % processes else 0) for p in range(processes)]
    firsts = [sum(shares[:p]) for p in range(processes)]
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(processes), context.Queue()
    jobs = [(step, argument, port, token, seconds, shares[p], firsts[p], concurrency) for p in range(processes)]
    workers = [context.Process(target=_load_process, args=(job, ready, results)) for job in jobs]
    for worker in workers:
        worker.start()
    parts = [results.get(timeout=seconds + 600) for _ in workers]
    for worker in workers:
        worker.join()
    total = Tally()
    for _, _, part in parts:
        total.merge(part)
    total.elapsed = max(end for _, end, _ in parts) - min(start for start, _, _ in parts)
    return total


def sharing(*others: str, concurrency: int, processes: int = 2) -> str:
    """What shares the CPUs during a run: the server, the load processes, anything else given."""
    load = max(1, min(processes, concurrency))
    parts = [*others, f"{load} load-generator process{'es' if load > 1 else ''} ({concurrency} in flight)"]
    busy = os.getloadavg()[0]
    return f"sharing {os.cpu_count()} cores: {', '.join(parts)}; 1-minute load average before the run {busy:.1f}"
