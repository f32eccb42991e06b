"""Which of a person's carers the person has consented to hear about their pathway.

A carer is told only when an active Consent of the person has a permit provision
naming that carer (a RelatedPerson) as actor, within its period, and no deny
provision naming them; the delivery layer checks consent again when it sends.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from gateway.store.repository import Repository


def _provisions(provision: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield provision
    for nested in provision.get("provision", []):
        yield from _provisions(nested)


def _in_period(period: dict[str, Any] | None, today: date) -> bool:
    if not period:
        return True
    start, end = str(period.get("start", ""))[:10], str(period.get("end", ""))[:10]
    return (not start or start <= today.isoformat()) and (not end or today.isoformat() <= end)


def _named_carers(provision: dict[str, Any]) -> set[str]:
    return {
        ref
        for actor in provision.get("actor", [])
        if (ref := str((actor.get("reference") or {}).get("reference", ""))).startswith("RelatedPerson/")
    }


def consented_carers(repo: Repository, patient: str, today: date) -> list[str]:
    """``RelatedPerson/{id}`` references of the person's carers who may be told, in a stable order."""
    permitted: set[str] = set()
    denied: set[str] = set()
    for _, stored in repo.search("Consent", [("status", ["active"])], patient=patient):
        root = stored.resource.get("provision") or {}
        if not _in_period(root.get("period"), today):
            continue
        for provision in _provisions(root):
            if not _in_period(provision.get("period"), today):
                continue
            (permitted if provision.get("type") == "permit" else denied).update(_named_carers(provision))
    carers = permitted - denied
    return sorted(ref for ref in carers if _is_carer_of(repo, ref, patient))


def _is_carer_of(repo: Repository, reference: str, patient: str) -> bool:
    stored = repo.current("RelatedPerson", reference.split("/", 1)[1])
    return stored is not None and not stored.deleted and (stored.resource.get("patient") or {}).get("reference") == patient
