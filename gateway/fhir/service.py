"""FHIR interactions as plain functions over the store: what the routes call.

Each interaction runs in one transaction together with its AuditEvent, so a
change is never stored without its audit entry, nor audited without being
stored. Refused or failed interactions are audited too, in their own
transaction after the rollback.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonpatch
import orjson
from sqlalchemy.orm import Session

from gateway.audit.chain import Actor, append, audit_event
from gateway.fhir import bundles
from gateway.fhir.access import DIRECTORY_TYPES, AccessPolicy, Caller
from gateway.fhir.capability import SUPPORTED_TYPES, search_param_names
from gateway.fhir.outcomes import FhirError
from gateway.fhir.search import parse_search
from gateway.fhir.validation import validate_resource
from gateway.runtime import Gateway
from gateway.store.indexing import patient_of
from gateway.store.repository import NotFound, Repository, Stored, VersionConflict
from mappings.identifiers import CHI_OID, CHI_SYSTEM, chi_problem

Labeller = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Seen:
    """A read's answer and what its audit entry must record."""

    result: Any
    refs: list[str]
    patient: str | None
    disclosures: list[dict[str, Any]] = field(default_factory=list)
    audited: bool = True


@dataclass
class WriteContext:
    """What a write hook may use: the transaction, the caller and a way to store more."""

    session: Session
    repo: Repository
    caller: Caller
    service: "FhirService"
    written: list[Stored] = field(default_factory=list)

    def store(self, resource: dict[str, Any], custodian: str | None = None, if_match: int | None = None) -> Stored:
        """Label and store a resource the pathway derives, in this transaction, running hooks."""
        return self.service.write(self, resource, custodian=custodian, if_match=if_match)


class WriteHook(Protocol):
    """Business rules that run inside a write's transaction (e.g. the pathway workflow)."""

    def before_write(self, ctx: WriteContext, resource: dict[str, Any], previous: Stored | None) -> None: ...

    def after_write(self, ctx: WriteContext, stored: Stored, previous: Stored | None) -> None: ...


class FhirService:
    """Create, read, update, patch, delete, search, history and transactions."""

    def __init__(self, gateway: Gateway, policy: AccessPolicy, labeller: Labeller) -> None:
        self.gateway = gateway
        self.policy = policy
        self.labeller = labeller
        self.hooks: list[WriteHook] = []

    # --- plumbing ----------------------------------------------------------------

    def _event(
        self,
        caller: Caller,
        interaction: str,
        refs: list[str],
        patient: str | None,
        outcome: str = "success",
        detail: str | None = None,
    ) -> dict[str, Any]:
        return audit_event(
            interaction,
            Actor(caller.principal.client_id, caller.organization, caller.acting_for),
            outcome=outcome,
            detail=detail,
            purpose=caller.purpose,
            entities=refs[:100],
            patient=patient,
        )

    def _audit(self, session: Session, caller: Caller, interaction: str, refs: list[str], patient: str | None) -> None:
        """Audit a change inside its own transaction."""
        append(session, self._event(caller, interaction, refs, patient), patient=patient, client_id=caller.principal.client_id)

    def _refusal_event(self, caller: Caller, interaction: str, target: str | None, error: FhirError) -> dict[str, Any]:
        return self._event(caller, interaction, [target] if target else [], None, "minor-failure", error.issues[0]["diagnostics"])

    def _run(self, caller: Caller, interaction: str, target: str | None, work: Callable[[Session, Repository], Any]) -> Any:
        """Run a change in one transaction with its audit entry; a refusal is audited
        in a transaction of its own after the rollback."""
        try:
            with self.gateway.transaction() as session:
                return work(session, self.gateway.repository(session))
        except FhirError as error:
            if error.status != 401:
                with self.gateway.transaction() as session:
                    append(session, self._refusal_event(caller, interaction, target, error), client_id=caller.principal.client_id)
            raise

    async def _read(self, caller: Caller, interaction: str, target: str | None, work: Callable[[Session, Repository], Seen]) -> Any:
        """Run a read on a snapshot; answer only once its audit entry is committed."""
        try:
            with self.gateway.reading() as session:
                seen = work(session, self.gateway.repository(session))
        except FhirError as error:
            if error.status != 401:
                await self.gateway.audit.record(self._refusal_event(caller, interaction, target, error), client_id=caller.principal.client_id)
            raise
        if seen.audited:
            event = self._event(caller, interaction, seen.refs, seen.patient)
            await self.gateway.audit.record(event, patient=seen.patient, client_id=caller.principal.client_id, disclosures=seen.disclosures)
        return seen.result

    def _visible_one(self, session: Session, caller: Caller, stored: Stored) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        visible = self.policy.visible(session, caller, [stored])
        resource = visible.resources[0]
        if resource is None:
            raise FhirError(404, f"{stored.reference} is not known", "not-found")
        return resource, visible.disclosures

    def _check_type(self, resource_type: str) -> None:
        if resource_type not in SUPPORTED_TYPES:
            raise FhirError(404, f"resource type {resource_type} is not supported here", "not-supported")

    # --- writes --------------------------------------------------------------------

    def write(
        self,
        ctx: WriteContext,
        resource: dict[str, Any],
        *,
        custodian: str | None = None,
        if_match: int | None = None,
    ) -> Stored:
        """Validate, label, check and store one resource within ``ctx``'s transaction.

        A deleted id counts as an update of its last version: only its holder may write it again.
        """
        self._check_type(resource["resourceType"])
        current = ctx.repo.current(resource["resourceType"], resource["id"]) if resource.get("id") else None
        refusal = self.policy.write_refusal(ctx.session, ctx.caller, current, resource)
        if refusal:
            raise FhirError(403, refusal, "forbidden")
        _check_person_identifiers(resource)
        for hook in self.hooks:
            hook.before_write(ctx, resource, current)
        self.labeller(resource)
        try:
            if current is None:
                stored = ctx.repo.create(resource, custodian or ctx.caller.organization)
            else:
                stored = ctx.repo.update(resource, custodian or ctx.caller.organization, if_match=if_match)
        except VersionConflict as conflict:
            raise FhirError(
                412 if if_match is not None else 409,
                f"{resource['resourceType']}/{resource['id']}: {conflict}",
                "conflict",
            ) from None
        except NotFound as missing:
            raise FhirError(404, str(missing), "not-found") from None
        ctx.written.append(stored)
        for hook in self.hooks:
            hook.after_write(ctx, stored, current)
        return stored

    def _put(self, ctx: WriteContext, resource: dict[str, Any], if_match: int | None) -> Stored:
        """An update by id from a partner (PUT): the caller must see what it replaces, and
        may not choose the id of a new Patient (ids of people are assigned here)."""
        resource_type, resource_id = resource["resourceType"], resource.get("id", "")
        current = ctx.repo.current(resource_type, resource_id)
        if current is None and resource_type == "Patient":
            raise FhirError(404, f"Patient/{resource_id} is not known; Patient ids are assigned by Pathway (create with POST)", "not-found")
        if current is not None and not self.may_know(ctx.session, ctx.caller, current):
            raise FhirError(404, f"{current.reference} is not known", "not-found")
        return self.write(ctx, resource, if_match=if_match)

    def may_know(self, session: Session, caller: Caller, stored: Stored) -> bool:
        """Whether the caller may know this version exists: it holds it, or may see it."""
        if stored.custodian == caller.organization and caller.acting_for is None:
            return True
        return self.policy.visible(session, caller, [stored]).resources[0] is not None

    def _delete(self, ctx: WriteContext, resource_type: str, resource_id: str, if_match: int | None) -> Stored | None:
        """Delete within ``ctx``'s transaction through the same rules as an update; the deleted
        version joins ``ctx.written`` so its audit entry names it and its person."""
        self._check_type(resource_type)
        current = ctx.repo.current(resource_type, resource_id)
        if current is None or not self.may_know(ctx.session, ctx.caller, current):
            raise FhirError(404, f"{resource_type}/{resource_id} is not known", "not-found")
        if current.deleted:
            return None
        refusal = self.policy.delete_refusal(ctx.session, ctx.caller, current)
        if refusal:
            raise FhirError(403, refusal, "forbidden")
        try:
            stored = ctx.repo.delete(resource_type, resource_id, if_match)
        except VersionConflict as conflict:
            raise FhirError(412, f"{resource_type}/{resource_id}: {conflict}", "conflict") from None
        ctx.written.append(stored)
        return stored

    def _audit_writes(self, ctx: WriteContext, interaction: str) -> None:
        patients = {s.patient for s in ctx.written if s.patient}
        self._audit(
            ctx.session,
            ctx.caller,
            interaction,
            [f"{s.reference}/_history/{s.version_id}" for s in ctx.written],
            next(iter(patients)) if len(patients) == 1 else None,
        )

    def store_all(
        self, caller: Caller, resources: Iterable[dict[str, Any]], *, interaction: str = "create", skip_unchanged: bool = False
    ) -> list[Stored]:
        """Store already-validated resources (ingest, demo) in one audited transaction,
        running the same labels, checks and hooks as the API; with ``skip_unchanged``
        a resource equal to its current version is left alone (re-ingest is a no-op)."""

        def work(session: Session, repo: Repository) -> list[Stored]:
            ctx = WriteContext(session, repo, caller, self)
            for resource in resources:
                if skip_unchanged and repo.matches_current(resource):
                    continue
                self.write(ctx, resource)
            if ctx.written:
                self._audit_writes(ctx, interaction)
            return ctx.written

        return self._run(caller, interaction, None, work)

    def create(self, caller: Caller, resource: Any, resource_type: str) -> Stored:
        validate_resource(resource, resource_type)
        resource.pop("id", None)

        def work(session: Session, repo: Repository) -> Stored:
            ctx = WriteContext(session, repo, caller, self)
            stored = self.write(ctx, resource)
            self._audit_writes(ctx, "create")
            return stored

        return self._run(caller, "create", resource_type, work)

    def update(self, caller: Caller, resource: Any, resource_type: str, resource_id: str, if_match: int | None) -> Stored:
        validate_resource(resource, resource_type)
        if resource.get("id") != resource_id:
            raise FhirError(400, f"resource id {resource.get('id')!r} does not match the URL id {resource_id!r}", "invalid", f"{resource_type}.id")

        def work(session: Session, repo: Repository) -> Stored:
            ctx = WriteContext(session, repo, caller, self)
            stored = self._put(ctx, resource, if_match)
            self._audit_writes(ctx, "update")
            return stored

        return self._run(caller, "update", f"{resource_type}/{resource_id}", work)

    def patch(self, caller: Caller, resource_type: str, resource_id: str, operations: Any, if_match: int | None) -> Stored:
        if not isinstance(operations, list):
            raise FhirError(400, "PATCH body must be a JSON Patch array (application/json-patch+json)", "structure")

        def work(session: Session, repo: Repository) -> Stored:
            current, _ = self._read_visible(session, repo, caller, resource_type, resource_id)
            if if_match is not None and if_match != int(current["meta"]["versionId"]):
                raise FhirError(412, f"{resource_type}/{resource_id}: version {if_match} is not current (current is {current['meta']['versionId']})", "conflict")
            try:
                patched = jsonpatch.apply_patch(current, operations)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
                raise FhirError(422, f"JSON Patch could not be applied: {exc}", "processing") from None
            if patched.get("id") != resource_id or patched.get("resourceType") != resource_type:
                raise FhirError(422, "JSON Patch may not change resourceType or id", "processing")
            validate_resource(patched, resource_type)
            ctx = WriteContext(session, repo, caller, self)
            stored = self.write(ctx, patched, if_match=int(current["meta"]["versionId"]))
            self._audit_writes(ctx, "patch")
            return stored

        return self._run(caller, "patch", f"{resource_type}/{resource_id}", work)

    def delete(self, caller: Caller, resource_type: str, resource_id: str, if_match: int | None) -> None:
        def work(session: Session, repo: Repository) -> None:
            ctx = WriteContext(session, repo, caller, self)
            if self._delete(ctx, resource_type, resource_id, if_match) is not None:
                self._audit_writes(ctx, "delete")

        self._run(caller, "delete", f"{resource_type}/{resource_id}", work)

    # --- reads ---------------------------------------------------------------------

    def _read_visible(
        self, session: Session, repo: Repository, caller: Caller, resource_type: str, resource_id: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        self._check_type(resource_type)
        stored = repo.current(resource_type, resource_id)
        if stored is not None and stored.deleted:
            # Only those who could see it learn that it was deleted.
            if self.may_know(session, caller, stored):
                raise FhirError(410, f"{resource_type}/{resource_id} was deleted", "deleted")
            stored = None
        if stored is None:
            raise FhirError(404, f"{resource_type}/{resource_id} is not known", "not-found")
        return self._visible_one(session, caller, stored)

    async def read(self, caller: Caller, resource_type: str, resource_id: str) -> dict[str, Any]:
        def work(session: Session, repo: Repository) -> Seen:
            resource, disclosures = self._read_visible(session, repo, caller, resource_type, resource_id)
            ref = f"{resource_type}/{resource_id}"
            return Seen(resource, [ref], patient_of(resource), disclosures, resource_type not in DIRECTORY_TYPES)

        return await self._read(caller, "read", f"{resource_type}/{resource_id}", work)

    async def vread(self, caller: Caller, resource_type: str, resource_id: str, version_id: int) -> dict[str, Any]:
        self._check_type(resource_type)

        def work(session: Session, repo: Repository) -> Seen:
            try:
                stored = repo.vread(resource_type, resource_id, version_id)
            except NotFound as missing:
                raise FhirError(404, str(missing), "not-found") from None
            resource, disclosures = self._visible_one(session, caller, stored)
            return Seen(resource, [f"{resource_type}/{resource_id}/_history/{version_id}"], stored.patient, disclosures)

        return await self._read(caller, "vread", f"{resource_type}/{resource_id}", work)

    async def history(self, caller: Caller, resource_type: str, resource_id: str, base: str) -> dict[str, Any]:
        self._check_type(resource_type)

        def work(session: Session, repo: Repository) -> Seen:
            try:
                versions = repo.history(resource_type, resource_id)
            except NotFound as missing:
                raise FhirError(404, str(missing), "not-found") from None
            visible = self.policy.visible(session, caller, versions)
            shown = [(s, r) for s, r in zip(versions, visible.resources) if r is not None]
            if not shown:
                raise FhirError(404, f"{resource_type}/{resource_id} is not known", "not-found")
            bundle = bundles.history(base, [s for s, _ in shown], [r for _, r in shown])
            return Seen(bundle, [f"{resource_type}/{resource_id}"], versions[0].patient, visible.disclosures)

        return await self._read(caller, "history-instance", f"{resource_type}/{resource_id}", work)

    async def search(self, caller: Caller, resource_type: str, params: list[tuple[str, str]], base: str) -> dict[str, Any]:
        self._check_type(resource_type)
        query = parse_search(resource_type, params, search_param_names(resource_type))

        def work(session: Session, repo: Repository) -> Seen:
            rows = repo.search(
                resource_type,
                query.criteria,
                updated_after=query.updated_after,
                updated_before=query.updated_before,
                patient=query.patient,
                custodians=self.policy.search_custodians(caller, resource_type),
                offset=query.offset,
            )
            page, withheld, next_offset, disclosures = self._page(session, caller, rows, query.count)
            patients = {patient_of(r) for r in page} - {None}
            bundle = bundles.searchset(base, resource_type, page, params, next_offset, withheld)
            return Seen(
                bundle,
                [f"{r['resourceType']}/{r['id']}" for r in page],
                next(iter(patients)) if len(patients) == 1 else query.patient,
                disclosures,
                resource_type not in DIRECTORY_TYPES,
            )

        return await self._read(caller, "search-type", resource_type, work)

    def _page(
        self, session: Session, caller: Caller, rows: Iterator[tuple[int, Stored]], count: int
    ) -> tuple[list[dict[str, Any]], bool, int | None, list[dict[str, Any]]]:
        """Fill a page with what the caller may see, checking rows in chunks; returns the
        page, whether anything was withheld, the next offset and the disclosures made."""
        page: list[dict[str, Any]] = []
        disclosures: list[dict[str, Any]] = []
        withheld = False
        if count == 0:
            return page, False, None, disclosures
        chunk: list[tuple[int, Stored]] = []

        def flush() -> int | None:
            nonlocal withheld
            visible = self.policy.visible(session, caller, [s for _, s in chunk])
            withheld = withheld or visible.withheld
            shown: set[str] = set()
            stop = None
            for (position, stored), resource in zip(chunk, visible.resources):
                if resource is None:
                    continue
                if len(page) == count:
                    stop = position
                    break
                page.append(resource)
                shown.add(f"{stored.reference}/_history/{stored.version_id}")
            disclosures.extend(d for d in _only_shown(visible.disclosures, shown))
            chunk.clear()
            return stop

        for item in rows:
            chunk.append(item)
            if len(chunk) >= count + 1:
                stop = flush()
                if stop is not None:
                    return page, withheld, stop, disclosures
        stop = flush() if chunk else None
        return page, withheld, stop, disclosures

    # --- transactions --------------------------------------------------------------

    def transaction(self, caller: Caller, bundle: Any, base: str) -> dict[str, Any]:
        """Apply a transaction Bundle all-or-nothing."""
        validate_resource(bundle, "Bundle")
        if bundle.get("type") != "transaction":
            raise FhirError(400, "only Bundles of type transaction are accepted here", "not-supported", "Bundle.type")
        entries = bundle.get("entry", [])
        targets = _assign_ids(entries)

        def work(session: Session, repo: Repository) -> dict[str, Any]:
            ctx = WriteContext(session, repo, caller, self)
            responses = []
            for index, entry in enumerate(entries):
                try:
                    responses.append(self._transaction_entry(ctx, entry, targets))
                except FhirError as error:
                    error.issues[0]["diagnostics"] = f"Bundle.entry[{index}]: {error.issues[0]['diagnostics']}"
                    raise
            self._audit_writes(ctx, "transaction")
            return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "transaction-response", "entry": responses}

        return self._run(caller, "transaction", None, work)

    def _transaction_entry(self, ctx: WriteContext, entry: Any, targets: dict[str, str]) -> dict[str, Any]:
        if not isinstance(entry, dict):
            raise FhirError(400, "each entry must be an object with a request (and, except for DELETE, a resource)", "structure")
        request = entry.get("request") or {}
        method, url = request.get("method"), str(request.get("url", ""))
        if method == "DELETE":
            resource_type, _, resource_id = url.partition("/")
            self._delete(ctx, resource_type, resource_id, parse_if_match(request.get("ifMatch")))
            return {"response": {"status": "204 No Content"}}
        resource = _resolve_references(entry.get("resource"), targets)
        if method not in ("POST", "PUT") or not isinstance(resource, dict):
            raise FhirError(400, "each entry needs request.method POST, PUT or DELETE and (except DELETE) a resource", "structure")
        validate_resource(resource, url.split("/")[0] or None)
        if_match = parse_if_match(request.get("ifMatch"))
        stored = self._put(ctx, resource, if_match) if method == "PUT" else self.write(ctx, resource, if_match=if_match)
        status = "201 Created" if stored.version_id == 1 else "200 OK"
        return {
            "response": {
                "status": status,
                "location": f"{stored.type}/{stored.id}/_history/{stored.version_id}",
                "etag": bundles.etag(stored.version_id),
            }
        }


def _check_person_identifiers(resource: dict[str, Any]) -> None:
    """A CHI on a Patient must be a real one for this person (DESIGN §3)."""
    if resource["resourceType"] != "Patient":
        return
    for index, identifier in enumerate(resource.get("identifier", [])):
        if identifier.get("system") in (CHI_SYSTEM, CHI_OID) and identifier.get("value"):
            problem = chi_problem(identifier["value"], resource.get("birthDate"), resource.get("gender"))
            if problem:
                raise FhirError(422, problem, "value", f"Patient.identifier[{index}].value")


def _only_shown(disclosures: list[dict[str, Any]], shown: set[str]) -> list[dict[str, Any]]:
    """Ledger rows trimmed to the resources actually returned (a page may stop mid-chunk)."""
    trimmed = []
    for row in disclosures:
        resources = [r for r in orjson.loads(row["resources"]) if r in shown]
        if resources:
            trimmed.append({**row, "resources": orjson.dumps(resources).decode()})
    return trimmed


def parse_if_match(value: Any) -> int | None:
    """The version in an ``If-Match`` ETag (``W/"3"``, ``"3"`` or ``3``)."""
    if value in (None, ""):
        return None
    text = str(value).removeprefix("W/").strip('"')
    if not text.isdigit():
        raise FhirError(400, f"If-Match {value!r} is not a version ETag like W/\"3\"", "value")
    return int(text)


def _assign_ids(entries: list[dict[str, Any]]) -> dict[str, str]:
    """Give each POST entry a server id; map its fullUrl (``urn:uuid:...``) to the new reference."""
    targets: dict[str, str] = {}
    for entry in entries:
        resource = entry.get("resource")
        if (entry.get("request") or {}).get("method") == "POST" and isinstance(resource, dict):
            resource["id"] = str(uuid.uuid4())
            if entry.get("fullUrl"):
                targets[entry["fullUrl"]] = f"{resource.get('resourceType')}/{resource['id']}"
    return targets


def _resolve_references(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (targets.get(v, v) if k == "reference" and isinstance(v, str) else _resolve_references(v, targets))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_references(v, targets) for v in value]
    return value
