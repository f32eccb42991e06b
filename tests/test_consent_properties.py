"""Properties of the consent engine: refusing more never shares more; a decision holds until its 'until'.

A bigger test: about 10 s, most of it hypothesis building nested consents.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consent import decide

PARTNER = "https://pathway.scot/Id/partner"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CAT = "https://pathway.scot/CodeSystem/data-category"
CHI = {"system": "https://fhir.nhs.uk/Id/chi-number", "value": "1503901238"}
RECIPIENTS = [{"system": PARTNER, "value": v} for v in ("rehab-tayview-house", "advocacy-dundee", "third-sector-hillcrest")]
PURPOSES = ["TREAT", "CAREMGT", "carer-support"]
LABELS = ["PSY", "SUD", "OPIOIDUD", "ETH", "SDV"]
CATEGORIES = ["substance-use", "mental-health", "reviews", "pathway-progress"]
CLASSES = ["Condition", "MedicationStatement", "Encounter"]


def subset(values: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True)


# Period ends of every precision FHIR allows, close together around the times asked about.
PERIOD_TEXTS = ["2026", "2026-11", "2026-11-21", "2026-11-22", "2026-11-23", "2026-11-22T09:30:00Z",
                "2026-11-22T10:00:00.250000Z", "2026-11-22T11:00:00+01:00", "2026-11-22T12:00:00"]


@st.composite
def periods(draw: st.DrawFn) -> dict[str, str]:
    ends = ("start", "end")
    return {end: draw(st.sampled_from(PERIOD_TEXTS)) for end in ends if draw(st.booleans())}


@st.composite
def conditions(draw: st.DrawFn, gates_only: bool = False, timed: bool = False) -> dict[str, Any]:
    stated: dict[str, Any] = {}
    if timed and draw(st.integers(0, 2)) == 0:
        stated["period"] = draw(periods())
    if draw(st.booleans()):
        recipients = draw(st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=2, unique_by=lambda r: r["value"]))
        stated["actor"] = [{"reference": {"identifier": r}} for r in recipients]
    if draw(st.booleans()):
        stated["purpose"] = [{"code": p} for p in draw(subset(PURPOSES))]
    if gates_only:
        return stated
    if draw(st.integers(0, 3)) == 0:
        stated["class"] = [{"code": c} for c in draw(subset(CLASSES))]
    if draw(st.integers(0, 2)) == 0:
        stated["code"] = [{"coding": [{"system": CAT, "code": c}]} for c in draw(subset(CATEGORIES))]
    if draw(st.integers(0, 2)) == 0:
        stated["securityLabel"] = [{"system": ACT, "code": c} for c in draw(subset(LABELS))]
    return stated


def provisions(
    depth: int, kinds: tuple[str, ...] = ("permit", "deny"), gates_only: bool = False, timed: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    node = st.builds(lambda kind, stated: {"type": kind, **stated}, st.sampled_from(kinds), conditions(gates_only, timed))
    if depth == 0:
        return node
    return st.builds(
        lambda parent, children: {**parent, **({"provision": children} if children else {})},
        node,
        st.lists(provisions(depth - 1, kinds, gates_only, timed), max_size=2),
    )


def make_consent(index: int, root: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Consent", "id": f"c{index}", "status": "active", "patient": {"identifier": CHI},
            "provision": root}


consent_sets = st.lists(provisions(2), min_size=1, max_size=3).map(lambda roots: [make_consent(i, r) for i, r in enumerate(roots)])


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    request: dict[str, Any] = {"patient": [CHI], "actor": [draw(st.sampled_from(RECIPIENTS))],
                               "purpose": draw(st.sampled_from(PURPOSES)), "at": "2026-11-22T10:00:00Z"}
    if draw(st.integers(0, 3)) > 0:
        data: dict[str, Any] = {}
        if draw(st.booleans()):
            data["categories"] = draw(st.lists(st.sampled_from(CATEGORIES), max_size=3, unique=True))
        if draw(st.booleans()):
            data["security"] = [{"system": ACT, "code": c} for c in draw(st.lists(st.sampled_from(LABELS), max_size=2, unique=True))]
        if draw(st.booleans()):
            data["classes"] = draw(st.lists(st.sampled_from(CLASSES), max_size=2, unique=True))
        request["data"] = data
    return request


def redacted(decision: dict[str, Any]) -> set[tuple[str, str]]:
    return {(kind, str(value)) for o in decision["obligations"] for kind, values in o["redact"].items() for value in values}


def assert_not_wider(before: dict[str, Any], after: dict[str, Any]) -> None:
    if before["decision"] != "permit":
        assert after["decision"] != "permit", (before["reasons"], after["reasons"])
    elif after["decision"] == "permit":
        assert redacted(after) >= redacted(before), (before["reasons"], after["reasons"])


def nodes(provision: dict[str, Any]) -> list[dict[str, Any]]:
    return [provision] + [n for child in provision.get("provision", []) for n in nodes(child)]


@settings(max_examples=250, deadline=None)
@given(consent_sets, requests(), st.data())
def test_adding_a_deny_provision_never_widens_access(consents: list[dict[str, Any]], request: dict[str, Any], data: st.DataObject) -> None:
    before = decide(request, consents)
    changed = copy.deepcopy(consents)
    target = data.draw(st.sampled_from(changed))
    parent = data.draw(st.sampled_from(nodes(target["provision"])))
    parent.setdefault("provision", []).append({"type": "deny", **data.draw(conditions())})
    assert_not_wider(before, decide(request, changed))


# A grant: only permits, none scoped to data. Withdrawing one must never share more.
grant = provisions(1, kinds=("permit",), gates_only=True)


@settings(max_examples=150, deadline=None)
@given(consent_sets, grant, requests())
def test_withdrawing_a_grant_never_widens_access(others: list[dict[str, Any]], granted: dict[str, Any], request: dict[str, Any]) -> None:
    given_consent = make_consent(len(others), granted)
    before = decide(request, [*others, given_consent])
    after = decide(request, [*others, {**given_consent, "status": "inactive"}])
    assert_not_wider(before, after)


@settings(max_examples=50, deadline=None)
@given(consent_sets, requests())
def test_withdrawing_every_consent_leaves_no_consent(consents: list[dict[str, Any]], request: dict[str, Any]) -> None:
    withdrawn = [{**c, "status": "inactive"} for c in consents]
    assert decide(request, withdrawn)["decision"] in ("no-consent", "deny")
    if "purpose" in request:
        assert decide(request, withdrawn)["decision"] == "no-consent"


@st.composite
def data_scoped_denies(draw: st.DrawFn) -> dict[str, Any]:
    stated = draw(conditions().filter(lambda c: {"class", "code", "securityLabel"} & c.keys()))
    return {"type": "deny", **{k: v for k, v in stated.items() if k not in ("actor", "purpose")}}


def named_scope(provision: dict[str, Any]) -> set[tuple[str, str]]:
    """What a provision names, written out by hand from its JSON (ETH is SUD)."""
    return ({("classes", c["code"]) for c in provision.get("class", [])}
            | {("categories", c["code"]) for concept in provision.get("code", []) for c in concept["coding"]}
            | {("security", "SUD" if c["code"] == "ETH" else c["code"]) for c in provision.get("securityLabel", [])})


@settings(max_examples=150, deadline=None)
@given(data_scoped_denies(), st.lists(grant, min_size=1, max_size=3), requests())
def test_a_data_scoped_deny_holds_whatever_a_grant_permits(deny: dict[str, Any], grants: list[dict[str, Any]], request: dict[str, Any]) -> None:
    """Grants name no data, so none lifts a data-scoped deny in another consent, however specific."""
    request = {k: v for k, v in request.items() if k != "data"}  # any data: the deny always applies
    decision = decide(request, [make_consent(0, deny), *(make_consent(i + 1, g) for i, g in enumerate(grants))])
    if decision["decision"] == "permit":
        assert redacted(decision) >= named_scope(deny), decision["reasons"]
    else:
        assert decision["decision"] == "no-consent", decision["reasons"]


def test_withdrawing_an_opt_out_reopens_an_opt_in() -> None:
    """Why the withdrawal property is stated for grants: withdrawing a refusal is meant to widen."""
    opt_in = make_consent(0, {"type": "permit"})
    opt_out = make_consent(1, {"type": "deny"})
    request = {"patient": [CHI], "actor": [RECIPIENTS[0]], "purpose": "TREAT", "at": "2026-11-22T10:00:00Z"}
    assert decide(request, [opt_in, opt_out])["decision"] == "deny"
    assert decide(request, [opt_in, {**opt_out, "status": "inactive"}])["decision"] == "permit"


# --- a decision holds until its 'until' ---------------------------------------------------

HSCP = {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "S037"}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
AGREEMENT_DAYS = [f"2026-11-{day}" for day in range(20, 26)]
# Instants near the period and agreement boundaries above, in microseconds since the epoch.
LANDMARKS = sorted({
    int((datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None) - EPOCH.replace(tzinfo=None)) / timedelta(microseconds=1))
    for text in ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26",
                 "2026-11-22T09:30:00", "2026-11-22T10:00:00.250000", "2026-11-22T10:00:00", "2026-11-22T12:00:00"]
})
UNTIL_KEYS = ("decision", "obligations", "flags", "consents", "agreements")


def instant_text(microseconds: int) -> str:
    return (EPOCH + timedelta(microseconds=microseconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def microseconds_of(text: str) -> int:
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1)


instants = st.one_of(
    st.builds(lambda landmark, nudge: landmark + nudge, st.sampled_from(LANDMARKS), st.sampled_from([-1, 0, 1])),
    st.integers(LANDMARKS[0] - 86_400_000_000, LANDMARKS[-1] + 86_400_000_000),
)


@st.composite
def agreements(draw: st.DrawFn, recipient: dict[str, str]) -> dict[str, Any]:
    start = draw(st.sampled_from(AGREEMENT_DAYS))
    # Mostly agreements that could apply to the recipient asking, so that their dates decide.
    agreement = {
        "id": f"isa-{draw(st.integers(0, 2))}", "version": draw(st.integers(1, 2)), "title": "random",
        "status": draw(st.sampled_from(["active", "active", "active", "suspended"])),
        "parties": [HSCP, draw(st.just(recipient) | st.sampled_from(RECIPIENTS))],
        "purposes": draw(st.just(PURPOSES) | subset(PURPOSES)),
        "categories": draw(st.just(CATEGORIES) | subset(CATEGORIES)), "lawful_basis": ["UK GDPR Art 6(1)(e)"], "start": start,
    }
    if draw(st.booleans()):
        agreement["end"] = draw(st.sampled_from([d for d in AGREEMENT_DAYS if d >= start]))
    if draw(st.booleans()):
        agreement["review_date"] = draw(st.sampled_from(["2026-11-18", *AGREEMENT_DAYS]))
    return agreement


# Roots without gates (so that most consents apply), with a period, over nested provisions with periods.
timed_roots = st.builds(
    lambda kind, period, children: {"type": kind, **({"period": period} if period else {}), **({"provision": children} if children else {})},
    st.sampled_from(["permit", "deny"]), periods(), st.lists(provisions(1, timed=True), max_size=3),
)
timed_consent_sets = st.lists(timed_roots, min_size=1, max_size=3).map(lambda roots: [make_consent(i, r) for i, r in enumerate(roots)])


def assert_holds_until_its_until(
    consents: list[dict[str, Any]], agreed: list[dict[str, Any]] | None, request: dict[str, Any], t0: int, data: st.DataObject
) -> None:
    """decide at t0 gives 'until'; at any t1 in [t0, until) the decision is the same, 'until' too."""
    before = decide({**request, "at": instant_text(t0)}, consents, agreed)
    until = None if before["until"] is None else microseconds_of(before["until"])
    assert until is None or until > t0, (instant_text(t0), before["until"])
    # Any later time before 'until', often the very last microsecond before it.
    last = until - 1 if until is not None else t0 + 3 * 86_400_000_000
    t1 = data.draw(st.just(last) | st.integers(t0, last), label="t1")
    after = decide({**request, "at": instant_text(t1)}, consents, agreed)
    assert {k: after[k] for k in UNTIL_KEYS} == {k: before[k] for k in UNTIL_KEYS}, (instant_text(t0), instant_text(t1), before["until"])
    assert after["until"] == before["until"]


@settings(max_examples=300, deadline=None)
@given(timed_consent_sets, requests(), instants, st.data())
def test_a_consent_decision_holds_until_its_until(
    consents: list[dict[str, Any]], request: dict[str, Any], t0: int, data: st.DataObject
) -> None:
    assert_holds_until_its_until(consents, None, request, t0, data)


PERMIT_ALL = make_consent(9, {"type": "permit"})


@settings(max_examples=300, deadline=None)
@given(st.just([PERMIT_ALL]) | timed_consent_sets, requests(), instants, st.data())
def test_a_decision_with_agreements_holds_until_its_until(
    consents: list[dict[str, Any]], request: dict[str, Any], t0: int, data: st.DataObject
) -> None:
    request = {**request, "holder": HSCP}
    agreed = data.draw(st.lists(agreements(request["actor"][0]), min_size=1, max_size=3), label="agreements")
    assert_holds_until_its_until(consents, agreed, request, t0, data)
