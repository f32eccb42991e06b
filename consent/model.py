"""The decision request (DESIGN §8) normalised into plain sets, and the vocabulary it uses.

Normalisation happens once per decision and turns the request dict into a
:class:`Request` of frozensets and an epoch-second timestamp, so that evaluating
compiled consents and agreements is set intersection and float comparison.

Conventions beyond DESIGN §8, used by the gateway as well:

- ``patient`` and ``actor`` entries may be ``{"system": "reference", "value": "Patient/123"}``
  (or ``RelatedPerson/123``, ``Organization/abc``): a literal reference that matches
  ``Consent.patient.reference`` or a provision actor's ``reference``.
- The CHI OID counts as the CHI system wherever an identifier is compared.
- ``data`` keys that are missing are unknown ("any"); a key given as ``[]`` states that the data
  has nothing of that kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

CHI_SYSTEM = "https://fhir.nhs.uk/Id/chi-number"
CHI_OID = "urn:oid:2.16.840.1.113883.2.1.3.2.4.16.53"
REFERENCE_SYSTEM = "reference"
DATA_CATEGORY_SYSTEM = "https://pathway.scot/CodeSystem/data-category"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

DATA_CATEGORIES = frozenset({
    "demographics", "contact-details", "substance-use", "prescribing", "physical-health", "mental-health",
    "sexual-health", "domestic-abuse", "justice", "social-care", "child-protection", "pathway-progress",
    "reviews", "carer-details",
})
CONFIDENTIALITY_CODES = frozenset({"N", "R", "V"})
# ETH is the older code for SUD; ETHUD (alcohol) and OPIOIDUD (opioids) are kinds of SUD.
_LABEL_SYNONYMS = {"ETH": "SUD"}
_LABEL_CHILDREN = {"SUD": frozenset({"ETHUD", "OPIOIDUD"})}


class RequestError(ValueError):
    """A decision request that cannot be evaluated; the message says what to fix."""


class Identifier(BaseModel):
    """A FHIR identifier reduced to what matching needs; the CHI OID becomes the CHI system."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str
    value: str

    @field_validator("system")
    @classmethod
    def _canonical_system(cls, system: str) -> str:
        return canonical_system(system)

    @field_validator("system", "value")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must not be blank")
        return text


def canonical_system(system: str) -> str:
    """The identifier system used for comparison (the CHI OID counts as the CHI system)."""
    return CHI_SYSTEM if system == CHI_OID else system


def identifier_key(entry: Any) -> tuple[str, str] | None:
    """``(system, value)`` of an identifier-like dict, or None when it lacks either."""
    if type(entry) is not dict:
        return None
    system, value = entry.get("system"), entry.get("value")
    if type(system) is not str or type(value) is not str:
        return None
    if system == REFERENCE_SYSTEM:
        return system, relative_reference(value)
    return (CHI_SYSTEM if system == CHI_OID else system), value


def relative_reference(reference: str) -> str:
    """``Type/id`` from a literal reference (absolute URL and ``_history`` removed)."""
    if reference.count("/") == 1:
        return reference
    head, marker, _ = reference.partition("/_history/")
    parts = (head if marker else reference).rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else "/".join(parts)


def canonical_label(code: str) -> str:
    """A security label code with synonyms resolved (``ETH`` → ``SUD``)."""
    return _LABEL_SYNONYMS.get(code, code)


def labels_covered_by(code: str) -> frozenset[str]:
    """The data labels a provision or obligation naming ``code`` reaches (``SUD`` reaches ``OPIOIDUD``)."""
    code = canonical_label(code)
    return frozenset({code}) | _LABEL_CHILDREN.get(code, frozenset())


def parse_instant(text: str) -> float:
    """Epoch seconds of an ISO date-time (no zone = UTC) or a date (its start, UTC)."""
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as error:
        raise RequestError(f"'at' must be an ISO 8601 date or date-time, got {text!r}") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass(slots=True)
class Data:
    """What is asked for; None in a field means the request did not say (any)."""

    categories: frozenset[str] | None
    sensitivity: frozenset[str] | None  # security labels other than confidentiality, synonyms resolved
    confidentiality: frozenset[str]
    classes: frozenset[str] | None
    codes: frozenset[tuple[str, str]] | None


@dataclass(slots=True)
class Request:
    """A normalised DESIGN §8 request."""

    patient: set[tuple[str, str]]
    actor: set[tuple[str, str]]
    purpose: str
    data: Data | None  # None: any data
    holder: tuple[str, str] | None
    at: float
    # The organisation the recipient receives through (a portal's, for a person acting through
    # it): agreements are matched against it instead of ``actor``; consents never see it.
    organization: set[tuple[str, str]] | None = None


def _keys(entries: Any, field: str) -> set[tuple[str, str]]:
    if entries is None:
        return set()
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise RequestError(f"'{field}' must be a list of {{system, value}} identifiers")
    keys = set(map(identifier_key, entries))
    keys.discard(None)
    return keys  # type: ignore[return-value]


def _strings(data: dict[str, Any], field: str) -> frozenset[str] | None:
    value = data.get(field)
    if value is None:
        return None
    try:
        if type(value) is not list:
            raise TypeError
        return frozenset(value)
    except TypeError:
        raise RequestError(f"'data.{field}' must be a list of strings") from None


def _security(value: Any) -> tuple[frozenset[str] | None, frozenset[str]]:
    if value is None:
        return None, frozenset()
    if not isinstance(value, list):
        raise RequestError("'data.security' must be a list of {system, code} codings")
    sensitivity: set[str] = set()
    confidentiality: set[str] = set()
    for label in value:
        system, code = (label.get("system"), label.get("code")) if isinstance(label, dict) else (None, label)
        if not isinstance(code, str):
            raise RequestError("'data.security' entries need a code")
        if system == CONFIDENTIALITY_SYSTEM or (system is None and code in CONFIDENTIALITY_CODES):
            confidentiality.add(code)
        else:
            sensitivity.add(_LABEL_SYNONYMS.get(code, code))
    return frozenset(sensitivity), frozenset(confidentiality)


def _codes(value: Any) -> frozenset[tuple[str, str]] | None:
    if value is None:
        return None
    try:
        if type(value) is not list:
            raise TypeError
        return frozenset([(c.get("system") or "", c["code"]) for c in value])
    except (TypeError, KeyError, AttributeError):
        raise RequestError("'data.codes' must be a list of {system, code} codings") from None


def parse_data(data: Any) -> Data | None:
    """The request's ``data`` part; None (absent) means any data."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise RequestError("'data' must be an object with categories, security, classes and codes")
    sensitivity, confidentiality = _security(data.get("security"))
    return Data(_strings(data, "categories"), sensitivity, confidentiality, _strings(data, "classes"), _codes(data.get("codes")))


def parse_request(request: Any, now: float | None = None) -> Request:
    """Normalise a DESIGN §8 request; raises :class:`RequestError` naming the faulty field."""
    if not isinstance(request, dict):
        raise RequestError("the request must be a JSON object")
    purpose = request.get("purpose")
    if not isinstance(purpose, str) or not purpose:
        raise RequestError("purpose required")
    at = request.get("at")
    if at is None:
        moment = now if now is not None else datetime.now(timezone.utc).timestamp()
    elif isinstance(at, str):
        moment = parse_instant(at)
    else:
        raise RequestError("'at' must be an ISO 8601 date-time string")
    holder = request.get("holder")
    holder_key = identifier_key(holder)
    if holder is not None and holder_key is None:
        raise RequestError("'holder' must be a {system, value} identifier")
    return Request(
        patient=_keys(request.get("patient"), "patient"),
        actor=_keys(request.get("actor"), "actor"),
        purpose=purpose,
        data=parse_data(request.get("data")),
        holder=holder_key,
        at=moment,
        organization=_keys(request["organization"], "organization") if request.get("organization") is not None else None,
    )
