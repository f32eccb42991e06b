"""The CapabilityStatement: exactly what this server supports, derived from the code."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from gateway.auth.scopes import supported_scopes
from gateway.auth.tokens import ASSERTION_ALGORITHMS
from gateway.store.indexing import REFERENCE_PARAMS, TOKEN_PARAMS, URI_PARAMS

# The resource types the FHIR API serves (DESIGN §7), plus those ingest produces.
SUPPORTED_TYPES = (
    "Patient",
    "RelatedPerson",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Condition",
    "Observation",
    "MedicationStatement",
    "MedicationRequest",
    "Encounter",
    "EpisodeOfCare",
    "CarePlan",
    "ServiceRequest",
    "Task",
    "QuestionnaireResponse",
    "Communication",
    "Consent",
    "Flag",
    "RiskAssessment",
    "AllergyIntolerance",
    "MedicationDispense",
    "Provenance",
)
TOKEN_PATH = "/oauth/token"
INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "create", "search-type"]


@lru_cache(maxsize=None)
def _elements(resource_type: str) -> frozenset[str]:
    return frozenset(f.alias or name for name, f in get_fhir_model_class(resource_type).model_fields.items())


def search_params(resource_type: str) -> list[dict[str, str]]:
    """The search parameters that apply to a type (those whose elements it has)."""
    elements = _elements(resource_type)
    params = [{"name": "_lastUpdated", "type": "date"}, {"name": "_count", "type": "number"}]
    for name, sources in REFERENCE_PARAMS.items():
        if elements.intersection(sources) or (name == "patient" and resource_type == "Patient"):
            params.append({"name": name, "type": "reference"})
    params += [{"name": n, "type": "token"} for n, e in TOKEN_PARAMS.items() if e in elements]
    params += [{"name": n, "type": "uri"} for n, e in URI_PARAMS.items() if e in elements]
    return params


@lru_cache(maxsize=None)
def search_param_names(resource_type: str) -> frozenset[str]:
    return frozenset(p["name"] for p in search_params(resource_type))


def security(base: str) -> dict[str, Any]:
    """``rest.security``: SMART Backend Services, with the token URL as SMART's extension says."""
    return {
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
        "description": "SMART Backend Services: client credentials with a private_key_jwt client assertion "
        f"({'/'.join(sorted(ASSERTION_ALGORITHMS))}); SMART v1 and v2 system scopes. Details at {base}/fhir/.well-known/smart-configuration",
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": base + TOKEN_PATH}],
            }
        ],
    }


def smart_configuration(base: str) -> dict[str, Any]:
    """The SMART App Launch 2 discovery document for backend services (only what is true:
    no authorize endpoint, no user or patient launch, no refresh tokens)."""
    return {
        "token_endpoint": base + TOKEN_PATH,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": sorted(ASSERTION_ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        "scopes_supported": supported_scopes(SUPPORTED_TYPES),
        "jwks_uri": f"{base}/.well-known/jwks.json",
    }


def capability_statement(base: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "kind": "instance",
        "software": {"name": "Pathway", "version": "0.1.0"},
        "implementation": {"description": "Pathway information-sharing gateway", "url": f"{base}/fhir"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "security": security(base),
                "resource": [
                    {
                        "type": t,
                        "versioning": "versioned-update",
                        "readHistory": True,
                        "updateCreate": True,
                        "conditionalUpdate": False,
                        "interaction": [{"code": code} for code in INTERACTIONS],
                        "searchParam": search_params(t),
                    }
                    for t in SUPPORTED_TYPES
                ],
                "interaction": [{"code": "transaction"}],
            }
        ],
    }
