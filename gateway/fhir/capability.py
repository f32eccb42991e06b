"""The CapabilityStatement: exactly what this server supports, derived from the code."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from gateway.auth.scopes import supported_scopes
from gateway.auth.tokens import ASSERTION_ALGORITHMS
from gateway.reporting.capability import MEASURE_REPORT_CAPABILITY
from gateway.store.indexing import DATE_PARAMS, PERSON_PARAMS, PERSON_TYPES, REFERENCE_PARAMS, TOKEN_PARAMS, URI_PARAMS
from gateway.store.repository import DIRECTORY_TYPES

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
# The directory is written from conf/ only: partners read and search it.
READ_INTERACTIONS = ["read", "vread", "history-instance", "search-type"]
# Partners' own topic-based Subscriptions (R5 Backport IG on R4; gateway/delivery/subscription_routes.py).
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
SUBSCRIPTION_RESOURCE = {
    "type": "Subscription",
    "supportedProfile": [f"{BACKPORT}/StructureDefinition/backport-subscription"],
    "interaction": [{"code": code} for code in ("read", "create", "update", "delete", "search-type")],
    "operation": [
        {"name": "status", "definition": f"{BACKPORT}/OperationDefinition/backport-subscription-status"},
        {"name": "events", "definition": f"{BACKPORT}/OperationDefinition/backport-subscription-events"},
    ],
}


@lru_cache(maxsize=None)
def _elements(resource_type: str) -> frozenset[str]:
    return frozenset(f.alias or name for name, f in get_fhir_model_class(resource_type).model_fields.items())


CONTROL_PARAMS = [
    {"name": "_id", "type": "token"},
    {"name": "_lastUpdated", "type": "date"},
    {"name": "_count", "type": "number"},
    {"name": "_sort", "type": "special"},
    {"name": "_summary", "type": "special"},
    {"name": "_total", "type": "special"},
    {"name": "_elements", "type": "special"},
]


def search_params(resource_type: str) -> list[dict[str, str]]:
    """The search parameters that apply to a type (those whose elements it has), with their types."""
    elements = _elements(resource_type)
    params = list(CONTROL_PARAMS)
    for name, sources in REFERENCE_PARAMS.items():
        if elements.intersection(sources) or (name == "patient" and resource_type == "Patient"):
            params.append({"name": name, "type": "reference"})
    params += [{"name": n, "type": "token"} for n, e in TOKEN_PARAMS.items() if e in elements]
    params += [{"name": n, "type": "uri"} for n, e in URI_PARAMS.items() if e in elements]
    params += [{"name": n, "type": "date"} for n, paths in DATE_PARAMS.items() if elements.intersection(p.split(".")[0] for p in paths)]
    if resource_type in PERSON_TYPES:
        params += [{"name": n, "type": t} for n, t in PERSON_PARAMS.items()]
    return params


@lru_cache(maxsize=None)
def search_param_types(resource_type: str) -> dict[str, str]:
    """Search parameter name -> FHIR search parameter type, for a type."""
    return {p["name"]: p["type"] for p in search_params(resource_type)}


def search_includes(resource_type: str) -> dict[str, list[str]]:
    """The ``_include`` and ``_revinclude`` values a type takes (every reference parameter)."""
    own = [f"{resource_type}:{n}" for n, t in search_param_types(resource_type).items() if t == "reference"]
    others = [f"{t}:{n}" for t in SUPPORTED_TYPES for n, kind in search_param_types(t).items() if kind == "reference"]
    return {"searchInclude": ["*", *own], "searchRevInclude": others}


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
        "scopes_supported": supported_scopes((*SUPPORTED_TYPES, SUBSCRIPTION_RESOURCE["type"])),
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
                    _resource(t) for t in SUPPORTED_TYPES
                ] + [SUBSCRIPTION_RESOURCE, MEASURE_REPORT_CAPABILITY],
                "interaction": [{"code": "transaction"}],
            }
        ],
    }


def _resource(resource_type: str) -> dict[str, Any]:
    """What this server does with one type: the directory is read-only to partners, a
    Patient's id is never chosen by the client, conditional create and update work."""
    directory = resource_type in DIRECTORY_TYPES
    return {
        "type": resource_type,
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": not directory and resource_type != "Patient",
        "conditionalCreate": not directory,
        "conditionalUpdate": not directory,
        "conditionalDelete": "not-supported",
        "interaction": [{"code": code} for code in (READ_INTERACTIONS if directory else INTERACTIONS)],
        "searchParam": search_params(resource_type),
        **search_includes(resource_type),
    }
