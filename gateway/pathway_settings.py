"""The imported ``pathway.yaml`` as its one settings model (:class:`gateway.conf.PathwaySettings`).

The workflow, the delivery worker and the escalation sweep all read it here, parsed and
validated once per imported version (parsing the YAML on every write was nearly half of
a referral's cost).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.conf import PathwaySettings, parse_pathway_settings
from gateway.directory import conf_document
from gateway.store.models import ConfDocumentRow

PATHWAY_YAML = "pathway.yaml"
_NEWEST_DIGEST = (
    select(ConfDocumentRow.sha256).where(ConfDocumentRow.name == PATHWAY_YAML).order_by(ConfDocumentRow.version.desc()).limit(1)
)
_parsed: dict[str, PathwaySettings] = {}


def pathway_settings(session: Session) -> PathwaySettings:
    """The newest imported pathway.yaml; LookupError when none is, ValueError when it is wrong."""
    digest = session.connection().execute(_NEWEST_DIGEST).scalar()
    if digest is None:
        raise LookupError(f"{PATHWAY_YAML} has not been imported; run `pathway conf load`")
    cached = _parsed.get(digest)
    if cached is None:
        cached = parse_pathway_settings(conf_document(session, PATHWAY_YAML))
        _parsed.clear()
        _parsed[digest] = cached
    return cached
