"""Database tables. Alembic migrations in ``migrations/`` create them; keep both in step."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class _ResourceColumns:
    """Columns shared by the current version of a resource and its history."""

    type: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    patient: Mapped[str | None] = mapped_column(String(80))
    custodian: Mapped[str] = mapped_column(String(200))
    security: Mapped[str] = mapped_column(String(200), default="")
    categories: Mapped[str] = mapped_column(String(400), default="")
    key_id: Mapped[str | None] = mapped_column(String(40))
    body: Mapped[bytes] = mapped_column(LargeBinary)


class ResourceRow(_ResourceColumns, Base):
    """The current version of each resource (deleted ones stay, flagged)."""

    __tablename__ = "resource"
    __table_args__ = (
        Index("ix_resource_type_updated", "type", "last_updated"),
        Index("ix_resource_patient_type_updated", "patient", "type", "last_updated"),
    )


class ResourceVersionRow(_ResourceColumns, Base):
    """Every version ever written, for vread and _history."""

    __tablename__ = "resource_version"
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class SearchTokenRow(Base):
    """One searchable value of the current version of a resource.

    Identifier values are stored as keyed hashes (a blind index), so the index
    never holds a CHI number in clear.
    """

    __tablename__ = "search_token"
    type: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    param: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(300), primary_key=True)
    __table_args__ = (Index("ix_search_token_lookup", "type", "param", "value", "id"),)


class ClientRow(Base):
    """A partner system allowed to ask for tokens."""

    __tablename__ = "client"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    organization: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="system")
    scopes: Mapped[str] = mapped_column(Text)
    roles: Mapped[str] = mapped_column(String(200), default="")
    jwks: Mapped[str] = mapped_column(Text, default='{"keys": []}')
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())


class UsedAssertionRow(Base):
    """A client assertion ``jti`` already spent; kept until the assertion expires."""

    __tablename__ = "used_assertion"
    client_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class AuditRow(Base):
    """One AuditEvent, chained to the one before by SHA-256."""

    __tablename__ = "audit_event"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recorded: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    patient: Mapped[str | None] = mapped_column(String(80), index=True)
    client_id: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The chain head: one row, locked by each append so appends serialise."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class AuditSealRow(Base):
    """A chain head signed by the gateway key, verifiable with the public key alone."""

    __tablename__ = "audit_seal"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    jws: Mapped[str] = mapped_column(Text)


class AgreementRow(Base):
    """One version of an information-sharing agreement."""

    __tablename__ = "agreement"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    loaded: Mapped[datetime] = mapped_column(UTCDateTime())
    approved_by: Mapped[str | None] = mapped_column(String(200))


class ConfDocumentRow(Base):
    """A version of a configuration document (partners, pathway) as last imported."""

    __tablename__ = "conf_document"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    loaded: Mapped[datetime] = mapped_column(UTCDateTime())


class DisclosureRow(Base):
    """One disclosure of a person's data to another party: the ledger IG officers answer from."""

    __tablename__ = "disclosure"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    patient: Mapped[str] = mapped_column(String(80), index=True)
    recipient: Mapped[str] = mapped_column(String(200))
    acting_for: Mapped[str | None] = mapped_column(String(100))
    client_id: Mapped[str | None] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(20))
    resources: Mapped[str] = mapped_column(Text)
    agreements: Mapped[str] = mapped_column(Text, default="[]")
    consents: Mapped[str] = mapped_column(Text, default="[]")
    break_glass: Mapped[str | None] = mapped_column(String(64))
    one_off: Mapped[str | None] = mapped_column(String(36))  # a one-off disclosure's id


class BreakGlassRow(Base):
    """A time-boxed emergency override, queued for information-governance review."""

    __tablename__ = "break_glass"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(100), index=True)
    organization: Mapped[str] = mapped_column(String(200))
    user: Mapped[str] = mapped_column(String(200))
    patient: Mapped[str] = mapped_column(String(80), index=True)
    basis: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    started: Mapped[datetime] = mapped_column(UTCDateTime())
    ends: Mapped[datetime] = mapped_column(UTCDateTime())
    review_status: Mapped[str] = mapped_column(String(20), default="pending")
    reviewer: Mapped[str | None] = mapped_column(String(200))
    review_note: Mapped[str | None] = mapped_column(Text)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class QuarantineRow(Base):
    """A source record that could not be read or mapped, kept for correction."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(20), index=True)
    agent: Mapped[str] = mapped_column(String(200), index=True)
    location: Mapped[str] = mapped_column(String(400))
    reason: Mapped[str] = mapped_column(Text)
    record: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_id: Mapped[str | None] = mapped_column(String(40))
    received: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(20), default="open")
    resolved: Mapped[datetime | None] = mapped_column(UTCDateTime())


class MatchReviewRow(Base):
    """A possible match between people that a person must decide, never merged automatically."""

    __tablename__ = "match_review"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(20))
    agent: Mapped[str] = mapped_column(String(200))
    detail: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(40))
    received: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(20), default="open")
