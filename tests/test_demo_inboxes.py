"""``pathway demo``: the demo partners really receive. Their inboxes on 127.0.0.1 (written into
the demo's conf) verify signatures and keep one copy per delivery key; a fresh demo delivers
everything it queued, with no dead letters."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from sqlalchemy import select

from gateway.delivery.models import DeliveryRow
from gateway.delivery.worker import DeliveryWorker
from gateway.demo_inbox import DemoInbox, describe, serve_inboxes
from tests.demo_world import DemoWorld, demo_world
from tests.test_subscriptions import SETTINGS


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoWorld]:
    with demo_world(tmp_path_factory.mktemp("demo")) as built:
        yield built


@pytest.fixture(scope="module")
def inboxes(world: DemoWorld) -> Iterator[dict[str, DemoInbox]]:
    started = serve_inboxes(world.summary["inboxes"], world.url, world.out / "inbox")
    yield {inbox.organization: inbox for inbox in started}
    for inbox in started:
        inbox.close()


def statuses(world: DemoWorld) -> Counter[str]:
    assert world.gateway is not None
    with world.gateway.reading() as session:
        return Counter(session.scalars(select(DeliveryRow.status)))


def test_the_demo_conf_points_every_subscriber_at_a_local_inbox(world: DemoWorld) -> None:
    partners = yaml.safe_load((world.out / "conf" / "partners.yaml").read_text())
    hooks = {o["id"]: o["webhook"]["url"] for o in partners["organizations"] if "webhook" in o}
    assert hooks == world.summary["inboxes"]
    assert {"rehab-tayview-house", "dundee-carers-centre", "dundee-hscp"} <= set(hooks)
    assert sorted(hooks.values()) == sorted(f"http://127.0.0.1:{world.port + n}/inbox" for n in range(1, len(hooks) + 1))
    assert not [url for url in hooks.values() if ".example" in url]


def test_a_fresh_demo_delivers_everything_to_the_partners_inboxes(world: DemoWorld, inboxes: dict[str, DemoInbox]) -> None:
    assert world.gateway is not None
    queued = statuses(world)
    assert queued["pending"] > 0
    worker = DeliveryWorker(world.gateway, _policy(world), settings=SETTINGS, threads=4)
    try:
        deadline = time.monotonic() + 60
        while statuses(world)["pending"] and time.monotonic() < deadline:
            worker.run_once(limit=200)
    finally:
        worker.close()
    done = statuses(world)
    assert done["pending"] == done["sending"] == done["dead"] == 0, done
    delivered = done["delivered"]
    assert delivered == sum(len(inbox.received()) for inbox in inboxes.values())
    facility = [describe(b) for b in inboxes["rehab-tayview-house"].received()]
    assert facility and all(d.startswith("facility-referral event ") for d in facility if "referral" in d)
    # the inbox page lists them
    page = httpx.get(inboxes["rehab-tayview-house"].url.removesuffix("/inbox") + "/").text
    assert "facility-referral event 1" in page


def test_an_inbox_checks_signatures_and_keeps_one_copy_per_key(world: DemoWorld, inboxes: dict[str, DemoInbox], tmp_path: Path) -> None:
    inbox = inboxes["dundee-carers-centre"]
    [kept, *_] = sorted(inbox.directory.glob("*.json"))
    body = kept.read_bytes()
    before = len(inbox.received())
    forged = httpx.post(inbox.url, content=body, headers={"X-Pathway-Delivery": "forged-1", "X-Pathway-Signature": "eyJhbGciOiJFUzI1NiJ9..AAAA"})
    assert forged.status_code == 401
    assert world.gateway is not None
    signature = world.gateway.signing_key.sign_detached(body)
    again = httpx.post(inbox.url, content=body, headers={"X-Pathway-Delivery": kept.stem, "X-Pathway-Signature": signature})
    assert (again.status_code, again.text) == (200, "already received (same X-Pathway-Delivery)")
    assert len(inbox.received()) == before
    assert orjson.loads(body)["type"] == "history"


def _policy(world: DemoWorld):  # type: ignore[no-untyped-def]
    """The policy the served demo application uses."""
    assert world.server is not None
    return world.server.app.state.fhir.policy
