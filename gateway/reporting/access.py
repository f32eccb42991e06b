"""Who may receive the partnership's reports.

Aggregate reports (MeasureReport, the waits CSV) go to the partnership lead, IG officers
and the HSCP that runs the pathway; they hold counts only. Person-level lists (the
completeness report's records) are shown only in the console, to IG officers, and link to
the person's page there, which is itself checked and audited.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.pathway.config import PathwayConf
from gateway.pathway.records import directory_key
from gateway.store.repository import Repository

IG_OFFICER = "ig-officer"
PARTNERSHIP_LEAD = "partnership-lead"
REPORT_ROLES = frozenset({IG_OFFICER, PARTNERSHIP_LEAD})
PERSON_LEVEL_ROLES = frozenset({IG_OFFICER})
NOT_ENTITLED = "the partnership's reports are for the partnership lead, IG officers and the HSCP that runs the pathway; this client is none of them"


def may_receive_reports(repo: Repository, conf: PathwayConf, organization: str, roles: Iterable[str]) -> bool:
    """Whether a caller (its organisation's acting identifier and its roles) may receive
    aggregate reports."""
    return bool(REPORT_ROLES & set(roles)) or organization == directory_key(repo, conf.rehab_team)


def may_see_records(roles: Iterable[str]) -> bool:
    """Whether a console user may see the person-level records behind a report."""
    return bool(PERSON_LEVEL_ROLES & set(roles))
