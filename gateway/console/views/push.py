"""Push delivery for operators: failing endpoints (last error, subscription status), replaying
dead letters by filter (recipient, event type, time range), and each partner's inbox."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from gateway.console.auth import SignedIn
from gateway.console.directory_names import Directory
from gateway.console.web import Refused, audit_change, audit_view, form_of, gateway_of, officer, one, redirect, render
from gateway.delivery.models import EVENTS
from gateway.delivery.outbox import count_dead, replay_dead
from gateway.delivery.reports import failing_endpoints, inbox, recipients, subscriptions

router = APIRouter()


@router.get("/deliveries/endpoints", response_class=HTMLResponse)
def endpoints(request: Request, notice: str = "", who: SignedIn = Depends(officer)) -> Response:
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        context = {
            "failing": failing_endpoints(session),
            "subscriptions": subscriptions(session),
            "recipients": recipients(session),
            "events": sorted(EVENTS),
            "directory": Directory.load(gateway.repository(session)),
            "notice": notice,
        }
        audit_view(session, request, who)
    return render(request, who, "endpoints.html", context)


def _filters(form: dict[str, list[str]]) -> dict[str, object]:
    """The replay filters of a form: recipient, event, since and until (ISO dates or times, UTC)."""
    event = one(form, "event") or None
    if event is not None and event not in EVENTS:
        raise Refused(422, f"there is no event type {event!r}")
    found: dict[str, object] = {"recipient": one(form, "recipient") or None, "event": event}
    for name in ("since", "until"):
        text = one(form, name)
        try:
            moment = datetime.fromisoformat(text) if text else None
        except ValueError:
            raise Refused(422, f"{name} must be a date or date and time such as 2026-12-05 or 2026-12-05T09:30, not {text!r}") from None
        found[name] = moment.replace(tzinfo=moment.tzinfo or timezone.utc) if moment else None
    return found


@router.post("/deliveries/endpoints/replay", response_class=HTMLResponse)
async def replay_by_filter(request: Request, who: SignedIn = Depends(officer)) -> Response:
    """First step: how many dead letters match, before any is queued again."""
    form = await form_of(request, who)
    filters = _filters(form)
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        matching = count_dead(session, **filters)  # type: ignore[arg-type]
        directory = Directory.load(gateway.repository(session))
        audit_view(session, request, who, detail=f"console replay-by-filter confirmation for {matching} deliveries")
    if not matching:
        raise Refused(422, "no dead deliveries match these filters")
    shown = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in filters.items()}
    return render(request, who, "replay_filter_confirm.html", {"matching": matching, "filters": shown, "directory": directory})


@router.post("/deliveries/endpoints/replay/confirmed")
async def replay_by_filter_confirmed(request: Request, who: SignedIn = Depends(officer)) -> Response:
    form = await form_of(request, who)
    filters = _filters(form)
    with gateway_of(request).transaction() as session:
        count = replay_dead(session, **filters)  # type: ignore[arg-type]
        audit_change(session, who, f"{count} dead deliveries queued again from the console (filters {filters})")
    return redirect("/deliveries/endpoints", notice=f"{count} deliveries queued again.")


@router.get("/deliveries/inbox", response_class=HTMLResponse)
def partner_inbox(request: Request, recipient: str, who: SignedIn = Depends(officer)) -> Response:
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        rows = inbox(session, recipient)
        directory = Directory.load(gateway.repository(session))
        audit_view(session, request, who, detail=f"console inbox of {recipient}")
    return render(request, who, "inbox.html", {"recipient": recipient, "rows": rows, "directory": directory})
