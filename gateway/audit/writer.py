"""Group commit for the audit trail of reads.

A read must not be answered before its AuditEvent is committed, but giving
every read its own write transaction would make the single chain head a
bottleneck. Reads running on the event loop queue their entries here and
await; one flush, scheduled behind the requests already in hand, commits
everything queued in a single transaction and wakes them. Under load the
batches grow, so the cost per read falls as the rate rises. No threads are
involved, so no thread hand-offs either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy.orm import Session

from gateway.audit.chain import append_many
from gateway.audit.ledger import insert_disclosures

_Entry = tuple[dict[str, Any], str | None, str | None, list[dict[str, Any]], "asyncio.Future[None]"]


class AuditUnavailable(RuntimeError):
    """The audit entry could not be committed, so the access must not go ahead."""


class AuditWriter:
    """Commits queued audit entries (and their disclosure-ledger rows) in batches."""

    def __init__(self, transaction: Callable[[], AbstractContextManager[Session]]) -> None:
        self._transaction = transaction
        self._pending: list[_Entry] = []
        self._scheduled = False

    async def record(
        self,
        event: dict[str, Any],
        *,
        patient: str | None = None,
        client_id: str | None = None,
        disclosures: list[dict[str, Any]] = (),  # type: ignore[assignment]
    ) -> None:
        """Queue an entry and wait until it is committed; raises AuditUnavailable if it is not."""
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[None] = loop.create_future()
        self._pending.append((event, patient, client_id, list(disclosures), committed))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        await committed

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        try:
            with self._transaction() as session:
                append_many(session, [(event, patient, client) for event, patient, client, _, _ in batch])
                insert_disclosures(session, [row for *_, rows, _ in batch for row in rows])
        except Exception as exc:  # noqa: BLE001 - every waiting reader is told, none is answered
            failure = AuditUnavailable(f"the audit trail could not be written: {exc}")
            for *_, committed in batch:
                if not committed.done():
                    committed.set_exception(failure)
            return
        for *_, committed in batch:
            if not committed.done():
                committed.set_result(None)
