"""The gateway's long-lived parts, built once per process and shared by requests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.auth.keys import SigningKey, load_signing_key
from gateway.auth.tokens import AccessTokens
from gateway.settings import Settings
from gateway.store.crypto import Keyring, load_keyring
from gateway.store.db import make_engine, migrate, session_factory
from gateway.store.repository import Repository


@dataclass
class Gateway:
    """Settings, database, keys and token verifier for one gateway process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keyring: Keyring
    signing_key: SigningKey
    tokens: AccessTokens
    extensions: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: Settings, *, run_migrations: bool = True) -> "Gateway":
        engine = make_engine(settings.database_url)
        if run_migrations:
            migrate(engine)
        signing_key = load_signing_key(settings.secrets_dir)
        return cls(
            settings,
            engine,
            session_factory(engine),
            load_keyring(settings.secrets_dir),
            signing_key,
            AccessTokens(signing_key),
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self.sessions() as session, session.begin():
            yield session

    def repository(self, session: Session) -> Repository:
        return Repository(session, self.keyring)

    def close(self) -> None:
        self.engine.dispose()
