"""Properties of the consent engine: refusing more never shares more.

A bigger test: about 5 s, most of it hypothesis building nested consents.
"""

from __future__ import annotations

import copy
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


@st.composite
def conditions(draw: st.DrawFn, gates_only: bool = False) -> dict[str, Any]:
    stated: dict[str, Any] = {}
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


def provisions(depth: int, kinds: tuple[str, ...] = ("permit", "deny"), gates_only: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    node = st.builds(lambda kind, stated: {"type": kind, **stated}, st.sampled_from(kinds), conditions(gates_only))
    if depth == 0:
        return node
    return st.builds(
        lambda parent, children: {**parent, **({"provision": children} if children else {})},
        node,
        st.lists(provisions(depth - 1, kinds, gates_only), max_size=2),
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


def test_withdrawing_an_opt_out_reopens_an_opt_in() -> None:
    """Why the withdrawal property is stated for grants: withdrawing a refusal is meant to widen."""
    opt_in = make_consent(0, {"type": "permit"})
    opt_out = make_consent(1, {"type": "deny"})
    request = {"patient": [CHI], "actor": [RECIPIENTS[0]], "purpose": "TREAT", "at": "2026-11-22T10:00:00Z"}
    assert decide(request, [opt_in, opt_out])["decision"] == "deny"
    assert decide(request, [opt_in, {**opt_out, "status": "inactive"}])["decision"] == "permit"
