"""The delivery worker: claims due deliveries, re-checks consent, signs and POSTs them.

Claims are row locks (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
serialises writers) turned into a lease: a delivery in ``sending`` belongs to
the worker that claimed it until ``claimed_until``, after which another worker
may take it over. A worker never starts a POST it could not finish inside its
lease, so two workers never send the same delivery at the same time; a crash
between a POST and recording its result means the receiver may see it again,
which its idempotency key (``X-Pathway-Delivery``) absorbs.

What is sent is decided at send time: the focus and the extra resources are
read as they are now and passed through the access policy for the recipient,
so a consent withdrawn after the event was queued stops the delivery.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from gateway.audit.chain import Actor, append_many, audit_event
from gateway.audit.ledger import insert_disclosures
from gateway.conf import Delivery
from gateway.delivery.content import DELIVERY_CLIENT_ID, Shown, shown_to
from gateway.delivery.egress import InternalAddress, Resolver, checked_client, system_resolver
from gateway.delivery.models import CONTROL_EVENTS, DeliveryRow, SubscriptionRow
from gateway.delivery.notification import Event, notification_bundle, serialise
from gateway.delivery.retry import retry_after_seconds
from gateway.delivery.subscriptions import SubscriptionOutcomes, due_heartbeats
from gateway.fhir.access import AccessPolicy
from gateway.pathway_settings import pathway_settings
from gateway.runtime import Gateway
from gateway.store.hot import Hot
from gateway.store.repository import Repository, now_utc

log = logging.getLogger("pathway.delivery")
DELIVERY = DeliveryRow.__table__
SUBSCRIPTION = SubscriptionRow.__table__
SETTINGS_TTL_SECONDS = 30.0
# How often the background loop queues due heartbeats and escalates late urgent alerts.
SWEEP_SECONDS = 5.0
# While sending, the loop records and claims once a round: at most one turn of the write
# lock per round, however many deliveries it carries (see DeliveryWorker._run).
ROUND_SECONDS = 0.1
Clock = Callable[[], datetime]
_ERROR_BODY_CHARS = 200

# A delivery is due when it is pending and its time has come, or its sender's lease lapsed.
_DUE = or_(
    and_(DELIVERY.c.status == "pending", DELIVERY.c.next_attempt_at <= bindparam("now")),
    and_(DELIVERY.c.status == "sending", DELIVERY.c.claimed_until < bindparam("now")),
)
# Compiled once: the exchange runs them holding the write lock, many times a second under load.
_ANY_DUE = Hot(select(DELIVERY.c.id).where(_DUE).limit(1))
_CLAIMABLE = Hot(select(DELIVERY).where(_DUE).order_by(DELIVERY.c.next_attempt_at).limit(bindparam("limit")).with_for_update(skip_locked=True))
_CLAIM = Hot(update(DELIVERY).where(DELIVERY.c.id == bindparam("b_id")).values(status="sending", attempts=DELIVERY.c.attempts + 1))

_RECORD = (
    update(DELIVERY)
    .where(DELIVERY.c.id == bindparam("b_id"), DELIVERY.c.claimed_by == bindparam("b_worker"))
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        next_attempt_at=bindparam("next_attempt_at"),
        last_error=bindparam("last_error"),
        delivered_at=bindparam("delivered_at"),
        claimed_by=None,
        claimed_until=None,
    )
)


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds the lease on."""

    id: str
    subscription_id: str
    event_number: int
    event: str
    recipient: str
    endpoint: str
    focus: str
    patient: str | None
    purpose: str
    acting_for: str | None
    extra_refs: tuple[str, ...]
    attempts: int  # including the one about to be made
    next_attempt_at: datetime
    claimed_until: datetime
    created: datetime


@dataclass
class Prepared:
    """A claimed delivery with its body, or the reason it must not be sent."""

    delivery: Claimed
    body: bytes = b""
    sent_refs: list[str] = field(default_factory=list)
    disclosures: list[dict[str, Any]] = field(default_factory=list)
    drop_reason: str | None = None
    retry_reason: str | None = None
    operator: bool = False  # a conf/ subscription: the operator's endpoint, which may be on this host


@dataclass(frozen=True)
class Result:
    """What became of one claimed delivery."""

    prepared: Prepared
    status: str  # delivered | pending | dead | dropped | released
    detail: str | None = None
    posted: bool = False
    retry_after: float | None = None
    endpoint_refused: bool = False  # the endpoint is internal: its subscription is in error at once


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DeliveryWorker:
    """Sends queued deliveries; several may run at once, in threads or processes."""

    def __init__(
        self,
        gateway: Gateway,
        policy: AccessPolicy,
        *,
        http: httpx.Client | None = None,
        threads: int = 4,
        settings: Delivery | None = None,
        idle_sleep: float = 0.2,
        rng: random.Random | None = None,
        clock: Clock = now_utc,
        resolve: Resolver = system_resolver,
    ) -> None:
        """``settings`` fixes the retry settings; when None they are read from pathway.yaml.
        ``clock`` tells the time (tests move it on instead of sleeping); ``resolve`` finds an
        endpoint's addresses (gateway.delivery.egress). Partners' endpoints may be on this host
        only with ``Settings.loopback_subscriptions``; the operator's (conf/) may be."""
        self.gateway, self.policy, self.threads = gateway, policy, threads
        self.name = worker_name()
        self.idle_sleep = idle_sleep
        self.clock = clock
        self._fixed_settings = settings
        self._settings_cache: tuple[float, Delivery] | None = None
        self._last_sweep = 0.0
        self._rng = rng or random.Random()
        self._own_http = http is None
        limits = httpx.Limits(max_connections=threads * 4, max_keepalive_connections=threads * 4)
        # Two pools, so a connection opened to the operator's loopback endpoint is never reused for a partner's.
        self._http = http or checked_client(allow_loopback=gateway.settings.loopback_subscriptions, limits=limits, resolve=resolve)
        self._operator_http = http or checked_client(allow_loopback=True, limits=limits, resolve=resolve)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="pathway-delivery")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        base = gateway.settings.public_url
        self._fhir_base = f"{base.rstrip('/')}/fhir" if base else None

    # --- settings ------------------------------------------------------------------

    def settings(self) -> Delivery:
        """The retry settings in force (pathway.yaml's ``delivery:``, re-read every 30 s)."""
        if self._fixed_settings is not None:
            return self._fixed_settings
        cached = self._settings_cache
        if cached is not None and time.monotonic() - cached[0] < SETTINGS_TTL_SECONDS:
            return cached[1]
        with self.gateway.reading() as session:
            try:
                settings = pathway_settings(session).delivery
            except LookupError:
                settings = Delivery()
        self._settings_cache = (time.monotonic(), settings)
        return settings

    # --- one pass --------------------------------------------------------------------

    def sweep(self) -> None:
        """Queue the heartbeats that are due, and escalate urgent alerts that are late."""
        from gateway.delivery.escalation import escalate_late_alerts  # it reaches into the pathway's settings

        now = self.clock()
        with self.gateway.transaction() as session:
            due_heartbeats(session, now)
        escalate_late_alerts(self.gateway, now)

    def run_once(self, limit: int = 100) -> int:
        """Claim up to ``limit`` due deliveries, send them, record the outcomes; returns how many."""
        settings = self.settings()
        prepared = self._prepare(self._exchange([], limit, settings))
        results = list(self._pool.map(lambda p: self._attempt(p, settings), prepared))
        self._exchange(results, 0, settings)
        return len(results)

    def _exchange(self, results: Sequence[Result], limit: int, settings: Delivery) -> list[Claimed]:
        """Record ``results`` and claim up to ``limit`` due deliveries in one transaction, so
        a round of sending costs one turn of the write lock; with nothing to record, a read
        first finds whether anything is due at all."""
        now = self.clock()
        if not results and (limit <= 0 or not self._any_due(now)):
            return []
        outcomes = self._outcomes(results, settings, now)
        with self.gateway.transaction() as session:
            if results:
                outcomes.write(session)
            return self._claim(session, limit, settings, now) if limit > 0 else []

    def _any_due(self, now: datetime) -> bool:
        with self.gateway.reading() as session:
            return _ANY_DUE.first(session.connection(), now=now) is not None

    def _claim(self, session: Session, limit: int, settings: Delivery, now: datetime) -> list[Claimed]:
        lease_end = now + timedelta(seconds=settings.lease_seconds)
        connection = session.connection()
        rows = _CLAIMABLE.rows(connection, now=now, limit=limit)
        if not rows:
            return []
        _CLAIM.execute(connection, [{"b_id": r.id, "claimed_by": self.name, "claimed_until": lease_end} for r in rows])
        return [
            Claimed(
                r.id,
                r.subscription_id,
                r.event_number,
                r.event,
                r.recipient,
                r.endpoint,
                r.focus,
                r.patient,
                r.purpose,
                r.acting_for,
                tuple(orjson.loads(r.extra_refs)),
                r.attempts + 1,
                r.next_attempt_at,
                lease_end,
                r.created,
            )
            for r in rows
        ]

    def _prepare(self, claimed: Sequence[Claimed]) -> list[Prepared]:
        """Read what each delivery is about as it is now, filter it for the recipient, build the body."""
        if not claimed:
            return []
        prepared = []
        with self.gateway.reading() as session:
            repo = self.gateway.repository(session)
            subscriptions = {
                row.id: row
                for row in session.execute(
                    select(SUBSCRIPTION.c.id, SUBSCRIPTION.c.event, SUBSCRIPTION.c.status, SUBSCRIPTION.c.content, SUBSCRIPTION.c.events_queued, SUBSCRIPTION.c.owner_client).where(
                        SUBSCRIPTION.c.id.in_({d.subscription_id for d in claimed})
                    )
                )
            }
            for delivery in claimed:
                subscription = subscriptions.get(delivery.subscription_id)
                try:
                    prepared.append(self._prepare_one(session, repo, delivery, subscription))
                    prepared[-1].operator = subscription is not None and subscription.owner_client is None
                except Exception as error:  # noqa: BLE001 - one bad delivery must not stall the rest
                    log.exception("preparing delivery %s failed", delivery.id)
                    prepared.append(Prepared(delivery, retry_reason=f"could not prepare the notification: {error}"))
        return prepared

    def _prepare_one(self, session: Session, repo: Repository, delivery: Claimed, subscription: Any) -> Prepared:
        status, content = (subscription.status, subscription.content) if subscription else ("active", "full-resource")
        if delivery.event in CONTROL_EVENTS:
            # A handshake or heartbeat: the subscription's topic and state, no events.
            topic, since = (subscription.event, subscription.events_queued) if subscription else (delivery.event, 0)
            return self._built(delivery, topic, delivery.event, status, since, [], content, Shown())
        shown = shown_to(
            session, repo, self.policy, event=delivery.event, recipient=delivery.recipient, purpose=delivery.purpose,
            acting_for=delivery.acting_for, focus=delivery.focus, extra_refs=delivery.extra_refs,
        )
        if isinstance(shown, str):
            return Prepared(delivery, drop_reason=shown)
        event = Event(delivery.event_number, delivery.created, delivery.focus, shown.resources)
        return self._built(delivery, delivery.event, "event-notification", status, delivery.event_number, [event], content, shown)

    def _built(
        self, delivery: Claimed, topic: str, kind: str, status: str, since: int, events: list[Event], content: str, shown: Shown
    ) -> Prepared:
        bundle = notification_bundle(
            subscription_id=delivery.subscription_id,
            event=topic,
            kind=kind,
            status=status,
            events_since_start=since,
            at=self.clock(),
            events=events,
            content=content,
            fhir_base=self._fhir_base,
        )
        return Prepared(delivery, serialise(bundle), shown.sent_refs, shown.disclosures)

    # --- sending -----------------------------------------------------------------------

    def _attempt(self, prepared: Prepared, settings: Delivery) -> Result:
        try:
            return self._send(prepared, settings)
        except Exception as error:  # noqa: BLE001 - an outcome must always come back to be recorded
            log.exception("sending delivery %s failed", prepared.delivery.id)
            return self._failed(prepared, settings, f"unexpected error while sending: {error}")

    def _send(self, prepared: Prepared, settings: Delivery) -> Result:
        if prepared.drop_reason is not None:
            return Result(prepared, "dropped", prepared.drop_reason)
        if prepared.retry_reason is not None:
            return self._failed(prepared, settings, prepared.retry_reason, posted=False)
        delivery = prepared.delivery
        if self.clock() + timedelta(seconds=settings.timeout_seconds) >= delivery.claimed_until:
            # Too late to finish inside the lease: another worker may take it over.
            return Result(prepared, "released", "lease ran out before sending")
        # Signing here, in the sending threads, runs in parallel: the signature code
        # releases the interpreter lock.
        signature = self.gateway.signing_key.sign_detached(prepared.body)
        try:
            response = (self._operator_http if prepared.operator else self._http).post(
                delivery.endpoint,
                content=prepared.body,
                headers={
                    "Content-Type": "application/fhir+json",
                    "X-Pathway-Delivery": delivery.id,
                    "X-Pathway-Signature": signature,
                },
                timeout=httpx.Timeout(settings.timeout_seconds, connect=min(settings.timeout_seconds, 5.0)),
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
            return Result(prepared, "dead", f"endpoint {delivery.endpoint} cannot be used: {error}")
        except InternalAddress as error:  # permanent until the name changes: not retried, nothing said about ports
            return Result(prepared, "dead", f"not sent: {error}", endpoint_refused=True)
        except httpx.TimeoutException:
            return self._failed(prepared, settings, f"no answer within {settings.timeout_seconds:g} s")
        except httpx.TransportError as error:
            return self._failed(prepared, settings, f"connection failed: {type(error).__name__}: {error}")
        status = response.status_code
        if 200 <= status < 300:
            return Result(prepared, "delivered", f"HTTP {status}", posted=True)
        answer = f"HTTP {status} from {delivery.endpoint}: {response.text[:_ERROR_BODY_CHARS]}".rstrip(": ")
        if status == 429 or status >= 500:
            return self._failed(prepared, settings, answer, retry_after=retry_after_seconds(response.headers.get("Retry-After")))
        return Result(prepared, "dead", f"refused, not retried: {answer}", posted=True)

    def _failed(self, prepared: Prepared, settings: Delivery, reason: str, *, posted: bool = True, retry_after: float | None = None) -> Result:
        delivery = prepared.delivery
        if settings.max_attempts is not None and delivery.attempts >= settings.max_attempts:
            return Result(prepared, "dead", f"gave up after {delivery.attempts} attempts; last: {reason}", posted=posted)
        if self.clock() >= delivery.created + timedelta(hours=settings.retry_for_hours):
            return Result(prepared, "dead", f"gave up after {settings.retry_for_hours:g} hours ({delivery.attempts} attempts); last: {reason}", posted=posted)
        return Result(prepared, "pending", reason, posted=posted, retry_after=retry_after)

    # --- recording -----------------------------------------------------------------------

    def _outcomes(self, results: Sequence[Result], settings: Delivery, now: datetime) -> _Outcomes:
        """The rows that record ``results``: each delivery's new state, its AuditEvent and
        (when delivered) its ledger rows, and its subscription's health."""
        outcomes = _Outcomes(SubscriptionOutcomes(now, settings))
        for result in results:
            delivery = result.prepared.delivery
            row = {
                "b_id": delivery.id,
                "b_worker": self.name,
                "status": result.status,
                "attempts": delivery.attempts,
                "next_attempt_at": delivery.next_attempt_at,
                "last_error": None if result.status == "delivered" else result.detail,
                "delivered_at": now if result.status == "delivered" else None,
            }
            if result.status == "pending":
                wait = settings.backoff(delivery.attempts, self._rng)
                row["next_attempt_at"] = now + timedelta(seconds=max(wait, result.retry_after or 0.0))
            elif result.status == "released":
                row.update(status="pending", attempts=delivery.attempts - 1)
            outcomes.updates.append(row)
            # Handshakes and heartbeats disclose nothing about anyone: not audited.
            if (result.posted or result.status == "dead") and delivery.event not in CONTROL_EVENTS:
                outcomes.audits.append(self._audit_entry(result))
            if result.status == "delivered":
                outcomes.ledger += result.prepared.disclosures
            outcomes.subscriptions.add(delivery.subscription_id, delivery.event, result.status, delivery.created, result.detail, at_once=result.endpoint_refused)
        return outcomes

    def _audit_entry(self, result: Result) -> tuple[dict[str, Any], str | None, str | None]:
        delivery = result.prepared.delivery
        outcome = {"delivered": "success", "pending": "minor-failure"}.get(result.status, "serious-failure")
        event = audit_event(
            "disclose",
            Actor(DELIVERY_CLIENT_ID, delivery.recipient, delivery.acting_for),
            outcome=outcome,
            detail=f"{delivery.event} delivery {delivery.id} (attempt {delivery.attempts}) to {delivery.endpoint}: {result.detail}",
            purpose=delivery.purpose,
            entities=result.prepared.sent_refs or [delivery.focus],
            patient=delivery.patient,
        )
        return event, delivery.patient, DELIVERY_CLIENT_ID

    # --- in the background -------------------------------------------------------------------

    def start(self) -> None:
        """Send deliveries in a background thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pathway-delivery-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the sends in flight, record them, and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self._pool.shutdown(wait=True)
        if self._own_http:
            self._http.close()
            self._operator_http.close()

    def _run(self) -> None:
        # Sends run in the pool, so one slow receiver holds one pool thread, not the rest.
        # This thread works in rounds: each records the outcomes that came in and claims what
        # is due in one transaction (one turn of the write lock, which the request path's
        # writers wait for), then gathers outcomes until the round is over, or until half the
        # room is free again (a backlog is sent as fast as the pool goes). Idle, it looks for
        # due deliveries with a read every ``idle_sleep``.
        finished: queue.SimpleQueue[Result] = queue.SimpleQueue()
        in_flight = 0
        room = max(64, self.threads * 8)  # queued sends must still fit in a lease
        results: list[Result] = []
        while not self._stop.is_set() or in_flight or results:
            try:
                started = time.monotonic()
                if started - self._last_sweep >= SWEEP_SECONDS:
                    self._last_sweep = started
                    self.sweep()
                settings = self.settings()
                claimed = self._exchange(results, 0 if self._stop.is_set() else room - in_flight, settings)
                results = []  # recorded: never twice, even if preparing the claimed ones fails
                prepared = self._prepare(claimed)
                for item in prepared:
                    self._pool.submit(self._attempt, item, settings).add_done_callback(_deliver_to(finished))
                in_flight += len(prepared)
                results = _gather(finished, until=started + (ROUND_SECONDS if in_flight else self.idle_sleep), enough=room // 2)
                in_flight -= len(results)
            except Exception:  # noqa: BLE001 - e.g. the database is down: log, pause, go on
                log.exception("delivery round failed; retrying")
                self._stop.wait(max(self.idle_sleep, 1.0))


@dataclass
class _Outcomes:
    """What one round records, built before the write lock is taken."""

    subscriptions: SubscriptionOutcomes
    updates: list[dict[str, Any]] = field(default_factory=list)
    audits: list[tuple[dict[str, Any], str | None, str | None]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)

    def write(self, session: Session) -> None:
        session.execute(_RECORD, self.updates)
        self.subscriptions.record(session)
        if self.audits:
            append_many(session, self.audits)
        insert_disclosures(session, self.ledger)


def _deliver_to(finished: "queue.SimpleQueue[Result]") -> Callable[[Any], None]:
    def done(future: Any) -> None:
        finished.put(future.result())

    return done


def _gather(finished: "queue.SimpleQueue[Result]", until: float, enough: int) -> list[Result]:
    """Results as they finish, until ``until`` (a ``time.monotonic()`` value) or until there
    are ``enough``; after ``until``, those finished already."""
    results: list[Result] = []
    while len(results) < enough:
        left = until - time.monotonic()
        try:
            results.append(finished.get(timeout=left) if left > 0 else finished.get_nowait())
        except queue.Empty:
            break
    return results
