"""What the workflow's rules work with inside one write: the caller's transaction, the
pathway settings, and the pathway acting as the HSCP rehab team for what it derives."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import cached_property
from typing import Any

from gateway.auth.tokens import Principal
from gateway.fhir.access import Caller
from gateway.fhir.outcomes import FhirError
from sqlalchemy.orm import Session

from gateway.fhir.service import FhirService, WriteContext
from gateway.pathway.config import PathwayConf, load_pathway_conf
from gateway.pathway.records import acting_key, directory_key, organization_keys
from gateway.store.repository import Repository, Stored, fhir_instant

PATHWAY_CLIENT = "pathway-workflow"


def _pathway_caller(rehab_team_key: str) -> Caller:
    return Caller(Principal(PATHWAY_CLIENT, rehab_team_key, frozenset(), frozenset(), "system", 0), "CAREMGT")


def is_pathway(caller: Caller) -> bool:
    """Whether the caller is the pathway itself deriving a record (no token carries empty scopes)."""
    return caller.principal.client_id == PATHWAY_CLIENT and not caller.principal.scopes


@dataclass
class PathwayContext:
    """One write's view of the pathway."""

    ctx: WriteContext
    conf: PathwayConf
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @classmethod
    def of(cls, ctx: WriteContext) -> "PathwayContext":
        return cls(ctx, load_pathway_conf(ctx.session))

    @classmethod
    def background(cls, session: Session, repo: Repository, service: FhirService) -> "PathwayContext":
        """For scheduled duties: no outside caller, the pathway itself acts as the rehab team."""
        conf = load_pathway_conf(session)
        key = directory_key(repo, conf.rehab_team)
        if key is None:
            raise LookupError(f"Organization/{conf.rehab_team} (rehab_team in pathway.yaml) is not in the directory")
        return cls(WriteContext(session, repo, _pathway_caller(key), service), conf)

    @property
    def repo(self) -> Repository:
        return self.ctx.repo

    @property
    def today(self) -> date:
        return self.now.date()

    @property
    def instant(self) -> str:
        return fhir_instant(self.now)

    def org_key(self, organization_id: str) -> str:
        """The acting identifier of a directory organisation named in pathway.yaml."""
        key = directory_key(self.repo, organization_id)
        if key is None:
            raise FhirError(503, f"the pathway is not configured: Organization/{organization_id} (from pathway.yaml) is not in the directory; run `pathway conf load`", "exception")
        return key

    @cached_property
    def rehab_team_key(self) -> str:
        return self.org_key(self.conf.rehab_team)

    @cached_property
    def rehab_team_ref(self) -> dict[str, str]:
        return {"reference": f"Organization/{self.conf.rehab_team}"}

    @cached_property
    def acting(self) -> WriteContext:
        """A context in the same transaction (and audit entry) where the pathway acts as the rehab team."""
        return WriteContext(self.ctx.session, self.repo, _pathway_caller(self.rehab_team_key), self.ctx.service, self.ctx.written)

    def derive(self, resource: dict[str, Any], if_match: int | None = None) -> Stored:
        """Store a resource the pathway derives, held by the rehab team, with hooks and audit."""
        return self.acting.store(resource, custodian=self.rehab_team_key, if_match=if_match)

    def caller_is(self, reference: dict[str, Any] | None) -> bool:
        """Whether the caller acts for the organisation ``reference`` names."""
        return self.ctx.caller.organization in organization_keys(self.repo, reference)

    def keys_of(self, references: list[dict[str, Any]]) -> list[str]:
        """The acting identifiers of the organisations named (people's references are skipped)."""
        return [key for ref in references if (key := acting_key(self.repo, ref))]
