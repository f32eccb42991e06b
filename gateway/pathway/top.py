"""TOP readings on the pathway: the Treatment Outcomes Profile recorded at the start of
treatment, every three months and at exit, by the recovery service or the facility.

A reading is a QuestionnaireResponse of the TOP Questionnaire (``mappings/codes/top.yaml``)
with ``basedOn`` = the rehab referral or the facility referral. It may be recorded by the
organisation that owns that referral's Task (the HSCP rehab team, or the facility) or by
the community recovery service named in pathway.yaml.
"""

from __future__ import annotations

from typing import Any

from gateway.fhir.outcomes import FhirError
from gateway.pathway import stages
from gateway.pathway.allocation import pathway_task_of
from gateway.pathway.context import PathwayContext
from gateway.pathway.moves import parties, refuse
from mappings.top import read_top, top_form


def is_top_reading(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "QuestionnaireResponse" and resource.get("questionnaire") == top_form().url


def check_top_reading(pc: PathwayContext, response: dict[str, Any]) -> None:
    """Refuse a TOP reading that is malformed or not recorded by a service that treats the person."""
    try:
        read_top(response)
    except ValueError as error:
        raise FhirError(422, f"TOP reading: {error}", "value", "QuestionnaireResponse.item") from None
    task = pathway_task_of(pc, response, "TOP")
    community = pc.conf.community_team
    treats = stages.Party.OWNER in parties(pc, task.resource) or (community is not None and pc.ctx.caller.organization == pc.org_key(community))
    if not treats:
        raise refuse(403, "a TOP reading is recorded by the recovery service or by the service that owns the referral (the rehab team, or the facility)")
    response.setdefault("subject", task.resource["for"])
    response.setdefault("authored", pc.instant)
