"""The demo partners' inboxes: small webhook receivers ``pathway demo`` serves beside the gateway.

Each demo partner with a subscription gets one on 127.0.0.1 (the gateway's port + 1, + 2, ...),
written into the demo's copy of ``conf/partners.yaml``. An inbox does what a partner's system
should: it checks ``X-Pathway-Signature`` against the gateway's published keys
(``/.well-known/jwks.json``), keeps one copy per ``X-Pathway-Delivery`` key (idempotent), and
stores each notification Bundle as ``DIR/inbox/{organisation}/{key}.json``. ``GET /`` lists
what it received, so a newcomer can follow a referral to the facility's inbox.
"""

from __future__ import annotations

import html
import logging
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from gateway.auth.keys import verify_detached

log = logging.getLogger("pathway.demo.inbox")
# Who receives what in the demo, by organisation id: the partners conf/partners.yaml gives a
# webhook keep their subscriptions; the rehab team and the community team get inboxes too,
# so that a referral, its stages and an early-exit alert can be followed to a receiver.
DEMO_SUBSCRIPTIONS: Mapping[str, tuple[str, ...]] = {
    "dundee-hscp": ("referral", "task-status", "review", "contingency-alert"),
    "dundee-recovery-service": ("contingency-alert", "withdrawal-notice"),
}
INBOX_PATH = "/inbox"


def demo_conf(conf_dir: Path, out: Path, port: int) -> tuple[Path, dict[str, str]]:
    """Copy ``conf_dir`` to ``out/conf`` with every demo subscriber's webhook on a local inbox;
    returns the copy and the inbox URL of each organisation id."""
    target = out / "conf"
    target.mkdir(parents=True, exist_ok=True)
    for source in conf_dir.glob("*.yaml"):
        (target / source.name).write_bytes(source.read_bytes())
    partners = yaml.safe_load((conf_dir / "partners.yaml").read_text())
    urls: dict[str, str] = {}
    for organization in partners["organizations"]:
        events = list(organization.get("subscriptions") or DEMO_SUBSCRIPTIONS.get(organization["id"], ()))
        if not events:
            continue
        url = f"http://127.0.0.1:{port + 1 + len(urls)}{INBOX_PATH}"
        organization["webhook"] = {"url": url, "timeout_seconds": 10}
        organization["subscriptions"] = events
        urls[organization["id"]] = url
    header = "# Written by `pathway demo`: conf/partners.yaml with each subscriber's webhook on its demo inbox.\n"
    (target / "partners.yaml").write_text(header + yaml.safe_dump(partners, sort_keys=False, allow_unicode=True))
    return target, urls


class DemoInbox:
    """One partner's inbox, served from a thread until :meth:`close`."""

    def __init__(self, organization: str, url: str, gateway_url: str, directory: Path) -> None:
        self.organization, self.url, self.gateway_url = organization, url, gateway_url
        self.directory = directory / organization
        self.directory.mkdir(parents=True, exist_ok=True)
        self._jwks: dict[str, Any] | None = None
        self._lock = threading.Lock()
        inbox = self
        port = int(url.split(":")[2].split("/")[0])

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = inbox.receive(self.path, self.headers.get("X-Pathway-Delivery", ""), self.headers.get("X-Pathway-Signature", ""), body)
                self._send(status, answer.encode(), "text/plain; charset=utf-8")

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, inbox.page().encode(), "text/html; charset=utf-8")

            def _send(self, status: int, content: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"inbox-{organization}", daemon=True)
        self._thread.start()

    def _keys(self, refresh: bool = False) -> dict[str, Any]:
        if self._jwks is None or refresh:
            self._jwks = httpx.get(f"{self.gateway_url}/.well-known/jwks.json", timeout=5).json()
        return self._jwks

    def receive(self, path: str, key: str, signature: str, body: bytes) -> tuple[int, str]:
        """Check and keep one notification; (HTTP status, a word on why)."""
        if path != INBOX_PATH:
            return 404, "not an inbox"
        if not key or "/" in key or key.startswith("."):
            return 400, "X-Pathway-Delivery is required"
        # A key the inbox has not seen yet may mean the gateway's key was rotated: fetch them again.
        if not (verify_detached(signature, body, self._keys()) or verify_detached(signature, body, self._keys(refresh=True))):
            return 401, "signature does not verify against the gateway's published keys"
        stored = self.directory / f"{key}.json"
        with self._lock:
            if stored.exists():
                return 200, "already received (same X-Pathway-Delivery)"
            stored.write_bytes(body)
        print(f"inbox {self.organization}: {describe(orjson.loads(body))}", file=sys.stderr, flush=True)
        return 200, "received"

    def received(self) -> list[dict[str, Any]]:
        """What this inbox kept, oldest first."""
        files = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        return [orjson.loads(p.read_bytes()) for p in files]

    def page(self) -> str:
        rows = "".join(f"<li>{html.escape(describe(bundle))}</li>" for bundle in self.received())
        return (
            f"<!doctype html><html lang='en-GB'><meta charset='utf-8'><title>Inbox of {html.escape(self.organization)}</title>"
            f"<h1>Inbox of {html.escape(self.organization)} (demo)</h1><p>Signed notifications from the gateway, one per delivery key.</p>"
            f"<ol>{rows or '<li>nothing yet</li>'}</ol></html>"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def describe(bundle: dict[str, Any]) -> str:
    """``facility-referral event 3: Task/abc (+2 resources)`` for a notification Bundle."""
    params = bundle["entry"][0]["resource"]["parameter"]
    named = {p["name"]: p for p in params}
    topic = named["topic"]["valueCanonical"].rsplit("/", 1)[-1]
    kind = named["type"]["valueCode"]
    events = [{part["name"]: part for part in p["part"]} for p in params if p["name"] == "notification-event"]
    if not events:
        return f"{topic} {kind}"
    first = events[0]
    focus = first.get("focus", {}).get("valueReference", {}).get("reference", "?")
    return f"{topic} event {first['event-number']['valueString']}: {focus} (+{len(bundle['entry']) - 1} resources)"


def serve_inboxes(urls: Mapping[str, str], gateway_url: str, directory: Path) -> list[DemoInbox]:
    """Start an inbox for each organisation id -> URL."""
    return [DemoInbox(organization, url, gateway_url, directory) for organization, url in urls.items()]
