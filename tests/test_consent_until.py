"""Until when a decision holds: the next period or agreement date after 'at' (hand-computed here)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from consent import decide, decide_many, until_epoch

CHI = {"system": "https://fhir.nhs.uk/Id/chi-number", "value": "1503901238"}
HSCP = {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "S037"}
FACILITY = {"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}


def consent(root: dict[str, Any], consent_id: str = "c1") -> dict[str, Any]:
    return {"resourceType": "Consent", "id": consent_id, "status": "active", "patient": {"identifier": CHI}, "provision": root}


def ask(at: str, **extra: Any) -> dict[str, Any]:
    return {"patient": [CHI], "actor": [FACILITY], "purpose": "TREAT", "at": at, **extra}


FACILITY_UNTIL_NOVEMBER = consent({
    "type": "deny", "period": {"start": "2026-01-01", "end": "2027-12-31"},
    "provision": [{"type": "permit", "actor": [{"reference": {"identifier": FACILITY}}], "period": {"end": "2026-11-30"}}],
})


def test_a_nested_period_ending_is_the_next_change() -> None:
    decision = decide(ask("2026-11-22T10:00:00Z"), [FACILITY_UNTIL_NOVEMBER])
    assert (decision["decision"], decision["until"]) == ("permit", "2026-12-01T00:00:00Z")


def test_after_the_nested_period_the_root_period_end_is_next() -> None:
    decision = decide(ask("2026-12-01T00:00:00Z"), [FACILITY_UNTIL_NOVEMBER])
    assert (decision["decision"], decision["until"]) == ("deny", "2028-01-01T00:00:00Z")


def test_a_consent_not_yet_in_force_changes_when_it_starts() -> None:
    decision = decide(ask("2025-06-01T00:00:00Z"), [FACILITY_UNTIL_NOVEMBER])
    assert (decision["decision"], decision["until"]) == ("no-consent", "2026-01-01T00:00:00Z")


def test_an_instant_end_holds_through_that_microsecond_in_utc() -> None:
    until_noon = consent({"type": "permit", "period": {"end": "2026-11-22T12:00:00+01:00"}})
    decision = decide(ask("2026-11-22T10:00:00Z"), [until_noon])
    assert decision["until"] == "2026-11-22T11:00:00.000001Z"
    assert decide(ask("2026-11-22T11:00:00Z"), [until_noon])["decision"] == "permit"
    assert decide(ask(decision["until"]), [until_noon])["decision"] == "no-consent"


def test_nothing_dated_holds_forever() -> None:
    decision = decide(ask("2026-11-22T10:00:00Z"), [consent({"type": "permit"})])
    assert decision["decision"] == "permit"
    assert decision["until"] is None
    assert until_epoch(decision) is None


def test_other_peoples_and_inactive_consents_do_not_shorten_it() -> None:
    someone_else = {**consent({"type": "deny", "period": {"end": "2026-11-25"}}, "c2"), "patient": {"reference": "Patient/other"}}
    withdrawn = {**consent({"type": "deny", "period": {"end": "2026-11-24"}}, "c3"), "status": "inactive"}
    decision = decide(ask("2026-11-22T10:00:00Z"), [consent({"type": "permit"}), someone_else, withdrawn])
    assert decision["until"] is None


def agreement(**dates: str) -> dict[str, Any]:
    return {"id": "isa-hscp-facility", "version": 1, "title": "HSCP and facility", "status": "active",
            "parties": [HSCP, FACILITY], "purposes": ["TREAT"], "categories": ["substance-use"],
            "lawful_basis": ["UK GDPR Art 6(1)(e)"], **dates}


def test_agreement_dates_change_it_at_midnight_utc() -> None:
    permit_all = [consent({"type": "permit"})]
    dated = [agreement(start="2026-11-01", end="2026-12-31", review_date="2026-11-25")]
    request = ask("2026-11-22T10:00:00Z", holder=HSCP, data={"categories": ["substance-use"]})
    before_review = decide(request, permit_all, dated)
    # Review due on the 25th: the flag appears from the 26th.
    assert (before_review["flags"], before_review["until"]) == ([], "2026-11-26T00:00:00Z")
    overdue = decide({**request, "at": "2026-11-26T00:00:00Z"}, permit_all, dated)
    assert (overdue["flags"], overdue["until"]) == (["review-overdue: isa-hscp-facility"], "2027-01-01T00:00:00Z")
    expired = decide({**request, "at": "2027-01-01T00:00:00Z"}, permit_all, dated)
    assert (expired["decision"], expired["until"]) == ("deny", None)
    early = decide({**request, "at": "2026-10-31T23:59:59Z"}, permit_all, dated)
    assert (early["decision"], early["until"]) == ("deny", "2026-11-01T00:00:00Z")


def test_the_earliest_of_agreement_and_consent_changes_counts() -> None:
    dated = [agreement(start="2026-11-01", end="2026-12-31")]
    request = ask("2026-11-22T10:00:00Z", holder=HSCP, data={"categories": ["substance-use"]})
    assert decide(request, [FACILITY_UNTIL_NOVEMBER], dated)["until"] == "2026-12-01T00:00:00Z"
    assert decide({**request, "at": "2026-12-15T00:00:00Z"}, [FACILITY_UNTIL_NOVEMBER], dated)["until"] == "2027-01-01T00:00:00Z"


def test_a_malformed_request_holds_no_until() -> None:
    decision = decide({"patient": [CHI], "actor": [FACILITY], "at": "2026-11-22T10:00:00Z"}, [FACILITY_UNTIL_NOVEMBER])
    assert (decision["decision"], decision["until"]) == ("deny", None)


def test_decide_many_carries_until() -> None:
    [decided, refused] = decide_many([{"consents": [FACILITY_UNTIL_NOVEMBER], "request": ask("2026-11-22T10:00:00Z")}, {"consents": []}])
    assert decided["until"] == "2026-12-01T00:00:00Z"
    assert refused["until"] is None


def test_until_epoch_is_the_instant_in_seconds() -> None:
    decision = decide(ask("2026-11-22T10:00:00Z"), [FACILITY_UNTIL_NOVEMBER])
    assert until_epoch(decision) == datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp()
