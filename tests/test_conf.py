"""The demo partnership in conf/ loads, and each kind of mistake is reported precisely."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from fhir.resources.R4B import get_fhir_model_class

from gateway.conf import ORGANIZATION_TYPE_SYSTEM, Conf, ConfError, Delivery, load_conf
from mappings.identifiers import ODS_SYSTEM, PARTNER_SYSTEM

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"
DEMO_CLIENTS = {
    "social-work": "dundee-hscp",
    "ig-officer": "dundee-hscp",
    "rehab-facility": "rehab-tayview-house",
    "rehab-facility-2": "rehab-lomond-brae",
    "third-sector": "tayside-recovery-network",
    "carer-portal": "dundee-carers-centre",
    "gp-practice": "gp-seagate-green",
    "recovery-service": "dundee-recovery-service",
    "advocacy": "tayside-advocacy",
}

Edit = Callable[[str, Callable[[dict[str, Any]], None]], Path]


@pytest.fixture(scope="module")
def conf() -> Conf:
    return load_conf(REPO_CONF)


@pytest.fixture
def edited(tmp_path: Path) -> Edit:
    """Copy conf/ to tmp_path, apply ``change`` to one file's parsed YAML, return the copy."""
    directory = tmp_path / "conf"
    shutil.copytree(REPO_CONF, directory)

    def edit(name: str, change: Callable[[dict[str, Any]], None]) -> Path:
        path = directory / name
        document = yaml.safe_load(path.read_text())
        change(document)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return directory

    return edit


def problems_of(directory: Path) -> list[str]:
    with pytest.raises(ConfError) as caught:
        load_conf(directory)
    return caught.value.problems


def org_index(document: dict[str, Any], org_id: str) -> int:
    return next(i for i, o in enumerate(document["organizations"]) if o["id"] == org_id)


# -- the shipped configuration ------------------------------------------------------------------


def test_shipped_conf_has_the_demo_partnership(conf: Conf) -> None:
    types = {o.type for o in conf.organizations}
    assert types == {"hscp", "gp-practice", "recovery-service", "third-sector", "advocacy", "rehab-facility", "carers-centre"}
    facilities = [o for o in conf.organizations if o.type == "rehab-facility"]
    assert {f.council_area for f in facilities} == {"Dundee City", "Fife"}
    assert conf.organization("rehab-tayview-house") in facilities
    for client_id, org_id in DEMO_CLIENTS.items():
        found = conf.client(client_id)
        assert found is not None, client_id
        assert found[0].id == org_id


def test_demo_clients_have_the_scopes_and_roles_the_walkthrough_needs(conf: Conf) -> None:
    _, social_work = conf.client("social-work")  # type: ignore[misc]
    assert {"system/*.read", "system/*.write", "ingest", "consent.decide"} <= set(social_work.scopes)
    _, ig_officer = conf.client("ig-officer")  # type: ignore[misc]
    assert "ig-officer" in ig_officer.roles and {"audit.read", "consent.decide"} <= set(ig_officer.scopes)
    _, carer_portal = conf.client("carer-portal")  # type: ignore[misc]
    assert carer_portal.kind == "portal"


def test_pathway_settings_name_the_rehab_team(conf: Conf) -> None:
    team = conf.organization(conf.pathway.rehab_team)
    assert team is not None and team.type == "hscp"
    assert conf.client("social-work")[0] is team  # type: ignore[index]
    assert conf.pathway.review_interval_weeks in (4, 6)
    assert conf.pathway.early_exit_alert.notify == ["rehab_team", "key_worker", "community_team", "consented_carers"]


def test_agreements_include_two_versions_and_an_overdue_review(conf: Conf) -> None:
    dumped = [a.model_dump(mode="json") for a in conf.agreements]
    versions = {}
    for agreement in dumped:
        versions.setdefault(agreement["id"], []).append(agreement["version"])
    assert sorted(versions["isa-dhscp-tayview"]) == [1, 2, 3]
    assert any(a["review_date"] and date.fromisoformat(str(a["review_date"])) < date.today() for a in dumped)
    carers = next(a for a in dumped if a["id"] == "isa-dhscp-carers")
    assert carers["categories"] == ["pathway-progress"] and carers["purposes"] == ["carer-support"]


def test_organizations_are_found_by_any_identifier(conf: Conf) -> None:
    hscp = conf.organization("dundee-hscp")
    assert conf.organization_by_identifier(ODS_SYSTEM, "S037") is hscp
    assert conf.organization_by_identifier(PARTNER_SYSTEM, "dundee-hscp") is hscp
    assert conf.organization_by_identifier(PARTNER_SYSTEM, "nobody") is None
    assert hscp is not None and hscp.primary_identifier().value == "S037"
    assert conf.organization("rehab-tayview-house").primary_identifier().system == PARTNER_SYSTEM  # type: ignore[union-attr]


def test_directory_resources_are_valid_fhir_without_person_labels(conf: Conf) -> None:
    for organization in conf.organizations:
        resource = organization.to_fhir()
        get_fhir_model_class("Organization").model_validate(resource)
        assert resource["id"] == organization.id and "meta" not in resource
        assert resource["type"][0]["coding"][0] == {
            "system": ORGANIZATION_TYPE_SYSTEM,
            "code": organization.type,
            "display": resource["type"][0]["coding"][0]["display"],
        }
    for person in conf.people:
        practitioner, role = person.to_fhir()
        get_fhir_model_class("Practitioner").model_validate(practitioner)
        get_fhir_model_class("PractitionerRole").model_validate(role)
        assert role["organization"] == {"reference": f"Organization/{person.organization}"}
        assert role["practitioner"]["reference"] == f"Practitioner/{person.id}"
        assert "meta" not in practitioner and "meta" not in role


# -- mistakes ------------------------------------------------------------------------------------


def test_bad_scope_names_file_entry_and_field(edited: Edit) -> None:
    at: dict[str, int] = {}

    def bad_scope(doc: dict[str, Any]) -> None:
        at["org"] = org_index(doc, "rehab-tayview-house")
        doc["organizations"][at["org"]]["clients"][0]["scopes"][1] = "system/Foo"

    directory = edited("partners.yaml", bad_scope)
    assert problems_of(directory) == [
        f"{directory}/partners.yaml: organizations[{at['org']}] (rehab-tayview-house).clients[0].scopes[1]: "
        "'system/Foo' is not a valid scope"
    ]


def test_unknown_organization_type(edited: Edit) -> None:
    directory = edited("partners.yaml", lambda doc: doc["organizations"][3].update(type="pharmacy"))
    (problem,) = problems_of(directory)
    assert problem.startswith(f"{directory}/partners.yaml: organizations[3] (gp-craigiebank-lane).type: 'pharmacy' is not allowed")
    assert "'rehab-facility'" in problem


def test_duplicate_organization_id(edited: Edit) -> None:
    def duplicate(doc: dict[str, Any]) -> None:
        copy = dict(doc["organizations"][0], identifiers=[{"system": PARTNER_SYSTEM, "value": "dundee-hscp-2"}], clients=[])
        doc["organizations"].append(copy)

    directory = edited("partners.yaml", duplicate)
    problems = problems_of(directory)
    assert f"{directory}/partners.yaml: organizations[10] (dundee-hscp).id: duplicate organisation id 'dundee-hscp' (also organizations[0])" in problems


def test_client_id_must_be_unique_across_organizations(edited: Edit) -> None:
    def reuse(doc: dict[str, Any]) -> None:
        doc["organizations"][org_index(doc, "lochee-peer-recovery")]["clients"] = [{"id": "social-work", "scopes": ["system/*.read"]}]

    directory = edited("partners.yaml", reuse)
    (problem,) = problems_of(directory)
    assert problem.endswith("(lochee-peer-recovery).clients[0].id: client id 'social-work' is also a client of dundee-hscp")


def test_missing_field(edited: Edit) -> None:
    directory = edited("partners.yaml", lambda doc: doc["organizations"][1].pop("address"))
    assert problems_of(directory) == [f"{directory}/partners.yaml: organizations[1] (dundee-recovery-service).address: required field is missing"]


def test_unknown_field(edited: Edit) -> None:
    directory = edited("partners.yaml", lambda doc: doc["organizations"][0].update(fax="01382 000000"))
    assert problems_of(directory) == [f"{directory}/partners.yaml: organizations[0] (dundee-hscp).fax: unknown field (not part of the schema)"]


def test_person_at_unknown_organization(edited: Edit) -> None:
    directory = edited("partners.yaml", lambda doc: doc["people"][0].update(organization="dundee-council"))
    assert problems_of(directory) == [f"{directory}/partners.yaml: people[0] (kw-sarah-mcintyre).organization: no organisation 'dundee-council' in partners.yaml"]


def test_partner_id_must_match_the_organization_id(edited: Edit) -> None:
    directory = edited("partners.yaml", lambda doc: doc["organizations"][4]["identifiers"][0].update(value="trn"))
    problems = problems_of(directory)
    assert problems[0] == f"{directory}/partners.yaml: organizations[4] (tayside-recovery-network).identifiers: partner id 'trn' must equal the organisation id 'tayside-recovery-network'"
    assert any("agreements.yaml" in p and "tayside-recovery-network" in p for p in problems[1:])


def test_agreement_naming_an_unknown_party(edited: Edit) -> None:
    def unknown_party(doc: dict[str, Any]) -> None:
        agreement = doc["agreements"][3]
        agreement["parties"][1]["value"] = agreement["signatories"][1]["party"]["value"] = "dundee-food-bank"

    directory = edited("agreements.yaml", unknown_party)
    assert problems_of(directory) == [
        f"{directory}/agreements.yaml: agreements[3] (isa-dhscp-third-sector).parties[1]: "
        f"no organisation in partners.yaml has identifier {PARTNER_SYSTEM}|dundee-food-bank"
    ]


def test_agreement_whose_signatory_is_not_a_party(edited: Edit) -> None:
    directory = edited("agreements.yaml", lambda doc: doc["agreements"][5]["signatories"][1]["party"].update(value="tayside-advocacy"))
    (problem,) = problems_of(directory)
    assert problem.startswith(f"{directory}/agreements.yaml: agreements[5] (isa-dhscp-carers): ")
    assert "tayside-advocacy, which is not a party" in problem


def test_agreement_repeating_a_version(edited: Edit) -> None:
    directory = edited("agreements.yaml", lambda doc: doc["agreements"][1].update(version=1))
    assert f"{directory}/agreements.yaml: agreements[1] (isa-dhscp-tayview).version: version 1 of isa-dhscp-tayview is also agreements[0]" in problems_of(directory)


def test_agreement_rejected_by_the_agreement_schema_is_located(edited: Edit) -> None:
    directory = edited("agreements.yaml", lambda doc: doc["agreements"][2].pop("purposes"))
    problems = problems_of(directory)
    assert problems and all(p.startswith(f"{directory}/agreements.yaml: agreements[2] (isa-dhscp-lomond-brae)") for p in problems)


def test_rehab_team_must_be_an_hscp(edited: Edit) -> None:
    directory = edited("pathway.yaml", lambda doc: doc.update(rehab_team="rehab-tayview-house"))
    assert problems_of(directory) == [f"{directory}/pathway.yaml: rehab_team: 'rehab-tayview-house' is of type rehab-facility, not hscp"]


def test_pathway_naming_an_unknown_person(edited: Edit) -> None:
    directory = edited("pathway.yaml", lambda doc: doc.update(duty_key_worker="kw-nobody"))
    assert problems_of(directory) == [f"{directory}/pathway.yaml: duty_key_worker: no person 'kw-nobody' in partners.yaml people"]


def test_review_interval_is_four_or_six_weeks(edited: Edit) -> None:
    directory = edited("pathway.yaml", lambda doc: doc.update(review_interval_weeks=5))
    assert problems_of(directory) == [f"{directory}/pathway.yaml: review_interval_weeks: 5 is not allowed; expected 4 or 6"]


def test_every_problem_is_reported_at_once(edited: Edit) -> None:
    edited("pathway.yaml", lambda doc: doc.update(community_team="nowhere"))
    directory = edited("agreements.yaml", lambda doc: doc["agreements"][0]["parties"][1].update(value="nowhere"))
    problems = problems_of(directory)
    assert [p.split(": ")[0] for p in problems] == [f"{directory}/pathway.yaml", f"{directory}/agreements.yaml"]


def test_unreadable_yaml_gives_the_line(edited: Edit) -> None:
    directory = edited("pathway.yaml", lambda doc: None)
    (directory / "pathway.yaml").write_text("rehab_team: dundee-hscp\n  bad: [indent\n")
    (problem,) = problems_of(directory)
    assert problem.startswith(f"{directory}/pathway.yaml: line 2,") and "not valid YAML" in problem


def test_missing_file(tmp_path: Path) -> None:
    assert problems_of(tmp_path) == [f"{tmp_path}/partners.yaml: file not found"]


def test_a_single_problem_reads_as_one_line() -> None:
    error = ConfError("agreements.yaml: agreement isa-x version 2 is already loaded with different content")
    assert error.problems == ["agreements.yaml: agreement isa-x version 2 is already loaded with different content"]
    assert str(error) == error.problems[0]


def test_the_shipped_delivery_section_retries_for_three_days(conf: Conf) -> None:
    assert conf.pathway.delivery == Delivery(
        base_delay_seconds=2, max_delay_seconds=3600, retry_for_hours=72, max_attempts=None, error_after_hours=24, timeout_seconds=10, lease_seconds=300
    )


def test_backoff_ceiling_below_its_start_is_refused(edited: Edit) -> None:
    directory = edited("pathway.yaml", lambda doc: doc["delivery"].update(max_delay_seconds=1))
    assert problems_of(directory) == [f"{directory}/pathway.yaml: delivery: max_delay_seconds is less than base_delay_seconds"]


def test_escalation_fallback_recipients_must_be_partners(edited: Edit) -> None:
    directory = edited("pathway.yaml", lambda doc: doc["early_exit_alert"].update(fallback=["dundee-recovery-service", "nobody-here"]))
    assert problems_of(directory) == [f"{directory}/pathway.yaml: early_exit_alert.fallback: no organisation 'nobody-here' in partners.yaml"]


def test_escalation_deadlines_are_minutes_within_bounds(edited: Edit) -> None:
    directory = edited("pathway.yaml", lambda doc: doc["early_exit_alert"].update(delivered_within_minutes=0))
    assert problems_of(directory) == [f"{directory}/pathway.yaml: early_exit_alert.delivered_within_minutes: Input should be greater than 0 (got 0)"]
