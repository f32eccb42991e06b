"""Walking the synthetic demo people along the pathway through the real workflow: the same
FHIR service calls the API makes, as the partnership's own registered clients, with dates
set back so that the timeliness figures have a history to show."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select

from gateway.auth.scopes import allows
from gateway.auth.tokens import Principal
from gateway.demo_people import DemoPerson
from gateway.fhir.access import Caller
from gateway.fhir.service import FhirService
from gateway.pathway import codes
from gateway.pathway.clock import CLOCK_ADJUSTMENT, CLOCK_ADJUSTMENT_SYSTEM, UNAVAILABLE
from gateway.pathway.config import load_pathway_conf
from gateway.pathway.records import directory_key, first
from gateway.store.models import ClientRow
from gateway.store.repository import Stored
from mappings.identifiers import REFERRAL_SYSTEM
from mappings.top import RANGES, TIMEPOINT_SYSTEM, top_form

# The stages in the order a person meets them, for each branch.
MAIN_LINE = ("referral", "initial-meeting", "resource-allocation", "assessment", "preparation", "residential", "community-recovery", "closed")
COMMUNITY_LINE = ("referral", "initial-meeting", "resource-allocation", "alternative-pathway", "closed")
DECISION_AFTER = timedelta(days=14)
ASSESSMENT_WEEKS = 8
STAR_SCORES = {"drug-use": 4, "alcohol-use": 5, "physical-health": 5, "emotional-health": 4, "accommodation": 6, "family-relationships": 5}
# TOP at the start of treatment; each three-monthly review moves these by the step (capped).
TOP_START = {"opiates": 20, "alcohol": 12, "injected": 8, "shoplifting": 4, "psychological-health": 6, "physical-health": 7, "quality-of-life": 5, "acute-housing-problem": True}
TOP_STEP = {"opiates": -7, "alcohol": -4, "injected": -4, "shoplifting": -2, "psychological-health": 3, "physical-health": 2, "quality-of-life": 4}


def _within(item: str, value: int) -> int:
    """A TOP answer kept inside its item's range."""
    item_type = top_form().item(item).type  # type: ignore[union-attr]
    low, high = RANGES[item_type]
    return min(max(value, low), high)


class DemoWalker:
    """Moves one person at a time, acting as the HSCP rehab team and as their facility."""

    def __init__(self, fhir: FhirService) -> None:
        self.fhir = fhir
        with fhir.gateway.reading() as session:
            conf = load_pathway_conf(session)
            self.rehab_team = self._caller(session, conf.rehab_team)
            self.recovery_service = self._caller(session, conf.community_team) if conf.community_team else self.rehab_team
            self.review_weeks, self.stay_weeks = conf.review_interval_weeks, conf.residential_weeks
        self.today = date.today()

    def _caller(self, session: Any, organization_id: str) -> Caller:
        """The organisation's registered client that writes Tasks (what its system would use)."""
        key = directory_key(self.fhir.gateway.repository(session), organization_id)
        clients = session.scalars(select(ClientRow).where(ClientRow.organization == key, ClientRow.active.is_(True))).all()
        writer = next((c for c in clients if allows(c.scopes.split(), "Task", "write")), None)
        if writer is None:
            raise LookupError(f"Organization/{organization_id} has no registered client that may write Tasks; load conf first")
        return Caller(Principal(writer.id, writer.organization, frozenset(writer.scopes.split()), frozenset(), writer.kind, 0), "CAREMGT")

    def _find(self, resource_type: str, criteria: list[tuple[str, list[str]]]) -> Stored:
        with self.fhir.gateway.reading() as session:
            found = first(self.fhir.gateway.repository(session), resource_type, criteria)
        if found is None:
            raise LookupError(f"no {resource_type} matches {criteria}")
        return found

    def _move(self, caller: Caller, task: Stored, **changes: Any) -> Stored:
        """Update the Task as the caller's system would: what it may see of it, changed."""
        with self.fhir.gateway.reading() as session:
            seen = self.fhir.policy.visible(session, caller, [task]).resources[0]
        if seen is None:
            raise LookupError(f"{task.reference} is not visible to {caller.organization}")
        resource = seen | changes
        return self.fhir.update(caller, resource, "Task", task.id, task.version_id).stored

    def _stage(self, caller: Caller, task: Stored, stage: str, status: str, **changes: Any) -> Stored:
        return self._move(caller, task, businessStatus=codes.concept(codes.STAGE_SYSTEM, stage), status=status, **changes)

    def walk(self, person: DemoPerson) -> str:
        """Take ``person`` from referral to their target stage; returns the stage reached."""
        referred = date.fromisoformat(person.referral_date) if person.referral_date else self.today - timedelta(days=30)
        referral = self._refer(person, referred)
        task = self._find("Task", [("focus", [referral.reference])])
        line = COMMUNITY_LINE if person.stage == "alternative-pathway" else MAIN_LINE
        for stage in line[1 : line.index(person.stage) + 1]:
            task = self._enter(person, task, referral, stage, referred)
        if line.index(person.stage) >= line.index("resource-allocation") + 1:
            self._top_readings(referral, referred + timedelta(days=person.decision_days))
        return person.stage

    def _refer(self, person: DemoPerson, referred: date) -> Stored:
        ext = codes.EXTENSION_BASE
        extensions: list[dict[str, Any]] = [
            {"url": ext + "goal", "valueString": "Get well and stay well; rebuild things with my family"},
            {"url": ext + "contingency-plan", "valueString": "Key worker calls the same day; naloxone kit and overdose advice; GP review of OST within 48 hours"},
            {"url": ext + "detox-required", "valueBoolean": True},
        ]
        if person.key_worker:
            extensions.append({"url": codes.KEY_WORKER_EXTENSION, "valueReference": {"reference": f"PractitionerRole/{person.key_worker}"}})
        if person.facility:
            extensions.append({"url": codes.PREFERRED_FACILITY, "valueReference": {"reference": f"Organization/{person.facility}"}})
        referral = {
            "resourceType": "ServiceRequest",
            "identifier": [{"system": REFERRAL_SYSTEM, "value": f"REF-DEMO-{person.patient['id'][:8].upper()}"}],
            "status": "active",
            "intent": "order",
            "category": [codes.concept(codes.REQUEST_CATEGORY_SYSTEM, codes.REHAB_REFERRAL)],
            "subject": {"reference": person.reference},
            "authoredOn": referred.isoformat(),
            "reasonCode": [{"coding": [codes.coding(codes.SUBSTANCE_SYSTEM, s) for s in person.substances], "text": "Referral for residential rehabilitation"}],
            "extension": extensions,
        }
        if person.referrer:
            referral["requester"] = {"reference": f"PractitionerRole/{person.referrer}"}
        return self.fhir.create(self.rehab_team, referral, "ServiceRequest")

    def _enter(self, person: DemoPerson, task: Stored, referral: Stored, stage: str, referred: date) -> Stored:
        team = self.rehab_team
        if stage == "initial-meeting":
            return self._stage(team, task, stage, "accepted", extension=task.resource.get("extension", []) + self._clock_adjustment(person, referred))
        if stage in ("assessment", "alternative-pathway"):
            self._decide(referral, "yes" if stage == "assessment" else "no", referred + timedelta(days=person.decision_days))
            task = self._find("Task", [("focus", [referral.reference])])
        if stage == "residential":
            facility = [{"type": {"text": "facility"}, "valueReference": {"reference": f"Organization/{person.facility}"}}]
            moved = self._stage(team, task, stage, "in-progress", input=facility)
            self._stay(person, moved, referred)
            return self._find("Task", [("focus", [referral.reference])])
        if stage == "community-recovery":
            return task  # the facility's discharge moved it here
        return self._stage(team, task, stage, "completed" if stage == "closed" else "in-progress")

    @staticmethod
    def _clock_adjustment(person: DemoPerson, referred: date) -> list[dict[str, Any]]:
        """The documented days the person was unavailable (a week after referral), if any."""
        if not person.unavailable_days:
            return []
        away = {"start": (referred + timedelta(days=7)).isoformat(), "end": (referred + timedelta(days=6 + person.unavailable_days)).isoformat()}
        return [{"url": CLOCK_ADJUSTMENT, "extension": [
            {"url": "reason", "valueCoding": codes.coding(CLOCK_ADJUSTMENT_SYSTEM, UNAVAILABLE)},
            {"url": "period", "valuePeriod": away},
        ]}]

    def _top_readings(self, referral: Stored, started: date) -> None:
        """The recovery service's TOP at the start of treatment and every three months since."""
        form = top_form()
        k = 0
        while (held := started + timedelta(weeks=form.review_interval_weeks * k)) <= self.today:
            values = {item: bool(value) and k == 0 if isinstance(value, bool) else _within(item, value + k * TOP_STEP[item]) for item, value in TOP_START.items()}
            items = [{"linkId": "timepoint", "answer": [{"valueCoding": codes.coding(TIMEPOINT_SYSTEM, "start" if k == 0 else "review")}]}]
            items += [{"linkId": item, "answer": [{"valueBoolean" if isinstance(v, bool) else "valueInteger": v}]} for item, v in values.items()]
            reading = {"resourceType": "QuestionnaireResponse", "questionnaire": form.url, "status": "completed", "authored": held.isoformat(), "basedOn": [{"reference": referral.reference}], "item": items}
            self.fhir.create(self.recovery_service, reading, "QuestionnaireResponse")
            k += 1

    def _decide(self, referral: Stored, decision: str, on: date) -> None:
        items = [{"linkId": "decision", "answer": [{"valueCoding": {"code": decision}}]}]
        items += [{"linkId": c, "answer": [{"valueCoding": {"code": "met" if decision == "yes" else "not-yet"}}]} for c in codes.ALLOCATION_CRITERIA]
        response = {
            "resourceType": "QuestionnaireResponse",
            "questionnaire": codes.RESOURCE_ALLOCATION,
            "status": "completed",
            "authored": on.isoformat(),
            "basedOn": [{"reference": referral.reference}],
            "item": items,
        }
        self.fhir.create(self.rehab_team, response, "QuestionnaireResponse")

    def _stay(self, person: DemoPerson, pathway_task: Stored, referred: date) -> None:
        """The facility takes the referral, admits, reviews, and (if the target is past residential) discharges."""
        with self.fhir.gateway.reading() as session:
            facility = self._caller(session, str(person.facility))
        stay = self._find("Task", [("part-of", [pathway_task.reference]), ("code", [f"{codes.TASK_TYPE_SYSTEM}|{codes.FACILITY_TASK}"])])
        stay = self._move(facility, stay, status="received")
        stay = self._move(facility, stay, status="accepted")
        discharged = person.stage in ("community-recovery", "closed")
        admitted = referred + DECISION_AFTER + timedelta(weeks=ASSESSMENT_WEEKS)
        if not discharged:  # still resident: admitted within the last weeks of a 12-week stay
            admitted = max(admitted, self.today - timedelta(weeks=self.review_weeks + 2))
        stay = self._move(facility, stay, status="in-progress", executionPeriod={"start": admitted.isoformat()})
        weeks = 3 if person.early_exit else self.stay_weeks
        for k, due in enumerate(range(self.review_weeks, weeks + 1, self.review_weeks)):
            if (held := admitted + timedelta(weeks=due)) <= self.today:
                self._review(facility, stay, held, k)
        if not discharged:
            return
        ended = {"start": admitted.isoformat(), "end": (admitted + timedelta(weeks=weeks)).isoformat()}
        if person.early_exit:
            reason = codes.concept(codes.TASK_REASON_SYSTEM, codes.EARLY_EXIT)
            self._move(facility, stay, status="failed", statusReason=reason, executionPeriod=ended)
        else:
            self._move(facility, stay, status="completed", executionPeriod=ended)

    def _review(self, facility: Caller, stay: Stored, held: date, k: int) -> None:
        """The k-th review's Outcome Star reading (0 first): a point better in each area each time."""
        items = [{"linkId": area, "answer": [{"valueInteger": min(score + k, 10)}]} for area, score in STAR_SCORES.items()]
        items.append({"linkId": "attended", "answer": [{"valueBoolean": True}]})
        reading = {
            "resourceType": "QuestionnaireResponse",
            "questionnaire": codes.OUTCOME_STAR,
            "status": "completed",
            "authored": held.isoformat(),
            "basedOn": [stay.resource["focus"]],
            "item": items,
        }
        self.fhir.create(facility, reading, "QuestionnaireResponse")


def run_demo_pathways(app_or_service: Any, people: Iterable[DemoPerson]) -> dict[str, int]:
    """Walk each demo person to their target stage through the workflow; returns people per stage."""
    fhir: FhirService = app_or_service if isinstance(app_or_service, FhirService) else app_or_service.state.fhir
    walker = DemoWalker(fhir)
    return dict(Counter(walker.walk(person) for person in people))
