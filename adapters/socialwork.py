"""Social-work case exports (DESIGN §5.2): one JSON case record per person.

Input is a JSON array, a single JSON object, or JSON Lines. Each case becomes
the person's Patient, their carers (RelatedPerson, with whether they wish to
be involved in reviews), a RiskAssessment per risk, an Observation per
assessment, their justice involvement, and — when the case carries a rehab
referral — a ServiceRequest in the pathway's referral shape, which opens the
pathway (Task, EpisodeOfCare, CarePlan with goals and contingency plan) when
the gateway stores it. Everything carries the category social-care.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from adapters.common import IdScheme, IngestError, Mapped, Quarantined, RecordProblem, birth_date, checked, finish, parse_date
from adapters.identity import PatientIndex, checked_chi, existing_by_chi
from mappings.codes import relationship_concept
from mappings.identifiers import CHI_SYSTEM, EXTENSION_BASE, REFERRAL_SYSTEM, person_number, source_system

SOURCE = "socialwork"
RISK_SYSTEM = "https://pathway.scot/CodeSystem/risk-type"
ASSESSMENT_SYSTEM = "https://pathway.scot/CodeSystem/social-work-assessment"
SUBSTANCE_SYSTEM = "https://pathway.scot/CodeSystem/substance"
FINDING_SYSTEM = "https://pathway.scot/CodeSystem/social-work-finding"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
RISK_TYPES = ("domestic-abuse", "adult-protection", "child-protection", "mappa", "overdose", "self-harm")
ASSESSMENT_TYPES = ("rehab-readiness", "adult-support-protection", "carer", "other")
SUBSTANCES = ("alcohol", "opioids", "benzodiazepines", "cocaine", "cannabis", "other")
LEVELS = {"low": "low", "medium": "moderate", "high": "high"}
SEXES = {"male": "male", "female": "female", "other": "other", "unknown": "unknown"}


def records(raw: bytes) -> Iterator[tuple[str, Any]]:
    """(location, decoded case) for each case in a JSON document or JSON Lines file."""
    text = raw.lstrip(b"\xef\xbb\xbf").strip()
    if not text:
        raise IngestError("the social-work export is empty")
    if text[:1] in (b"[", b"{"):
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, list):
            yield from ((f"case[{i}]", case) for i, case in enumerate(document))
            return
        if isinstance(document, dict):
            yield "case[0]", document
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield f"line {number}", orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield f"line {number}", RecordProblem(f"not JSON: {exc}")


def _text(case: dict[str, Any], key: str, what: str) -> str:
    value = case.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RecordProblem(f"{what} ({key}) is missing")
    return value.strip()


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise RecordProblem(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _patient(case: dict[str, Any], case_id: str, ids: IdScheme, index: PatientIndex | None) -> dict[str, Any]:
    names = case.get("names") or {}
    given, family = names.get("given") or [], names.get("family")
    if not family or not isinstance(given, list):
        raise RecordProblem("names.family and names.given are required")
    born = birth_date(_text(case, "birth_date", "birth date"), "birth_date")
    gender = SEXES.get(str(case.get("sex", "unknown")))
    if gender is None:
        raise RecordProblem(f"sex {case.get('sex')!r} is not male, female, other or unknown")
    chi = checked_chi(person_number(_text(case, "chi", "CHI number")), born, gender)
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [
            {"system": CHI_SYSTEM, "value": chi},
            {"system": source_system(SOURCE, "case-id"), "value": case_id},
        ],
        "name": [{"use": "official", "family": family, "given": given}],
        "gender": gender,
        "birthDate": born,
    }
    address = case.get("address") or {}
    if address:
        patient["address"] = [{"use": "home", "line": address.get("lines", []), "city": address.get("town"), "postalCode": address.get("postcode")}]
    if case.get("phone"):
        patient["telecom"] = [{"system": "phone", "value": case["phone"]}]
    mapped = finish(patient, ids, SOURCE, case_id)
    mapped["id"] = existing_by_chi(index, chi) or ids.person(chi)
    return mapped


def _carer(carer: dict[str, Any], case_id: str, patient_ref: str, ids: IdScheme) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "patient": {"reference": patient_ref},
        "name": [{"text": str(carer.get("name", "")).strip() or "unnamed carer"}],
        "relationship": [relationship_concept(str(carer.get("relationship", "")))],
        "extension": [{"url": EXTENSION_BASE + "involve-in-reviews", "valueBoolean": bool(carer.get("involve_in_reviews"))}],
        "identifier": [{"system": source_system(SOURCE, "carer-id"), "value": f"{case_id}/{carer.get('id')}"}],
    }
    if carer.get("phone"):
        resource["telecom"] = [{"system": "phone", "value": carer["phone"]}]
    return finish(resource, ids, SOURCE, case_id, "carer", carer.get("id"))


def _risk(risk: dict[str, Any], index: int, case_id: str, patient_ref: str, ids: IdScheme) -> dict[str, Any]:
    kind = _choice(risk.get("type"), RISK_TYPES, "risk type")
    level = _choice(risk.get("level"), tuple(LEVELS), "risk level")
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": patient_ref},
        "code": {"coding": [{"system": RISK_SYSTEM, "code": kind}]},
        "prediction": [{"qualitativeRisk": {"coding": [{"system": RISK_PROBABILITY, "code": LEVELS[level]}], "text": level}}],
    }
    if risk.get("noted"):
        resource["occurrenceDateTime"] = parse_date(risk["noted"], "risk noted date")
    if risk.get("detail"):
        resource["note"] = [{"text": str(risk["detail"])}]
    return finish(resource, ids, SOURCE, case_id, "risk", index)


def _assessment(assessment: dict[str, Any], case_id: str, patient_ref: str, ids: IdScheme) -> dict[str, Any]:
    kind = _choice(assessment.get("type"), ASSESSMENT_TYPES, "assessment type")
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": ASSESSMENT_SYSTEM, "code": kind}]},
        "subject": {"reference": patient_ref},
    }
    if assessment.get("date"):
        resource["effectiveDateTime"] = parse_date(assessment["date"], "assessment date")
    readiness = assessment.get("readiness_to_change")
    if readiness is not None:
        if not isinstance(readiness, int) or not 1 <= readiness <= 5:
            raise RecordProblem(f"readiness_to_change {readiness!r} is not 1 to 5")
        resource["valueInteger"] = readiness
    if assessment.get("outcome"):
        resource["note"] = [{"text": str(assessment["outcome"])}]
    return finish(resource, ids, SOURCE, case_id, "assessment", assessment.get("id"))


def _justice(justice: dict[str, Any], case_id: str, patient_ref: str, ids: IdScheme) -> dict[str, Any]:
    components = [
        {"code": {"coding": [{"system": FINDING_SYSTEM, "code": key.replace("_", "-")}]}, "valueBoolean": bool(justice[key])}
        for key in ("community_justice", "mappa")
        if key in justice
    ]
    if justice.get("outstanding_trials"):
        components.append({"code": {"coding": [{"system": FINDING_SYSTEM, "code": "outstanding-trials"}]}, "valueString": str(justice["outstanding_trials"])})
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": FINDING_SYSTEM, "code": "justice-involvement"}]},
        "subject": {"reference": patient_ref},
        "component": components,
    }
    return finish(resource, ids, SOURCE, case_id, "justice")


def _referral(referral: dict[str, Any], case_id: str, patient_ref: str, worker: dict[str, Any] | None, ids: IdScheme) -> dict[str, Any]:
    substances = referral.get("substances") or []
    for substance in substances:
        _choice(substance, SUBSTANCES, "substance")
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": REFERRAL_SYSTEM, "value": f"SW-{case_id}-{referral.get('id')}"}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": "https://pathway.scot/CodeSystem/request-category", "code": "rehab-referral"}]}],
        "code": {"text": "Residential rehabilitation pathway referral"},
        "subject": {"reference": patient_ref},
        "reasonCode": [{"coding": [{"system": SUBSTANCE_SYSTEM, "code": s}]} for s in substances],
        "extension": [{"url": EXTENSION_BASE + "goal", "valueString": str(g)} for g in referral.get("goals", [])]
        + ([{"url": EXTENSION_BASE + "contingency-plan", "valueString": str(referral["contingency_plan"])}] if referral.get("contingency_plan") else [])
        + [{"url": EXTENSION_BASE + "detox-required", "valueBoolean": bool(referral.get("detox_required"))}]
        + [{"url": EXTENSION_BASE + "preferred-facility", "valueString": str(f)} for f in referral.get("preferred_facilities", [])],
    }
    if referral.get("date"):
        request["authoredOn"] = parse_date(referral["date"], "referral date")
    if worker:
        request["requester"] = worker
    if referral.get("reason"):
        request["note"] = [{"text": str(referral["reason"])}]
    return finish(request, ids, SOURCE, case_id, "referral", referral.get("id"))


def _worker(worker: dict[str, Any]) -> dict[str, Any]:
    """A reference (by identifier) to the social worker; directory entries come from ``conf/``."""
    return {"identifier": {"system": source_system(SOURCE, "worker-id"), "value": str(worker["id"])}, "display": str(worker.get("name") or worker["id"])}


def map_case(case: Any, ids: IdScheme, index: PatientIndex | None) -> Mapped:
    """The resources one case becomes (raises RecordProblem when it cannot be mapped)."""
    if not isinstance(case, dict):
        raise RecordProblem("a case must be a JSON object")
    case_id = _text(case, "case_id", "case id")
    patient = _patient(case, case_id, ids, index)
    patient_ref = f"Patient/{patient['id']}"
    resources = [patient]
    worker = case.get("worker") or {}
    requester = _worker(worker) if worker.get("id") else None
    resources += [_carer(c, case_id, patient_ref, ids) for c in case.get("carers", [])]
    resources += [_risk(r, i, case_id, patient_ref, ids) for i, r in enumerate(case.get("risks", []))]
    resources += [_assessment(a, case_id, patient_ref, ids) for a in case.get("assessments", [])]
    if case.get("justice"):
        resources.append(_justice(case["justice"], case_id, patient_ref, ids))
    if case.get("referral"):
        resources.append(_referral(case["referral"], case_id, patient_ref, requester, ids))
    return Mapped(f"case {case_id}", resources, {patient_ref})


def read(data: bytes, ids: IdScheme, index: PatientIndex | None) -> Iterator[Mapped | Quarantined]:
    """Map every case; a case that cannot be read or mapped is quarantined, the rest go on."""
    for location, case in records(data):
        where = f"{location} ({case.get('case_id')})" if isinstance(case, dict) and case.get("case_id") else location
        if isinstance(case, RecordProblem):
            yield Quarantined(where, str(case))
            continue
        yield checked(where, case if isinstance(case, dict) else None, lambda: map_case(case, ids, index))
