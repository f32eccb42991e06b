"""The pathway's settings from ``conf/pathway.yaml`` as imported into the database (DESIGN §10).

Organisations are named by their directory id (``Organization/{id}``), people by their
``PractitionerRole/{id}``; see conf/pathway.yaml for the keys and their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.directory import conf_document
from gateway.fhir.outcomes import FhirError
from gateway.store.models import ConfDocumentRow

PATHWAY_YAML = "pathway.yaml"
_NEWEST_DIGEST = (
    select(ConfDocumentRow.sha256).where(ConfDocumentRow.name == PATHWAY_YAML).order_by(ConfDocumentRow.version.desc()).limit(1)
)
# The settings parsed from the newest imported pathway.yaml, by its SHA-256: every write of
# the workflow needs them, and parsing the YAML each time was nearly half of a referral's cost.
_parsed: dict[str, "PathwayConf"] = {}
_SESSION_KEY = "pathway.conf"


@dataclass(frozen=True)
class PathwayConf:
    rehab_team: str
    community_team: str | None = None
    advocacy_service: str | None = None
    alternative_pathway_agency: str | None = None
    carer_portal: str | None = None
    duty_key_worker: str | None = None
    handover: dict[str, str] = field(default_factory=dict)
    review_interval_weeks: int = 4
    residential_weeks: int = 12
    referral_decision_days: int = 21
    treatment_standard_days: int = 21
    treated_within_standard_target: float = 0.9
    reviews_on_time_target: float = 0.8

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> "PathwayConf":
        """Settings from a parsed pathway.yaml; ValueError naming the key that is wrong."""
        if not document.get("rehab_team"):
            raise ValueError("pathway.yaml: rehab_team (the organisation that owns pathway Tasks) is required")
        interval = int(document.get("review_interval_weeks", 4))
        if interval not in (4, 6):
            raise ValueError(f"pathway.yaml: review_interval_weeks must be 4 or 6, not {interval}")
        limits = document.get("time_limits") or {}
        targets = document.get("targets") or {}
        return cls(
            rehab_team=str(document["rehab_team"]),
            community_team=document.get("community_team"),
            advocacy_service=document.get("advocacy_service"),
            alternative_pathway_agency=document.get("alternative_pathway_agency"),
            carer_portal=document.get("carer_portal"),
            duty_key_worker=document.get("duty_key_worker"),
            handover={str(k): str(v) for k, v in (document.get("handover") or {}).items()},
            review_interval_weeks=interval,
            residential_weeks=int(document.get("residential_weeks", 12)),
            referral_decision_days=int(limits.get("referral_decision_days", 21)),
            treatment_standard_days=int(limits.get("treatment_standard_days", 21)),
            treated_within_standard_target=float(targets.get("treated_within_standard", 0.9)),
            reviews_on_time_target=float(targets.get("reviews_on_time", 0.8)),
        )


def load_pathway_conf(session: Session) -> PathwayConf:
    """The imported pathway settings, looked up once per transaction; a 503 OperationOutcome
    saying what to do when missing or wrong."""
    conf = session.info.get(_SESSION_KEY)
    if conf is None:
        conf = session.info[_SESSION_KEY] = _newest(session)
    return conf


def _newest(session: Session) -> PathwayConf:
    """The newest imported pathway.yaml, parsed once per version."""
    digest = session.connection().execute(_NEWEST_DIGEST).scalar()
    if digest in _parsed:
        return _parsed[digest]
    try:
        conf = PathwayConf.from_document(conf_document(session, PATHWAY_YAML))
    except (LookupError, ValueError) as problem:
        raise FhirError(503, f"the pathway is not configured: {problem}", "exception") from None
    if digest:
        _parsed.clear()
        _parsed[digest] = conf
    return conf
