"""The residential rehabilitation pathway: stage rules, the workflow hook over the FHIR
service, referrals onward, reviews, contingency alerts, timeliness figures and demo runs."""

from gateway.pathway.metrics import pathway_metrics
from gateway.pathway.overdue import raise_overdue_reviews
from gateway.pathway.routes import router
from gateway.pathway.workflow import PathwayWorkflow

__all__ = ["PathwayWorkflow", "pathway_metrics", "raise_overdue_reviews", "router"]
