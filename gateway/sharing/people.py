"""Who a decision is about, looked up cheaply: identifier -> Patient and Patient -> Consents.

Both lookups run on every consent decision and every consent-filtered read, so their
statements are compiled once (``gateway.store.hot``), and
they read versions, not bodies: the policy opens and parses a person's Patient record and
Consents only when one of their versions differs from what it cached
(``ConsentPolicy.person``). A write in any process changes a version, so no process
answers from a stale entry, as with the decision cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from sqlalchemy import Connection, bindparam, select

from gateway.store.crypto import Keyring
from gateway.store.hot import Hot
from gateway.store.repository import RESOURCE, TOKEN

Value = TypeVar("Value")

_NEWEST_FIRST = (RESOURCE.c.last_updated.desc(), RESOURCE.c.type.desc(), RESOURCE.c.id.desc())
# The newest undeleted Patient holding an identifier (plain or blind-indexed value), the
# one Repository.search("Patient", [("identifier", ...)]) finds first.
_PATIENT_BY_IDENTIFIER = Hot(
    select(RESOURCE.c.id)
    .join(TOKEN, (TOKEN.c.type == RESOURCE.c.type) & (TOKEN.c.id == RESOURCE.c.id))
    .where(
        RESOURCE.c.type == "Patient",
        RESOURCE.c.deleted.is_(False),
        TOKEN.c.param == "identifier",
        TOKEN.c.value.in_([bindparam("plain"), bindparam("blind")]),
    )
    .order_by(*_NEWEST_FIRST)
    .limit(1)
)
_VERSION = Hot(select(RESOURCE.c.version_id).where(RESOURCE.c.type == bindparam("type"), RESOURCE.c.id == bindparam("id")))
# A person's current Consents, newest first, without their bodies.
_CONSENT_VERSIONS = Hot(
    select(RESOURCE.c.id, RESOURCE.c.version_id)
    .where(RESOURCE.c.type == "Consent", RESOURCE.c.patient == bindparam("patient"), RESOURCE.c.deleted.is_(False))
    .order_by(*_NEWEST_FIRST)
)


class Bounded(Generic[Value]):
    """A thread-safe least-recently-used map of at most ``size`` entries."""

    def __init__(self, size: int) -> None:
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Value | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Value) -> Value:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value


def patient_with(connection: Connection, keyring: Keyring, system: str, value: str) -> str | None:
    """``Patient/{id}`` of the newest undeleted Patient with this identifier, if any."""
    pair = f"{system}|{value}"
    found = _PATIENT_BY_IDENTIFIER.scalar(connection, plain=pair, blind=keyring.blind(pair))
    return f"Patient/{found}" if found is not None else None


def current_version(connection: Connection, type_: str, id_: str) -> int | None:
    """The current version of a resource, deleted or not; None when it never existed."""
    return _VERSION.scalar(connection, type=type_, id=id_)


def consent_versions(connection: Connection, patient: str) -> tuple[tuple[str, int], ...]:
    """(id, version) of the person's current Consents, newest first."""
    return tuple((id_, version) for id_, version in _CONSENT_VERSIONS.rows(connection, patient=patient))
