"""Sessions the event loop's thread keeps, so a read or an audit batch on the loop does not
build a session and check a connection out of the pool each time.

Opening an ORM session, beginning it and taking a pooled connection cost ~100 us in
SQLAlchemy, several times the SQLite reads a consent decision makes. Code on the event loop
runs one request's database work at a time (no ``await`` inside a session), so the loop's
thread can keep one session on one connection of its own and reuse it. Other threads, and a
session opened while the held one is in use, get an ordinary one. Whatever the held session
loaded is dropped after each use (nothing is answered from an earlier transaction), and after
an error the session and its connection are thrown away.

``stay_begun`` (SQLite reads): the held session is begun once and never committed. A SQLite
read session issues no BEGIN (``gateway.store.db``: each SELECT sees the latest commit and holds
no snapshot), so beginning and committing it was SQLAlchemy bookkeeping alone (~40 us).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class HeldSessions:
    """``session()``: a transaction on the held session when on an event loop's thread and it
    is free, else on a fresh one from ``fresh``."""

    def __init__(self, engine: Engine, fresh: Callable[[], Session], make: Callable[[Connection], Session], stay_begun: bool = False) -> None:
        self._engine, self._fresh, self._make, self._stay_begun = engine, fresh, make, stay_begun
        self._local = threading.local()
        self._all: list[Connection] = []
        self._lock = threading.Lock()

    def _held(self) -> Session | None:
        if getattr(self._local, "busy", False) or not _on_event_loop():
            return None
        session = getattr(self._local, "session", None)
        if session is None:
            connection = self._engine.connect()
            with self._lock:
                self._all.append(connection)
            session = self._local.session = self._make(connection)
        return session

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        held = self._held()
        if held is None:
            with self._fresh() as session, session.begin():
                yield session
            return
        self._local.busy = True
        try:
            if not self._stay_begun:
                with held.begin():
                    yield held
            else:
                if not held.in_transaction():
                    held.begin()
                yield held
        except BaseException:
            self._discard(held)
            raise
        finally:
            held.expunge_all()
            self._local.busy = False

    def _discard(self, session: Session) -> None:
        self._local.session = None
        connection = session.bind
        session.close()
        if isinstance(connection, Connection):
            with self._lock:
                if connection in self._all:
                    self._all.remove(connection)
            connection.close()

    def close(self) -> None:
        """Close every held connection (when the gateway closes)."""
        with self._lock:
            held, self._all = self._all, []
        for connection in held:
            connection.close()
