"""Engine and sessions for SQLite (default) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from gateway.store.checkpoint import WRITER_CHECKPOINT_PAGES
from gateway.store.crypto import SESSION_KEY, Keyring

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    """An engine tuned for the backend: WAL and immediate write locks on SQLite.

    Statement parameters are left out of errors and logs (``hide_parameters``):
    they carry sealed bodies, blind indexes and references to people.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True, hide_parameters=True)
    # Enough pooled connections for the request threads: an overflow connection
    # would be opened (with its pragmas) and closed on every use.
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=40,
        max_overflow=10,
        pool_use_lifo=True,
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA mmap_size=268435456")
        cursor.execute("PRAGMA cache_size=-32768")
        # Checkpoints are the WalCheckpointer's job; this is the backstop (gateway.store.checkpoint).
        cursor.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection):  # type: ignore[no-untyped-def]
        # Writers take the write lock at the start: a deferred transaction that
        # later writes can fail with SQLITE_BUSY instead of waiting its turn.
        # Readers (WAL) need no lock and no transaction: each SELECT sees a
        # committed state, and skipping BEGIN/COMMIT saves two statements a read.
        if not connection.get_execution_options().get("pathway_readonly", False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    command.upgrade(alembic_config(engine), "head")


def session_factory(engine: Engine, keyring: Keyring) -> sessionmaker[Session]:
    """Sessions that carry the keyring, for the code that seals rows outside the
    repository (audit entries, ledger rows; ``gateway.store.crypto.keyring_of``)."""
    return sessionmaker(engine, expire_on_commit=False, info={SESSION_KEY: keyring})
