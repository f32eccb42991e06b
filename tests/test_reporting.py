"""The partnership's reports on a small fixed cohort stored as FHIR resources, every figure
worked out by hand below (quarter 2026Q3 = 1 July to 30 September 2026).

    ref  received    what happened                                   Q3 wait (days)
    A    2026-06-20  decision yes 2026-07-08 (crosses the boundary)  completed 18, residential, alcohol
    B    2026-07-01  unavailable 07-05..07-14; decision no 07-29     completed 28-10=18, community, drugs
    C    2026-08-01  did not attend 08-10; decision yes 09-05;       completed 26 (from 08-10), prison, both
                     referred as prison-based (locationCode)
    D    2026-09-01  still at initial meeting; no referrer, no       ongoing 29 at 09-30, community, no substance
                     substance recorded
    E    2026-07-10  at assessment with no decision: no treatment    left out; person has no CHI
                     date
    F    2026-04-01  decision yes 2026-04-10                         completed in Q2 (9 days)
    G    2026-07-20  admitted 08-03, decision 08-12                  completed 14 (admission first), residential, alcohol
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timezone
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.pathway import codes
from gateway.pathway.clock import CLOCK_ADJUSTMENT, CLOCK_ADJUSTMENT_SYSTEM
from gateway.reporting.export import Reports, figure_csv
from gateway.reporting.mat import collect_ost, mat1_report
from gateway.reporting.measure import mat1_measure_report, waits_measure_report
from gateway.reporting.outcomes import outcomes_report
from gateway.reporting.quarters import Quarter
from gateway.reporting.records import SERVICE_TYPE_SYSTEM, collect_referrals
from gateway.reporting.waits import waits_report
from gateway.runtime import Gateway
from mappings.identifiers import CHI_SYSTEM, REFERRAL_SYSTEM, make_chi
from mappings.top import TIMEPOINT_SYSTEM, top_form
from tests.conftest import HSCP

Q2, Q3 = Quarter(2026, 2), Quarter(2026, 3)
AFTER = date(2026, 12, 1)  # reports run after the quarters are over
HSCP_ORG, PRISON_ORG = "Organization/dundee-hscp", "Organization/hmp-perth-healthcare"


def _adjustment(reason: str, start: str, end: str | None = None) -> dict[str, Any]:
    period = {"start": start} | ({"end": end} if end else {})
    return {"url": CLOCK_ADJUSTMENT, "extension": [
        {"url": "reason", "valueCoding": {"system": CLOCK_ADJUSTMENT_SYSTEM, "code": reason}},
        {"url": "period", "valuePeriod": period},
    ]}


def _medication(kind: str, patient: str, text: str, **dates: Any) -> dict[str, Any]:
    resource = {"resourceType": kind, "subject": {"reference": patient}, "medicationCodeableConcept": {"text": text}}
    if kind == "MedicationRequest":
        return resource | {"status": "completed", "intent": "order", **dates}
    return resource | {"status": "active", **dates}


COHORT: dict[str, dict[str, Any]] = {
    "A": {"received": "2026-06-20", "substances": ["alcohol"], "stage": "assessment", "decision": ("yes", "2026-07-08")},
    "B": {"received": "2026-07-01", "substances": ["opioids"], "stage": "alternative-pathway", "decision": ("no", "2026-07-29"),
          "adjustments": [_adjustment("unavailable", "2026-07-05", "2026-07-14")]},
    "C": {"received": "2026-08-01", "substances": ["opioids", "alcohol"], "stage": "assessment", "decision": ("yes", "2026-09-05"),
          "adjustments": [_adjustment("did-not-attend", "2026-08-10")], "setting": "prison", "owner": PRISON_ORG},
    "D": {"received": "2026-09-01", "substances": [], "stage": "initial-meeting", "no_requester": True},
    "E": {"received": "2026-07-10", "substances": ["cocaine"], "stage": "assessment", "no_chi": True},
    "F": {"received": "2026-04-01", "substances": ["alcohol"], "stage": "assessment", "decision": ("yes", "2026-04-10")},
    "G": {"received": "2026-07-20", "substances": ["alcohol"], "stage": "residential", "decision": ("yes", "2026-08-12"), "admitted": "2026-08-03"},
}


def _top(patient: str, authored: str, timepoint: str, **values: Any) -> dict[str, Any]:
    items = [{"linkId": "timepoint", "answer": [{"valueCoding": {"system": TIMEPOINT_SYSTEM, "code": timepoint}}]}]
    items += [{"linkId": k.replace("_", "-"), "answer": [{"valueInteger": v}]} for k, v in values.items()]
    return {"resourceType": "QuestionnaireResponse", "questionnaire": top_form().url, "status": "completed", "subject": {"reference": patient}, "authored": authored, "item": items}


def _star(patient: str, area: str, when: str, score: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": codes.concept(codes.OUTCOME_STAR_SYSTEM, area), "subject": {"reference": patient},
            "effectiveDateTime": when, "valueInteger": score}


@pytest.fixture
def cohort(gateway: Gateway) -> dict[str, str]:
    """Stores the cohort; returns each referral's Patient reference."""
    patients = {}
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        store = lambda resource: repo.create(resource, HSCP)  # noqa: E731
        for n, (name, spec) in enumerate(COHORT.items()):
            identifiers = [] if spec.get("no_chi") else [{"system": CHI_SYSTEM, "value": make_chi(date(1980, 1, 1 + n), "male", n)}]
            patient = store({"resourceType": "Patient", "id": f"person-{name.lower()}", "identifier": identifiers, "name": [{"family": name}]}).reference
            patients[name] = patient
            referral = store({
                "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "identifier": [{"system": REFERRAL_SYSTEM, "value": f"REF-{name}"}],
                "category": [codes.concept(codes.REQUEST_CATEGORY_SYSTEM, codes.REHAB_REFERRAL)],
                "subject": {"reference": patient}, "authoredOn": spec["received"],
                "reasonCode": [{"coding": [codes.coding(codes.SUBSTANCE_SYSTEM, s) for s in spec["substances"]], "text": "referral"}],
                **({} if spec.get("no_requester") else {"requester": {"reference": "PractitionerRole/kw-sarah-mcintyre"}}),
                **({"locationCode": [codes.concept(SERVICE_TYPE_SYSTEM, spec["setting"])]} if "setting" in spec else {}),
            })
            task = store({
                "resourceType": "Task", "status": "in-progress", "intent": "order",
                "code": codes.concept(codes.TASK_TYPE_SYSTEM, codes.PATHWAY_TASK),
                "businessStatus": codes.concept(codes.STAGE_SYSTEM, spec["stage"]),
                "focus": {"reference": referral.reference}, "for": {"reference": patient},
                "authoredOn": spec["received"], "owner": {"reference": spec.get("owner", HSCP_ORG)},
                **({"extension": spec["adjustments"]} if "adjustments" in spec else {}),
            })
            if "decision" in spec:
                decision, on = spec["decision"]
                store({"resourceType": "QuestionnaireResponse", "questionnaire": codes.RESOURCE_ALLOCATION, "status": "completed", "authored": on,
                       "basedOn": [{"reference": referral.reference}], "subject": {"reference": patient},
                       "item": [{"linkId": "decision", "answer": [{"valueCoding": {"code": decision}}]}]})
            if "admitted" in spec:
                store({"resourceType": "Task", "status": "in-progress", "intent": "order", "code": codes.concept(codes.TASK_TYPE_SYSTEM, codes.FACILITY_TASK),
                       "partOf": [{"reference": task.reference}], "for": {"reference": patient}, "focus": {"reference": referral.reference},
                       "owner": {"reference": "Organization/rehab-tayview-house"}, "executionPeriod": {"start": spec["admitted"]}})
        a, b, c, d, e, g = (patients[k] for k in "ABCDEG")
        # MAT 1: B starts methadone the day they present; C's first buprenorphine issue is 3 days on;
        # D is already on methadone; E has only thiamine; G's old course ended and a new one starts on the day.
        for resource in (
            _medication("MedicationStatement", b, "Methadone 1mg/ml oral solution", effectiveDateTime="2026-07-01"),
            _medication("MedicationRequest", c, "Buprenorphine 8mg sublingual tablets", authoredOn="2026-08-04"),
            _medication("MedicationStatement", d, "Methadone 1mg/ml oral solution", effectivePeriod={"start": "2026-01-01"}),
            _medication("MedicationStatement", e, "Thiamine 100mg tablets", effectiveDateTime="2026-07-10"),
            _medication("MedicationStatement", g, "Methadone 1mg/ml oral solution", effectivePeriod={"start": "2025-01-01", "end": "2025-06-01"}) | {"status": "completed"},
            _medication("MedicationRequest", g, "METHADONE 1mg/ml oral solution", authoredOn="2026-07-20"),
        ):
            store(resource)
        # TOP: opiates (lower is better) for five people; quality of life (higher is better) for two.
        for resource in (
            _top(a, "2026-07-08", "start", opiates=20, quality_of_life=5), _top(a, "2026-10-07", "review", opiates=14),
            _top(a, "2026-11-20", "exit", opiates=10, quality_of_life=10),
            _top(b, "2026-07-29", "start", opiates=15, quality_of_life=8), _top(b, "2026-10-28", "review", opiates=15, quality_of_life=6),
            _top(c, "2026-09-05", "start", opiates=10), _top(c, "2026-11-05", "review", opiates=12),
            _top(d, "2026-09-02", "start", opiates=28), _top(d, "2026-11-30", "review", opiates=0),
            _top(g, "2026-08-03", "start", opiates=5), _top(g, "2026-11-03", "review", opiates=1),
            _top(e, "2026-07-10", "start", opiates=9), _top(e, "2026-07-10", "review", opiates=3),  # same day: no change to count
        ):
            store(resource)
        for resource in (_star(a, "drug-use", "2026-08-01", 3), _star(a, "drug-use", "2026-09-01", 6), _star(g, "drug-use", "2026-08-31", 4), _star(g, "drug-use", "2026-09-28", 4)):
            store(resource)
    return patients


@pytest.fixture
def reports(gateway: Gateway, cohort: dict[str, str]) -> Iterator[Reports]:
    """The cohort's reports, read as after the quarters are over (within a session: the
    people's records and prescriptions are read when a report first needs them)."""
    with gateway.reading() as session:
        yield Reports.load(gateway.repository(session), AFTER)


def _row(rows: list[Any], service_type: str, substance: str) -> Any:
    return next(r for r in rows if r.service_type == service_type and r.substance == substance)


def test_waits_count_completed_and_ongoing_waits_with_adjusted_clocks(reports: Reports) -> None:
    rows = reports.waits(Q3)
    total = _row(rows, "all", "all")
    # completed A 18, B 18 (28 less 10 days away), C 26 (clock restarted 08-10), G 14; ongoing D 29
    assert (total.completed, total.completed_within, total.completed_share, total.completed_median_days) == (4, 3, 0.75, 18)
    assert (total.ongoing, total.ongoing_within, total.ongoing_over) == (1, 0, 1)
    assert total.met is False
    residential, community, prison = (_row(rows, kind, "all") for kind in ("residential", "community", "prison"))
    assert (residential.completed, residential.completed_within, residential.ongoing) == (2, 2, 0)  # A and G
    assert (community.completed, community.completed_within, community.ongoing) == (1, 1, 1)  # B; D waiting
    assert (prison.completed, prison.completed_within, prison.completed_share) == (1, 0, 0.0)  # C
    by_substance = {s: (_row(rows, "all", s).completed, _row(rows, "all", s).completed_within) for s in ("drugs", "alcohol", "both")}
    assert by_substance == {"drugs": (1, 1), "alcohol": (2, 2), "both": (1, 0)}
    assert _row(rows, "community", "drugs").completed == 1 and _row(rows, "prison", "both").completed == 1


def test_a_wait_crossing_the_quarter_boundary_is_ongoing_then_completed(reports: Reports) -> None:
    total = _row(reports.waits(Q2), "all", "all")
    assert (total.completed, total.completed_within, total.completed_median_days) == (1, 1, 9)  # F
    assert (total.ongoing, total.ongoing_within) == (1, 1)  # A: 10 days at 30 June


def test_an_ongoing_wait_in_the_quarter_under_way_runs_to_today(gateway: Gateway, cohort: dict[str, str]) -> None:
    with gateway.reading() as session:
        referrals = collect_referrals(gateway.repository(session))
    total = _row(waits_report(referrals, Q3, today=date(2026, 9, 3)), "all", "all")
    # on 3 September: A, B, G completed; C (decided on the 5th) has waited 24 days since the
    # missed appointment, D 2 days
    assert (total.completed, total.completed_within, total.ongoing, total.ongoing_within, total.ongoing_over) == (3, 3, 2, 1, 1)


def test_completeness_lists_what_would_be_excluded_per_organisation(gateway: Gateway, cohort: dict[str, str], reports: Reports) -> None:
    report = reports.completeness(Q3)
    by_org = {o.organisation: o for o in report.organisations}
    assert set(by_org) == {HSCP_ORG, PRISON_ORG}  # F was completed in Q2: not in scope
    hscp = by_org[HSCP_ORG]
    assert (hscp.records, hscp.complete, hscp.share_complete) == (5, 3, 0.6)  # A B D E G; D and E have problems
    assert {k: v for k, v in hscp.issues.items() if v} == {"missing-referral-source": 1, "missing-substance": 1, "missing-treatment-start": 1, "missing-chi": 1}
    assert (by_org[PRISON_ORG].records, by_org[PRISON_ORG].complete) == (1, 1)
    assert [(p.referral_id, p.issues) for p in report.problems] == [
        ("REF-D", ("missing-referral-source", "missing-substance")),
        ("REF-E", ("missing-treatment-start", "missing-chi")),
    ]
    assert report.problems[1].patient == cohort["E"]
    with gateway.reading() as session:
        again = Reports.load(gateway.repository(session), AFTER).completeness(Q3)
    assert len(report.digest()) == 64 and report.digest() == again.digest()


def test_mat1_counts_same_day_ost_starts_from_prescribing(gateway: Gateway, cohort: dict[str, str], reports: Reports) -> None:
    row = reports.mat1(Q3)
    # presented in Q3: B C D E G; D already on OST; B and G start the same day, C after 3 days; E never
    assert (row.presentations, row.already_on_ost, row.started, row.started_same_day) == (5, 1, 3, 2)
    assert row.share_same_day == round(2 / 3, 4) and row.median_days == 0
    assert dict(row.bands) == {"same day": 2, "1–2 days": 0, "3–7 days": 1, "8–14 days": 0, "15+ days": 0}
    with gateway.reading() as session:
        courses = collect_ost(gateway.repository(session))
    assert sorted(courses) == sorted(cohort[k] for k in "BCDG")  # thiamine is not OST
    assert mat1_report([], courses, Q3).presentations == 0


def test_top_and_star_change_with_small_numbers_suppressed(gateway: Gateway, cohort: dict[str, str]) -> None:
    with gateway.reading() as session:
        rows = {(r.measure, r.item): r for r in outcomes_report(gateway.repository(session))}
    opiates = rows[("top", "opiates")]
    # first -> latest: A 20->10, B 15->15, C 10->12, D 28->0, G 5->1 (E's two readings are on one day)
    assert (opiates.people, opiates.first_mean, opiates.latest_mean, opiates.mean_change) == (5, 15.6, 7.6, -8.0)
    assert (opiates.improved, opiates.unchanged, opiates.worse) == (3, 1, 1)
    assert opiates.csv_row() == {"measure": "top", "item": "opiates", "better": "lower", "people": 5, "first_mean": "15.6", "latest_mean": "7.6",
                                     "mean_change": "-8", "improved": "<5", "unchanged": "<5", "worse": "<5"}
    quality = rows[("top", "quality-of-life")]
    assert (quality.people, quality.improved, quality.worse) == (2, 1, 1)  # A 5->10, B 8->6
    assert quality.csv_row()["people"] == "<5" and quality.csv_row()["first_mean"] == "" and quality.csv_row()["mean_change"] == ""
    star = rows[("outcome-star", "drug-use")]
    assert (star.people, star.improved, star.unchanged) == (2, 1, 1)  # A 3->6, G 4->4
    assert rows[("top", "crack")].csv_row()["people"] == 0


def test_the_waits_csv_and_measure_reports_carry_the_same_counts(gateway: Gateway, reports: Reports) -> None:
    with gateway.reading() as session:
        text = figure_csv("waits", gateway.repository(session), [Q3])
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 16  # total, 3 substances, 3 service types x (all + 3 substances)
    assert table[0]["quarter"] == "2026Q3" and table[0]["completed_waits"] == "4" and table[0]["completed_percent_within_3_weeks"] == "75.0"
    assert table[0]["standard_met"] == "no" and table[0]["ongoing_over_3_weeks"] == "1"
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    report = waits_measure_report(reports.waits(Q3), Q3, {"reference": HSCP_ORG}, now)
    completed = report["group"][0]
    assert [p["count"] for p in completed["population"]] == [4, 4, 3] and completed["measureScore"]["value"] == 0.75
    service = {s["value"]["coding"][0]["code"]: [p["count"] for p in s["population"]] for s in completed["stratifier"][0]["stratum"]}
    assert service == {"community": [1, 1, 1], "prison": [1, 1, 0], "residential": [2, 2, 2]}
    assert report["period"] == {"start": "2026-07-01", "end": "2026-09-30"} and report["type"] == "summary"
    mat = mat1_measure_report(reports.mat1(Q3), Q3, None, now)
    assert [p["count"] for p in mat["group"][0]["population"]] == [5, 3, 2, 1]


def test_quarters_parse_and_refuse_what_is_not_one() -> None:
    assert (Quarter.parse("2026Q3").start, Quarter.parse("2026q3").end) == (date(2026, 7, 1), date(2026, 9, 30))
    assert Quarter.parse("2026Q4").end == date(2026, 12, 31) and Quarter(2026, 1).previous() == Quarter(2025, 4)
    with pytest.raises(ValueError, match="YYYYQn"):
        Quarter.parse("2026-Q5")
