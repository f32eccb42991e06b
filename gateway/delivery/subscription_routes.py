"""HTTP: partners' own ``Subscription`` resources under ``/fhir``, with ``$status`` and ``$events``.

Registered ahead of the generic FHIR routes. A caller sees and changes only its own
organisation's subscriptions; ``$events`` replays numbered events through the access policy
as it stands now, as every delivery is (consent re-checked at send time), and audits them.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.chain import Actor, append_many, audit_event
from gateway.audit.ledger import insert_disclosures
from gateway.deps import base_url, caller, json_body, require_scope
from gateway.delivery import subscriptions as subs
from gateway.delivery.content import Shown, shown_to
from gateway.delivery.models import CONTROL_EVENTS, DeliveryRow, SubscriptionRow
from gateway.delivery.notification import Event, notification_bundle, notification_status
from gateway.fhir.access import Caller
from gateway.fhir.outcomes import FhirError, FhirJSONResponse, fhir_response
from gateway.store.repository import now_utc

router = APIRouter(prefix="/fhir/Subscription", tags=["Subscriptions"], default_response_class=FhirJSONResponse)
MAX_EVENTS = 100  # per $events call


def _gateway(request: Request) -> Any:
    return request.app.state.gateway


def _answer(request: Request, row: SubscriptionRow, status: int = 200) -> Response:
    headers = {"ETag": f'W/"{row.version}"', "Location": f"{base_url(request)}/fhir/Subscription/{row.id}/_history/{row.version}"}
    return fhir_response(subs.as_resource(row), status, headers)


def _audit(session: Session, who: Caller, interaction: str, row: SubscriptionRow, detail: str) -> None:
    actor = Actor(who.principal.client_id, who.organization, None)
    entry = audit_event(interaction, actor, detail=detail, entities=[f"Subscription/{row.id}"], patient=row.patient_filter)
    append_many(session, [(entry, row.patient_filter, who.principal.client_id)])


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def _wanted(request: Request, session: Session, who: Caller, body: Any) -> subs.Wanted:
    wanted = subs.parse_subscription(body)
    gateway = _gateway(request)
    if not gateway.settings.loopback_subscriptions and _loopback(urlsplit(wanted.endpoint).hostname or ""):
        raise FhirError(
            422,
            f"channel.endpoint {wanted.endpoint!r} names the gateway's own host; notifications go to a partner's public "
            "https endpoint (loopback endpoints are for the demo and tests: PATHWAY_LOOPBACK_SUBSCRIPTIONS=1)",
            "value",
            "Subscription.channel.endpoint",
        )
    subs.check_entitled(session, gateway.repository(session), request.app.state.fhir.policy, who, wanted, now_utc().date().isoformat())
    return wanted


@router.post("", status_code=201, summary="Create a Subscription (topic-based, rest-hook)")
def create(request: Request, body: Any = Depends(json_body), who: Caller = Depends(caller)) -> Response:
    require_scope(who.principal, "Subscription", "c")
    with _gateway(request).transaction() as session:
        wanted = _wanted(request, session, who, body)
        row = subs.create(session, who, wanted, now_utc())
        _audit(session, who, "create", row, f"Subscription to {wanted.topic.event} at {wanted.endpoint}")
        return _answer(request, row, 201)


@router.get("", summary="The caller's Subscriptions")
def search(request: Request, who: Caller = Depends(caller)) -> Response:
    require_scope(who.principal, "Subscription", "s")
    with _gateway(request).reading() as session:
        rows = session.scalars(select(SubscriptionRow).where(SubscriptionRow.recipient == who.organization).order_by(SubscriptionRow.created)).all()
        base = base_url(request)
        entries = [{"fullUrl": f"{base}/fhir/Subscription/{r.id}", "resource": subs.as_resource(r), "search": {"mode": "match"}} for r in rows]
    return fhir_response({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})


@router.get("/{subscription_id}", summary="Read one of the caller's Subscriptions")
def read(request: Request, subscription_id: str, who: Caller = Depends(caller)) -> Response:
    require_scope(who.principal, "Subscription", "r")
    with _gateway(request).reading() as session:
        return _answer(request, subs.owned(session, who, subscription_id))


@router.put("/{subscription_id}", summary="Update one of the caller's Subscriptions")
def update(request: Request, subscription_id: str, body: Any = Depends(json_body), who: Caller = Depends(caller)) -> Response:
    require_scope(who.principal, "Subscription", "u")
    if isinstance(body, dict) and body.get("id") not in (None, subscription_id):
        raise FhirError(400, f"the body's id {body.get('id')!r} is not {subscription_id!r}, the id in the URL", "invalid", "Subscription.id")
    with _gateway(request).transaction() as session:
        row = subs.owned(session, who, subscription_id, lock=True)
        wanted = _wanted(request, session, who, body)
        subs.change(session, who, row, wanted, now_utc())
        _audit(session, who, "update", row, f"Subscription to {row.event} at {row.endpoint}, status {row.status}")
        return _answer(request, row)


@router.delete("/{subscription_id}", status_code=204, summary="Delete one of the caller's Subscriptions")
def delete(request: Request, subscription_id: str, who: Caller = Depends(caller)) -> Response:
    require_scope(who.principal, "Subscription", "d")
    with _gateway(request).transaction() as session:
        row = subs.owned(session, who, subscription_id, lock=True)
        _audit(session, who, "delete", row, f"Subscription to {row.event} at {row.endpoint} deleted")
        subs.remove(session, row)
    return Response(status_code=204)


@router.get("/{subscription_id}/$status", summary="The Subscription's status (Backport $status)", operation_id="subscription_status")
@router.post("/{subscription_id}/$status", summary="The Subscription's status (Backport $status)", operation_id="subscription_status_post")
def status(request: Request, subscription_id: str, who: Caller = Depends(caller)) -> Response:
    require_scope(who.principal, "Subscription", "r")
    with _gateway(request).reading() as session:
        row = subs.owned(session, who, subscription_id)
        notice = notification_status(
            subscription_id=row.id, event=row.event, kind="query-status", status=row.status,
            events_since_start=row.events_queued, error=row.last_error if row.status == "error" else None,
        )
    entry = {"fullUrl": f"urn:uuid:{notice['id']}", "resource": notice, "search": {"mode": "match"}}
    return fhir_response({"resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [entry]})


def _number(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise FhirError(400, f"{name} must be a whole number of 1 or more, not {value!r}", "value", name)
    return int(value)


@router.get("/{subscription_id}/$events", summary="Replay a range of the Subscription's events (Backport $events)", operation_id="subscription_events")
@router.post("/{subscription_id}/$events", summary="Replay a range of the Subscription's events (Backport $events)", operation_id="subscription_events_post")
def events(request: Request, subscription_id: str, who: Caller = Depends(caller)) -> Response:
    """Events ``eventsSinceNumber`` to ``eventsUntilNumber`` (at most 100), each shown as the
    recipient may see it now; events it may no longer see are left out."""
    require_scope(who.principal, "Subscription", "r")
    gateway = _gateway(request)
    with gateway.transaction() as session:
        row = subs.owned(session, who, subscription_id)
        until = min(_number(request, "eventsUntilNumber", row.events_queued), row.events_queued)
        since = max(_number(request, "eventsSinceNumber", max(until - MAX_EVENTS + 1, 1)), 1)
        if until - since + 1 > MAX_EVENTS:
            raise FhirError(400, f"ask for at most {MAX_EVENTS} events at a time (eventsSinceNumber to eventsUntilNumber)", "too-costly")
        content = request.query_params.get("content", row.content)
        if content not in subs.CONTENTS:
            raise FhirError(400, f"content must be id-only or full-resource, not {content!r}", "value", "content")
        deliveries = session.scalars(
            select(DeliveryRow)
            .where(DeliveryRow.subscription_id == row.id, DeliveryRow.event_number.between(since, until), DeliveryRow.event.not_in(CONTROL_EVENTS))
            .order_by(DeliveryRow.event_number)
        ).all()
        repo, policy = gateway.repository(session), request.app.state.fhir.policy
        shown: list[Event] = []
        audits, ledger = [], []
        for delivery in deliveries:
            seen = shown_to(
                session, repo, policy, event=delivery.event, recipient=delivery.recipient, purpose=delivery.purpose,
                acting_for=delivery.acting_for, focus=delivery.focus, extra_refs=orjson.loads(delivery.extra_refs),
            )
            if isinstance(seen, str):
                continue
            shown.append(Event(delivery.event_number, delivery.created, delivery.focus, seen.resources))
            audits.append(_disclosure(who, delivery, seen, since, until))
            ledger += seen.disclosures
        if audits:
            append_many(session, audits)
        insert_disclosures(session, ledger if content == "full-resource" else [])
        bundle = notification_bundle(
            subscription_id=row.id, event=row.event, kind="query-event", status=row.status, events_since_start=row.events_queued,
            at=now_utc(), events=shown, content=content, fhir_base=f"{base_url(request)}/fhir",
        )
    return fhir_response(bundle)


def _disclosure(who: Caller, delivery: DeliveryRow, seen: Shown, since: int, until: int) -> tuple[dict[str, Any], str | None, str | None]:
    entry = audit_event(
        "disclose",
        Actor(who.principal.client_id, who.organization, delivery.acting_for),
        detail=f"$events {since}-{until} of Subscription/{delivery.subscription_id}: event {delivery.event_number} ({delivery.event})",
        purpose=delivery.purpose,
        entities=seen.sent_refs or [delivery.focus],
        patient=delivery.patient,
    )
    return entry, delivery.patient, who.principal.client_id
