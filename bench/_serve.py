"""What the bench scripts share: running `pathway serve` for a bench, and percentiles."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile of latencies in seconds, in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def wait_until_serving(base: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"pathway serve did not answer {base}/healthz within {seconds:g} s")


def add_serving_arguments(parser: argparse.ArgumentParser, port: int) -> None:
    """``--port`` and ``--workers`` for the `pathway serve` a bench starts."""
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument(
        "--workers", type=int, default=1, help="pathway serve --workers (default 1)"
    )


@contextmanager
def pathway_serve(database_url: str, secrets_dir: Path, port: int, workers: int = 1) -> Iterator[str]:
    """`pathway serve --workers N` on 127.0.0.1:port (quiet logs, no background work); yields its base URL."""
    env = {
        **os.environ,
        "PATHWAY_DATABASE_URL": database_url,
        "PATHWAY_SECRETS_DIR": str(secrets_dir),
        "PATHWAY_LOG_LEVEL": "WARNING",
        "PATHWAY_RUN_WORKERS": "0",
    }
    server = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", str(workers)], env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
