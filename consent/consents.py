"""Which of a person's FHIR Consents count for a request, and their compiled provisions.

A Consent counts when its ``status`` is ``active``, its scope (when stated) is
``patient-privacy``, its ``patient`` is the request's patient (by ``Patient/id`` reference or
an identifier; the CHI OID counts as CHI) and ``at`` lies within its root ``provision.period``.

Compiled consents are cached per dict object (a strong reference is kept, so the object's id
cannot be reused while cached). Treat Consent dicts as immutable: copy one before changing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from consent._cache import IdentityCache
from consent.expiry import boundary_list
from consent.model import REFERENCE_SYSTEM, identifier_key, relative_reference
from consent.provisions import ConsentFormatError, Provision, compile_provision

PRIVACY_SCOPE = "patient-privacy"


@dataclass(slots=True)
class CompiledConsent:
    ref: str  # "Consent/{id}"
    active: bool  # status active and a patient-privacy scope
    patient: frozenset[tuple[str, str]]
    root: Provision | None
    period: tuple[float, float] | None  # the root provision's: the consent counts only within it
    error: str | None  # why the provisions cannot be evaluated
    not_applicable: str = field(init=False)  # the reason text, built once
    boundaries: tuple[float, ...] = field(init=False)  # when any period in it starts or ends, sorted

    def __post_init__(self) -> None:
        self.not_applicable = f"{self.ref} does not apply to this request"
        self.boundaries = boundary_list(self.root.period_bounds()) if self.root is not None else ()


def _patient_keys(consent: dict[str, Any]) -> frozenset[tuple[str, str]]:
    patient = consent.get("patient")
    if not isinstance(patient, dict):
        return frozenset()
    keys = set()
    identifier = identifier_key(patient.get("identifier"))
    if identifier is not None:
        keys.add(identifier)
    if isinstance(patient.get("reference"), str):
        keys.add((REFERENCE_SYSTEM, relative_reference(patient["reference"])))
    return frozenset(keys)


def _is_privacy_consent(consent: dict[str, Any]) -> bool:
    scope = consent.get("scope")
    codes = [c.get("code") for c in scope.get("coding") or []] if isinstance(scope, dict) else []
    return not codes or PRIVACY_SCOPE in codes


def compile_consent(consent: dict[str, Any]) -> CompiledConsent:
    """A Consent dict compiled for evaluation; a malformed one carries its ``error``."""
    ref = f"Consent/{consent.get('id', '?')}"
    active = consent.get("status") == "active" and _is_privacy_consent(consent)
    contained = {r["id"]: r for r in consent.get("contained") or [] if isinstance(r, dict) and "id" in r}
    root, period, error = None, None, None
    try:
        if consent.get("provision") is not None:
            root = compile_provision(consent["provision"], ref, "provision", contained)
            period = root.period
    except ConsentFormatError as problem:
        error = str(problem)
    return CompiledConsent(ref, active, _patient_keys(consent), root, period, error)


compiled: IdentityCache[dict[str, Any], CompiledConsent] = IdentityCache(compile_consent)
"""The cached compilation of a Consent dict."""
