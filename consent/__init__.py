"""Pathway's consent engine: pure decisions over agreements and FHIR Consents, and redaction.

No web, no database, no clock except the request's ``at``. See DESIGN §6 and §8.
"""

from consent.agreements import Agreement, current_versions, parse_agreement
from consent.decide import agreements_in_force, decide, decide_many
from consent.expiry import until_epoch
from consent.model import Identifier
from consent.redact import Redaction, redact

__all__ = [
    "Agreement",
    "Identifier",
    "Redaction",
    "agreements_in_force",
    "current_versions",
    "decide",
    "decide_many",
    "parse_agreement",
    "redact",
    "until_epoch",
]
