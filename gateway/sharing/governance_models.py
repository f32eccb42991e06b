"""Tables for information governance run in the console: agreement drafts and their steps,
and one-off disclosures."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.store.models import Base, UTCDateTime


class AgreementDraftRow(Base):
    """A proposed version of an agreement on its way through review and sign-off.

    It becomes a version in ``agreement`` only when every party has signed and its start
    date has come, so the version in force stays in force until then.
    """

    __tablename__ = "agreement_draft"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agreement_id: Mapped[str] = mapped_column(String(100), index=True)
    stage: Mapped[str] = mapped_column(String(20))  # draft | review | signing | signed | active | withdrawn
    body: Mapped[str] = mapped_column(Text)  # DESIGN §6.1 JSON without version and status
    created_by: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    updated: Mapped[datetime] = mapped_column(UTCDateTime())
    activated_version: Mapped[int | None] = mapped_column(Integer)


class AgreementStepRow(Base):
    """One step in an agreement's life: drafted, submitted, approved or returned by a party's
    DPO, signed by its senior officer, activated, suspended, resumed, lapsed."""

    __tablename__ = "agreement_step"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agreement_id: Mapped[str] = mapped_column(String(100))
    draft_id: Mapped[str | None] = mapped_column(String(36))
    version: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(30))
    party: Mapped[str | None] = mapped_column(String(200))  # "system|value"
    by: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    comment: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (Index("ix_agreement_step_agreement", "agreement_id", "at"),)


class OneOffDisclosureRow(Base):
    """A one-off disclosure decided by an IG officer (ICO request form): a police or court
    request, an Adult Support and Protection inquiry. Free text is sealed at rest."""

    __tablename__ = "one_off_disclosure"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    patient: Mapped[str] = mapped_column(String(80), index=True)  # blind index
    requester: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(40))
    lawful_basis: Mapped[str] = mapped_column(String(300))
    necessity: Mapped[str] = mapped_column(Text)  # sealed
    disclosed: Mapped[str] = mapped_column(Text)  # sealed
    decision: Mapped[str] = mapped_column(String(20))  # disclosed | refused
    decided_by: Mapped[str] = mapped_column(String(200))
    recorded_by: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
