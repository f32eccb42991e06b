"""The lifecycle of a person's Consent: record, amend, withdraw.

Runs as a write hook inside the transaction that stores the Consent, so a
withdrawal and its consequences commit together: pending deliveries about the
person are dropped (and every delivery re-checks consent when it is sent), and
each organisation that received data under the withdrawn consent gets a
withdrawal notice, pushed and pullable.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select

from gateway.delivery.outbox import drop_pending, enqueue
from gateway.directory import consent_recorders
from gateway.fhir.access import DIRECTORY_CUSTODIAN
from gateway.fhir.outcomes import FhirError
from gateway.fhir.service import WriteContext
from gateway.store.models import DisclosureRow
from gateway.sharing.policy import grants
from gateway.store.repository import Stored, fhir_instant, now_utc
from mappings.identifiers import CHI_OID, CHI_SYSTEM

COMMUNICATION_CATEGORY = "https://pathway.scot/CodeSystem/communication-category"
# Consent.status moves Pathway accepts (a withdrawn consent is replaced, not revived).
CONSENT_TRANSITIONS = {
    "draft": {"draft", "proposed", "active", "rejected", "entered-in-error"},
    "proposed": {"proposed", "active", "rejected", "entered-in-error"},
    "active": {"active", "inactive", "entered-in-error"},
    "inactive": {"inactive", "entered-in-error"},
    "rejected": {"rejected", "entered-in-error"},
    "entered-in-error": {"entered-in-error"},
}


def withdrawal_recipients(ctx: WriteContext, consent_ref: str) -> set[str]:
    """Organisations that received data under this consent, from the disclosure ledger."""
    rows = ctx.session.scalars(select(DisclosureRow).where(DisclosureRow.consents.contains(f'"{consent_ref}"')))
    return {row.recipient for row in rows if consent_ref in orjson.loads(row.consents)}


class ConsentLifecycle:
    """Write hook for Consent resources."""

    def before_write(self, ctx: WriteContext, resource: dict[str, Any], previous: Stored | None) -> None:
        if resource["resourceType"] != "Consent":
            return
        self._link_patient(ctx, resource)
        if grants(resource) and ctx.caller.organization not in consent_recorders(ctx.session):
            raise FhirError(
                403,
                "only organisations the partnership authorises to record consent may record a Consent that permits "
                "sharing; any partner may record a refusal (a Consent whose provisions only deny)",
                "forbidden",
                "Consent.provision",
            )
        if previous is not None:
            before, after = previous.resource.get("status"), resource.get("status")
            if after not in CONSENT_TRANSITIONS.get(before, set()):
                raise FhirError(409, f"a Consent cannot go from {before} to {after}; record a new Consent instead", "business-rule", "Consent.status")
        if resource.get("status") == "active" and not resource.get("performer"):
            raise FhirError(422, "an active Consent must name who recorded it with the person (Consent.performer)", "required", "Consent.performer")

    def after_write(self, ctx: WriteContext, stored: Stored, previous: Stored | None) -> None:
        if stored.type != "Consent" or previous is None:
            return
        if previous.resource.get("status") == "active" and stored.resource.get("status") == "inactive":
            self._withdrawn(ctx, stored)

    def _link_patient(self, ctx: WriteContext, resource: dict[str, Any]) -> None:
        """Check the Consent names a person the recorder knows, and give one named only by CHI a
        reference to their Patient. An unknown person and one the recorder may not see get the
        same answer, so a Consent write never tells whether someone is on the pathway."""
        subject = resource.get("patient") or {}
        patient = None
        reference = subject.get("reference")
        if isinstance(reference, str) and reference.startswith("Patient/"):
            patient = ctx.repo.current("Patient", reference.split("/", 1)[1])
        elif not reference:
            identifier = subject.get("identifier") or {}
            if identifier.get("system") in (CHI_SYSTEM, CHI_OID) and isinstance(identifier.get("value"), str):
                chi = identifier["value"].strip()
                found = ctx.repo.search("Patient", [("identifier", [f"{CHI_SYSTEM}|{chi}", f"{CHI_OID}|{chi}"])], batch=2)
                patient = next((stored for _, stored in found), None)
        if patient is None or patient.deleted or not self._related(ctx, patient):
            raise FhirError(422, "Consent.patient must reference a known Patient (by reference or CHI)", "value", "Consent.patient")
        subject["reference"] = patient.reference

    def _related(self, ctx: WriteContext, patient: Stored) -> bool:
        """Whether the recorder has a relationship to the person: it may see their Patient
        record, or it holds records about them (a GP whose extract named them)."""
        if ctx.service.may_know(ctx.session, ctx.caller, patient):
            return True
        held = ctx.repo.search(None, patient=patient.reference, custodians=[ctx.caller.organization], batch=1)
        return next(held, None) is not None

    def _withdrawn(self, ctx: WriteContext, stored: Stored) -> None:
        patient = stored.patient
        consent_ref = stored.reference
        drop_pending(ctx.session, patient=patient)
        for recipient in sorted(withdrawal_recipients(ctx, consent_ref)):
            organization = self._organization(ctx, recipient)
            notice = {
                "resourceType": "Communication",
                "status": "completed",
                "category": [{"coding": [{"system": COMMUNICATION_CATEGORY, "code": "withdrawal-notice"}]}],
                "priority": "urgent",
                "subject": {"reference": patient},
                "about": [{"reference": consent_ref}],
                "recipient": [organization],
                "sent": fhir_instant(now_utc()),
                "payload": [
                    {
                        "contentString": "The person has withdrawn the consent under which you received their "
                        "information. Do not share it further, and review what you hold under your agreement."
                    }
                ],
            }
            # Held by its recipient (as governance notices are): the withdrawn consent no longer lets
            # it see a record about the person held by another, and it must still read this one.
            sent = ctx.store(notice, custodian=recipient)
            enqueue(ctx.session, event="withdrawal-notice", recipient=recipient, focus=sent.reference, patient=None, purpose="HOPERAT")

    def _organization(self, ctx: WriteContext, identifier: str) -> dict[str, Any]:
        for _, org in ctx.repo.search("Organization", [("identifier", [identifier])], custodians=[DIRECTORY_CUSTODIAN], batch=2):
            return {"reference": org.reference}
        system, _, value = identifier.partition("|")
        return {"identifier": {"system": system, "value": value}}
