"""Agreements run in the console and enforced at once: suspension, lapse and its notices, conf
load that never overwrites a console-made version, one-off disclosures in the ledger and the
subject-access Bundle, break-glass roles from conf/ and alerts, review figures in /metrics."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from sqlalchemy import func, select

import consent
from gateway.auth.tokens import Principal
from gateway.conf import ConfError, Delivery, load_conf
from gateway.console.people import ledger, subject_access_bundle
from gateway.console.directory_names import Directory
from gateway.delivery.models import DeliveryRow, SubscriptionRow
from gateway.delivery.outbox import enqueue
from gateway.delivery.worker import DeliveryWorker
from gateway.directory import import_conf
from gateway.fhir.access import Caller
from gateway.fhir.outcomes import FhirError
from gateway.runtime import Gateway
from gateway.audit import one_off
from gateway.sharing import agreement_lifecycle as lifecycle, break_glass
from gateway.sharing.governance_models import AgreementDraftRow, OneOffDisclosureRow
from gateway.sharing.policy import ConsentPolicy
from gateway.store.models import AgreementRow
from gateway.store.repository import now_utc
from mappings.identifiers import CHI_SYSTEM, make_chi

from .conftest import HSCP, REPO, privacy_consent
from .test_subscriptions import subscription

FACILITY = "https://pathway.scot/Id/partner|rehab-tayview-house"
LOMOND = "https://pathway.scot/Id/partner|rehab-lomond-brae"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
PARTNER = "https://pathway.scot/Id/partner"
FAST = Delivery(max_attempts=3, base_delay_seconds=0.01, max_delay_seconds=0.02, timeout_seconds=2)


@pytest.fixture
def partnership(gateway: Gateway) -> Gateway:
    import_conf(gateway, load_conf(REPO / "conf"), REPO / "conf")
    return gateway


@pytest.fixture
def patient(partnership, make_client) -> str:  # type: ignore[no-untyped-def]
    """A person held by the HSCP whose consent permits sharing wherever an agreement does."""
    social = make_client("social-work-test", HSCP, ["system/*.read", "system/*.write"])
    created = social.post("Patient", {"resourceType": "Patient", "identifier": [{"system": CHI_SYSTEM, "value": make_chi(date(1979, 2, 3), "male", 4)}], "name": [{"given": ["Rory"], "family": "Tosh"}]})
    assert created.status_code == 201, created.text
    ref = f"Patient/{created.json()['id']}"
    permit = privacy_consent(ref, {"type": "permit"}, performer="Organization/dundee-hscp")
    assert social.post("Consent", permit).status_code == 201
    return ref


def _versions(gateway: Gateway, agreement_id: str) -> list[tuple[int, str, str | None]]:
    with gateway.reading() as session:
        return [(r.version, r.status, r.approved_by) for r in session.scalars(select(AgreementRow).where(AgreementRow.id == agreement_id).order_by(AgreementRow.version))]


def test_suspension_refuses_the_next_read_and_drops_pending_deliveries(gateway, partnership, patient, make_client) -> None:  # type: ignore[no-untyped-def]
    facility = make_client("facility-test", FACILITY, ["system/*.read"])
    patient_id = patient.split("/")[1]
    assert facility.get(f"Patient/{patient_id}").status_code == 200
    with gateway.transaction() as session:
        session.add(SubscriptionRow(id="sub-task", recipient=FACILITY, event="review", endpoint="http://127.0.0.1:9/inbox", active=True, created=now_utc(), events_queued=0))
        session.flush()
        [queued] = enqueue(session, event="review", recipient=FACILITY, focus=patient, patient=patient, purpose="TREAT")
    with gateway.transaction() as session:
        lifecycle.set_status(session, "isa-dhscp-tayview", "suspended", reason="Breach at the facility under investigation", by="IG officer")
    assert _versions(gateway, "isa-dhscp-tayview")[-1][:2] == (4, "suspended")
    assert facility.get(f"Patient/{patient_id}").status_code == 404  # the very next decision
    worker = DeliveryWorker(gateway, ConsentPolicy(gateway.keyring), settings=FAST, threads=1)
    try:
        worker.run_once()
    finally:
        worker.close()
    with gateway.reading() as session:
        row = session.get(DeliveryRow, queued.id)
    assert row.status == "dropped" and "may no longer see" in (row.last_error or "")
    with gateway.transaction() as session:
        lifecycle.set_status(session, "isa-dhscp-tayview", "active", reason="Investigation closed, no breach found", by="IG officer")
    assert facility.get(f"Patient/{patient_id}").status_code == 200


def test_a_lapsed_agreement_stops_decisions_and_every_party_is_told(gateway, partnership, patient, make_client) -> None:  # type: ignore[no-untyped-def]
    today = now_utc().date()
    lomond = make_client("lomond-test", LOMOND, ["system/*.read"])
    patient_id = patient.split("/")[1]
    assert lomond.get(f"Patient/{patient_id}").status_code == 200
    with gateway.transaction() as session:
        session.add(SubscriptionRow(id="sub-notice", recipient=LOMOND, event="agreement-notice", endpoint="http://127.0.0.1:9/inbox", active=True, created=now_utc(), events_queued=0))
        held = lifecycle.current(session, "isa-dhscp-lomond-brae")
        body = orjson.loads(held.body) | {"review_date": (today - timedelta(days=31)).isoformat(), "lapse_after_days": 30}
        lifecycle.write_version(session, "isa-dhscp-lomond-brae", body, "active", "test: review 31 days overdue, lapses after 30")
    # decisions refuse it at once, before anything records the lapse
    assert lomond.get(f"Patient/{patient_id}").status_code == 404
    # and it may not subscribe: the entitlement check follows the same lapse rule
    subscriber = make_client("lomond-subscriber", LOMOND, ["system/*.read", "system/Subscription.cruds"])
    refused = subscriber.post("Subscription", json={"resourceType": "Subscription", **subscription("http://127.0.0.1:9/inbox", "facility-referral")})
    assert refused.status_code == 403 and "not a party to a current information-sharing agreement" in refused.text, refused.text
    decision = consent.decide({"patient": [{"system": "reference", "value": patient}], "actor": [{"system": PARTNER, "value": "rehab-lomond-brae"}], "purpose": "TREAT", "holder": {"system": ODS, "value": "S037"}}, [{"resourceType": "Consent", "status": "active", "patient": {"reference": patient}, "provision": {"type": "permit"}}], [body | {"id": "x", "version": 1, "status": "active"}])
    assert decision["decision"] == "deny" and any(f"lapsed on {today}" in r for r in decision["reasons"])
    with gateway.transaction() as session:
        assert lifecycle.sweep(session, today) == {"activated": [], "lapsed": ["isa-dhscp-lomond-brae@2"]}
        assert lifecycle.sweep(session, today) == {"activated": [], "lapsed": []}
    assert _versions(gateway, "isa-dhscp-lomond-brae")[-1] == (3, "expired", lifecycle.LAPSED_BY)
    with gateway.reading() as session:
        notices = [s for _, s in gateway.repository(session).search("Communication") if s.resource.get("topic", {}).get("text", "").endswith("has lapsed")]
        deliveries = session.scalars(select(DeliveryRow).where(DeliveryRow.event == "agreement-notice")).all()
    # one notice held by each party (HSCP and Lomond Brae); only Lomond Brae subscribes, so one push
    assert sorted(n.custodian for n in notices) == sorted([HSCP, LOMOND])
    lomond_notice = next(n for n in notices if n.custodian == LOMOND)
    assert {"identifier": {"system": "urn:ietf:rfc:3986", "value": "mailto:referrals@lomond-brae.example"}, "display": "referrals@lomond-brae.example"} in lomond_notice.resource["recipient"]
    assert [(d.recipient, d.focus) for d in deliveries] == [(LOMOND, lomond_notice.reference)]


def _conf_copy(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    directory = tmp_path / "conf"
    shutil.copytree(REPO / "conf", directory)
    document = yaml.safe_load((directory / "agreements.yaml").read_text())
    edit(document)
    (directory / "agreements.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return directory


def test_conf_load_never_replaces_a_version_made_in_the_console(gateway, partnership, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with gateway.transaction() as session:
        lifecycle.set_status(session, "isa-dhscp-tayview", "suspended", reason="Breach at the facility under investigation", by="Morven Laird")
    tayview = lambda d: next(a for a in d["agreements"] if a["id"] == "isa-dhscp-tayview" and a["version"] == 3)  # noqa: E731

    def same_version(document: dict[str, Any]) -> None:
        document["agreements"].append(tayview(document) | {"version": 4, "status": "active"})

    conf_dir = _conf_copy(tmp_path / "a", same_version)
    with pytest.raises(ConfError, match="version 4 was made in the console .*conf load never overwrites it"):
        import_conf(gateway, load_conf(conf_dir), conf_dir)
    assert _versions(gateway, "isa-dhscp-tayview")[-1][:2] == (4, "suspended")

    def higher_version(document: dict[str, Any]) -> None:
        document["agreements"].append(tayview(document) | {"version": 5, "status": "active", "title": "Renewed from the file"})

    conf_dir = _conf_copy(tmp_path / "b", higher_version)
    changed = import_conf(gateway, load_conf(conf_dir), conf_dir)
    [note] = changed["agreement_drafts"]
    assert "version 5 was saved as draft" in note and "not loaded: version 4 was made in the console" in note
    assert _versions(gateway, "isa-dhscp-tayview")[-1][:2] == (4, "suspended")
    with gateway.reading() as session:
        [draft] = session.scalars(select(AgreementDraftRow).where(AgreementDraftRow.agreement_id == "isa-dhscp-tayview")).all()
    assert (draft.stage, draft.created_by, orjson.loads(draft.body)["title"]) == ("draft", "pathway conf load", "Renewed from the file")
    assert "agreement_drafts" not in import_conf(gateway, load_conf(conf_dir), conf_dir)  # loading again: the same draft, nothing new


def test_a_one_off_disclosure_is_in_the_ledger_and_the_subject_access_bundle(gateway, partnership, patient) -> None:  # type: ignore[no-untyped-def]
    common = dict(patient=patient, requester="Police Scotland, D Division (DC A Brown)", purpose="HOPERAT", lawful_basis="DPA 2018 Sch 2 para 2",
                  necessity="Missing person inquiry: whereabouts needed urgently", resources=[f"{patient}/_history/1"], decided_by="Morven Laird, IG officer", recorded_by="ig-officer")
    with gateway.transaction() as session:
        refused = one_off.record(session, **common | {"disclosed": "nothing", "decision": "refused"})
        disclosed = one_off.record(session, **common | {"disclosed": "Name and date of last contact", "decision": "disclosed"})
        with pytest.raises(one_off.OneOffRefused, match="fill in: lawful basis"):
            one_off.record(session, **common | {"lawful_basis": "", "disclosed": "x" * 5, "decision": "disclosed"})
    with gateway.reading() as session:
        entries = ledger(session, patient)
        row = session.get(OneOffDisclosureRow, disclosed.id)
        bundle = subject_access_bundle(gateway.repository(session), patient, entries, Directory.load(gateway.repository(session)))
    assert [(e["channel"], e["recipient"], e["one_off"]) for e in entries] == [("one-off", "Police Scotland, D Division (DC A Brown)", disclosed.id)]
    assert refused.id not in str(entries)
    assert "Missing person" not in row.necessity and "last contact" not in row.disclosed  # sealed at rest
    events = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "AuditEvent"]
    [event] = [e for e in events if disclosed.id in str(e)]
    assert "DPA 2018 Sch 2 para 2" in str(event) and "Missing person inquiry" in str(event) and "Name and date of last contact" in str(event)


def test_break_glass_raises_the_alert_and_only_roles_in_conf_may_break_it(gateway, partnership, patient, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with gateway.transaction() as session:
        session.add(SubscriptionRow(id="sub-alert", recipient=HSCP, event="break-glass-alert", endpoint="http://127.0.0.1:9/mail-relay", active=True, created=now_utc(), events_queued=0))
    duty = Caller(Principal("duty-social-worker", HSCP, frozenset({"break-glass"}), frozenset({"break-glass"}), "system", 0), "ETREAT")
    with gateway.transaction() as session:
        grant = break_glass.start(session, duty, patient=patient, user="J Smith (duty social worker)", reason="Adult protection concern out of hours", basis="adult-support-protection", hours=2)
    with gateway.reading() as session:
        [alert] = session.scalars(select(DeliveryRow).where(DeliveryRow.event == "break-glass-alert")).all()
        email = gateway.repository(session).read(*alert.focus.split("/")).resource
    assert (alert.recipient, alert.patient, alert.endpoint) == (HSCP, None, "http://127.0.0.1:9/mail-relay")
    assert email["recipient"] == [{"identifier": {"system": "urn:ietf:rfc:3986", "value": "mailto:ig.alerts@dundee-hscp.example"}, "display": "ig.alerts@dundee-hscp.example"}]
    assert email["medium"][0]["coding"][0]["code"] == "EMAILWRIT" and grant.id in email["payload"][0]["contentString"]
    assert patient not in orjson.dumps(email).decode()  # the alert names the override, not the person

    conf_dir = _conf_copy(tmp_path, lambda d: d["governance"].update(break_glass_roles=["ig-officer"]))
    import_conf(gateway, load_conf(conf_dir), conf_dir)
    with gateway.transaction() as session, pytest.raises(FhirError, match="only ig-officer, as conf/agreements.yaml names"):
        break_glass.start(session, duty, patient=patient, user="J Smith", reason="Adult protection concern out of hours", basis="adult-support-protection", hours=2)


def test_metrics_count_agreements_due_overdue_and_lapsed(gateway, partnership, server) -> None:  # type: ignore[no-untyped-def]
    def figures() -> dict[str, float]:
        text = httpx.get(f"{server.url}/metrics").text
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("pathway_agreements_")}

    before = figures()
    today = now_utc().date()
    base = {"title": "Metrics test", "parties": [{"system": ODS, "value": "S037"}, {"system": PARTNER, "value": "rehab-tayview-house"}], "purposes": ["TREAT"], "categories": ["demographics"], "lawful_basis": ["UK GDPR Art 6(1)(e)"], "start": "2025-01-01"}
    with gateway.transaction() as session:
        for name, review, lapse in (("due", 30, None), ("overdue", -10, 180), ("lapsed", -200, 180), ("far", 400, None)):
            body = base | {"review_date": (today + timedelta(days=review)).isoformat()} | ({"lapse_after_days": lapse} if lapse else {})
            lifecycle.write_version(session, f"isa-metrics-{name}", body, "active", "test")
    after = figures()
    assert {k: after[k] - before[k] for k in after} == {"pathway_agreements_review_due": 1, "pathway_agreements_review_overdue": 1, "pathway_agreements_lapsed": 1}


def test_the_exported_agreements_yaml_loads_again_without_changing_anything(gateway, partnership, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with gateway.transaction() as session:
        lifecycle.set_status(session, "isa-dhscp-tayview", "suspended", reason="Breach at the facility under investigation", by="Morven Laird")
        exported = lifecycle.export(session)
        stored = session.scalar(select(func.count()).select_from(AgreementRow))
    assert len(exported["agreements"]) == stored == 10  # the 9 versions in conf/agreements.yaml and the suspension
    assert exported["governance"]["lapse_after_days"] == 180
    conf_dir = _conf_copy(tmp_path, lambda d: d.update(exported))
    changed = import_conf(gateway, load_conf(conf_dir), conf_dir)
    assert changed["agreements"] == 0 and "agreement_drafts" not in changed
