"""``pathway deliveries``: look at the outbox, replay dead letters, run a sender process."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime, timezone
from typing import Any

from gateway.cli_support import open_gateway, print_json
from gateway.delivery.models import EVENTS, STATUSES
from gateway.delivery.outbox import ReplayRefused, count_dead, listing, replay, replay_dead

_COLUMNS = ("id", "event", "recipient", "status", "attempts", "next_attempt_at", "last_error")


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [[str(row[c] if row[c] is not None else "") for c in _COLUMNS] for row in rows]
    widths = [max([len(c)] + [min(len(r[i]), 60) for r in cells]) for i, c in enumerate(_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths))]
    lines += ["  ".join(v[:60].ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    gateway = open_gateway()
    try:
        with gateway.reading() as session:
            rows = listing(session, args.status, args.limit)
    finally:
        gateway.close()
    if args.json:
        print_json(rows)
    else:
        print(_table(rows) if rows else "no deliveries")
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _instant(text: str) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date-time (e.g. 2026-12-05 or 2026-12-05T09:30)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def cmd_replay(args: argparse.Namespace) -> int:
    filters = {"recipient": args.recipient, "event": args.event, "since": args.since, "until": args.until}
    if bool(args.id) == bool(args.dead):
        print("give either a delivery ID or --dead", file=sys.stderr)
        return 2
    if args.id and any(filters.values()):
        print("--recipient, --event, --since and --until choose among dead letters (with --dead)", file=sys.stderr)
        return 2
    gateway = open_gateway()
    try:
        if args.id:
            with gateway.transaction() as session:
                replay(session, args.id)
            print(f"delivery {args.id} queued again")
            return 0
        with gateway.reading() as session:
            dead = count_dead(session, **filters)
        if dead == 0:
            print("no dead deliveries")
            return 0
        if not args.yes and not _confirm(f"{dead} dead deliveries will be queued again. Go on?"):
            print(f"{dead} dead deliveries left as they are (use --yes to replay without asking)")
            return 1
        with gateway.transaction() as session:
            replayed = replay_dead(session, **filters)
        print(f"{replayed} dead deliveries queued again")
        return 0
    except ReplayRefused as refusal:
        print(str(refusal), file=sys.stderr)
        return 2
    finally:
        gateway.close()


def cmd_work(args: argparse.Namespace) -> int:
    """Send deliveries until SIGINT or SIGTERM: a sender process beside ``pathway serve``
    (which sends too); any number may run, as leases keep them from sending the same one."""
    from gateway.app import fhir_service
    from gateway.delivery.worker import DeliveryWorker
    from gateway.ops import configure_logging

    configure_logging()
    gateway = open_gateway()
    worker = DeliveryWorker(gateway, fhir_service(gateway).policy, threads=args.threads)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    print(f"delivery worker {worker.name} sending with {args.threads} threads", file=sys.stderr, flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        worker.close()
        gateway.close()
    return 0


def add_commands(commands: Any) -> None:
    """Add ``deliveries list``, ``replay`` and ``work`` to the ``pathway`` subcommands."""
    deliveries = commands.add_parser("deliveries", help="push deliveries (the outbox)").add_subparsers(
        dest="deliveries_command", required=True
    )
    show = deliveries.add_parser("list", help="the newest deliveries")
    show.add_argument("--status", choices=STATUSES)
    show.add_argument("--limit", type=int, default=100)
    show.add_argument("--json", action="store_true", help="JSON instead of a table")
    show.set_defaults(run=cmd_list)
    again = deliveries.add_parser("replay", help="queue a finished delivery, or all dead ones, again")
    again.add_argument("id", nargs="?", help="the delivery id (its X-Pathway-Delivery key)")
    again.add_argument("--dead", action="store_true", help="replay every dead-lettered delivery")
    again.add_argument("--yes", action="store_true", help="do not ask before replaying")
    again.add_argument("--recipient", help="with --dead: only those to this organisation (system|value)")
    again.add_argument("--event", choices=sorted(EVENTS), help="with --dead: only this event type")
    again.add_argument("--since", type=_instant, help="with --dead: only those queued at or after this time (ISO, UTC)")
    again.add_argument("--until", type=_instant, help="with --dead: only those queued before this time (ISO, UTC)")
    again.set_defaults(run=cmd_replay)
    work = deliveries.add_parser("work", help="send deliveries until interrupted (an extra sender process)")
    work.add_argument("--threads", type=int, default=8, help="concurrent sends")
    work.set_defaults(run=cmd_work)
