"""The pathway's settings from ``conf/pathway.yaml`` as imported into the database (DESIGN §10).

Organisations are named by their directory id (``Organization/{id}``), people by their
``PractitionerRole/{id}``; see conf/pathway.yaml for the keys and their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from gateway.conf import PathwaySettings
from gateway.fhir.outcomes import FhirError
from gateway.pathway_settings import pathway_settings

_SESSION_KEY = "pathway.conf"
# The flat view of the newest validated settings object (cached per imported version).
_view: list[tuple[PathwaySettings, "PathwayConf"]] = []


@dataclass(frozen=True)
class PathwayConf:
    """The workflow's flat view of :class:`gateway.conf.PathwaySettings` (validated there)."""

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
    def from_settings(cls, settings: PathwaySettings) -> "PathwayConf":
        """The view of validated settings."""
        return cls(
            rehab_team=settings.rehab_team,
            community_team=settings.community_team,
            advocacy_service=settings.advocacy_service,
            alternative_pathway_agency=settings.alternative_pathway_agency,
            carer_portal=settings.carer_portal,
            duty_key_worker=settings.duty_key_worker,
            handover=dict(settings.handover),
            review_interval_weeks=settings.review_interval_weeks,
            residential_weeks=settings.residential_weeks,
            referral_decision_days=settings.time_limits.referral_decision_days,
            treatment_standard_days=settings.time_limits.treatment_standard_days,
            treated_within_standard_target=settings.targets.treated_within_standard,
            reviews_on_time_target=settings.targets.reviews_on_time,
        )


def load_pathway_conf(session: Session) -> PathwayConf:
    """The imported pathway settings, looked up once per transaction; a 503 OperationOutcome
    saying what to do when missing or wrong."""
    conf = session.info.get(_SESSION_KEY)
    if conf is None:
        try:
            settings = pathway_settings(session)
        except (LookupError, ValueError) as problem:
            raise FhirError(503, f"the pathway is not configured: {problem}", "exception") from None
        cached = _view[0] if _view else None
        if cached is None or cached[0] is not settings:
            cached = (settings, PathwayConf.from_settings(settings))
            _view[:] = [cached]
        conf = cached[1]
        session.info[_SESSION_KEY] = conf
    return conf
