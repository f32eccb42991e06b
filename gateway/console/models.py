"""Tables for the console: who may sign in, their open sessions, and failed sign-ins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.store.models import Base, UTCDateTime


class ConsoleAccountRow(Base):
    """A console user: an IG officer or a partnership lead.

    ``password_hash`` is empty for accounts that sign in through an identity
    provider only. ``client_id`` is the registered client the console acts as
    when this user writes FHIR resources (so the FHIR service's checks apply).
    """

    __tablename__ = "console_account"
    username: Mapped[str] = mapped_column(String(100), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    organization: Mapped[str] = mapped_column(String(200))  # "system|value"
    roles: Mapped[str] = mapped_column(String(200))  # space-separated
    client_id: Mapped[str | None] = mapped_column(String(100))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())


class ConsoleSessionRow(Base):
    """A signed-in browser session; only a hash of the cookie's token is kept."""

    __tablename__ = "console_session"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(100), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    expires: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ConsoleSignInThrottleRow(Base):
    """A failed sign-in, or a lockout it caused, for one account or one client address
    (``key`` is ``account:{username}`` or ``address:{ip}``). Kept in the database so that
    every serving process counts the same failures; rows older than the window go."""

    __tablename__ = "console_sign_in_throttle"
    __table_args__ = (Index("ix_console_sign_in_throttle_key_at", "key", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(10))  # "failure" or "lockout"
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
