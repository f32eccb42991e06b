"""The gateway's long-lived parts, built once per process and shared by requests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.writer import AuditWriter
from gateway.auth.keys import SigningKey, load_signing_key
from gateway.auth.tokens import AccessTokens
from gateway.settings import Settings
from gateway.store.crypto import Keyring, load_keyring
from gateway.store.db import make_engine, migrate, session_factory
from gateway.store.held import HeldSessions
from gateway.store.repository import Repository
from gateway.store.checkpoint import WalCheckpointer
from gateway.store.writelock import WriteLock


@dataclass
class Gateway:
    """Settings, database, keys and token verifier for one gateway process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keyring: Keyring
    signing_key: SigningKey
    tokens: AccessTokens
    write_lock: AbstractContextManager[Any] = field(default_factory=nullcontext)
    checkpointer: WalCheckpointer | None = None
    audit: AuditWriter = field(init=False)

    def __post_init__(self) -> None:
        self.audit = AuditWriter(self.transaction)
        readonly = self.engine.execution_options(pathway_readonly=True)
        self._read_sessions = session_factory(readonly, self.keyring)
        self._held_reads = HeldSessions(
            readonly, self._read_sessions, lambda connection: self._read_sessions(bind=connection), stay_begun=self.engine.dialect.name == "sqlite"
        )
        self._held_writes = HeldSessions(self.engine, self.sessions, lambda connection: self.sessions(bind=connection))

    @classmethod
    def start(cls, settings: Settings, *, run_migrations: bool = True) -> "Gateway":
        engine = make_engine(settings.database_url)
        if run_migrations:
            migrate(engine)
        signing_key = load_signing_key(settings.secrets_dir)
        sqlite = engine.dialect.name == "sqlite"
        database = sqlite_file(engine)
        keyring = load_keyring(settings.secrets_dir)
        return cls(
            settings,
            engine,
            session_factory(engine, keyring),
            keyring,
            signing_key,
            AccessTokens(signing_key, settings.public_url.rstrip("/") if settings.public_url else None),
            WriteLock(database) if sqlite else nullcontext(),
            WalCheckpointer(database) if database else None,
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error.

        On SQLite, writers first queue on the gateway's write lock (see
        ``gateway.store.writelock``), which keeps latency even.
        """
        with self.write_lock, self._held_writes.session() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session: a snapshot without taking the write lock."""
        with self._held_reads.session() as session:
            yield session

    def repository(self, session: Session) -> Repository:
        return Repository(session, self.keyring)

    def close(self) -> None:
        self._held_reads.close()
        self._held_writes.close()
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.engine.dispose()
        if isinstance(self.write_lock, WriteLock):
            self.write_lock.close()


def sqlite_file(engine: Engine) -> Path | None:
    """The database file of a SQLite engine (None for PostgreSQL or an in-memory database)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve()
