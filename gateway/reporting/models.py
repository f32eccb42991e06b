"""The partnership lead's sign-off of a quarter's reports, made after seeing completeness."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.store.models import Base, UTCDateTime


class ReportSignOffRow(Base):
    """A quarter confirmed by a partnership lead, with the completeness report it was made on
    (its digest and counts); a later sign-off of the same quarter supersedes it."""

    __tablename__ = "report_sign_off"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    quarter: Mapped[str] = mapped_column(String(7), index=True)  # 2026Q3
    confirmed_by: Mapped[str] = mapped_column(String(100))  # console username
    organization: Mapped[str] = mapped_column(String(200))  # "system|value"
    confirmed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completeness_digest: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(Integer)
    complete: Mapped[int] = mapped_column(Integer)
