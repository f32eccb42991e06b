"""FHIR interactions as plain functions over the store: what the routes call.

Each interaction runs in one transaction together with its AuditEvent, so a
change is never stored without its audit entry, nor audited without being
stored. Refused or failed interactions are audited too, in their own
transaction after the rollback.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonpatch
import orjson
from sqlalchemy.orm import Session

from gateway.audit.chain import Actor, append, audit_event
from gateway.audit.ledger import insert_disclosures
from gateway.fhir import bundles, transactions
from gateway.fhir.access import DIRECTORY_TYPES, AccessPolicy, Caller
from gateway.fhir.capability import SUPPORTED_TYPES, search_param_types
from gateway.fhir.conditional import Match, Written, one_match
from gateway.fhir.outcomes import FhirError
from gateway.fhir.search import MAX_INCLUDED, SearchQuery, encode_cursor, include_targets, mandatory_elements, matches, parse_search, subsetted
from gateway.fhir.validation import validate_resource
from gateway.runtime import Gateway
from gateway.sharing.skeleton import SKELETON_ELEMENTS, is_skeleton, matches_skeleton, over_stored, visible_matches
from gateway.store.indexing import elements_read, patient_of
from gateway.store.repository import Cursor, NotFound, Repository, Stored, VersionConflict
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
class Page:
    """Resources a caller may see of a search, whether some were withheld, the cursor
    after the last (when there are more) and the disclosures to record."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    withheld: bool = False
    next: Cursor | None = None
    disclosures: list[dict[str, Any]] = field(default_factory=list)


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
        if current is not None and not current.deleted and current.custodian != ctx.caller.organization and current.type in SKELETON_ELEMENTS:
            resource = self._over_hidden(ctx, current, resource)
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

    def _over_hidden(self, ctx: WriteContext, current: Stored, resource: dict[str, Any]) -> dict[str, Any]:
        """A participant's update of a workflow record it sees only as a skeleton (or of a body
        marked SUBSETTED) keeps the elements outside the skeleton as stored."""
        if is_skeleton(resource) or is_skeleton(self.policy.visible(ctx.session, ctx.caller, [current]).resources[0] or {}):
            return over_stored(current.resource, resource)
        return resource

    def answer(self, ctx: WriteContext, stored: Stored, status: int) -> Written:
        """A write's answer to a caller that does not hold the record: what it may see of the
        version now (a full view recorded as a disclosure, a skeleton, or nothing)."""
        if stored.custodian == ctx.caller.organization and ctx.caller.acting_for is None:
            return Written(stored, status)
        visible = self.policy.visible(ctx.session, ctx.caller, [stored])
        insert_disclosures(ctx.session, visible.disclosures)
        return Written(stored, status, visible.resources[0], hidden=visible.resources[0] is None)

    def put_in(self, ctx: WriteContext, resource: dict[str, Any], if_match: int | None) -> Stored:
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

    def delete_in(self, ctx: WriteContext, resource_type: str, resource_id: str, if_match: int | None) -> Stored | None:
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
        """Create a resource under an id Pathway assigns."""
        return self.conditional_create(caller, resource, resource_type, None).stored

    def conditional_create(self, caller: Caller, resource: Any, resource_type: str, if_none_exist: str | None) -> Written:
        """Create, unless the search ``if_none_exist`` finds one resource the caller may see:
        then that one is the answer (200); several are 412 (see gateway.fhir.conditional)."""
        resource = validate_resource(resource, resource_type)
        resource.pop("id", None)

        def work(session: Session, repo: Repository) -> Written:
            ctx = WriteContext(session, repo, caller, self)
            match = one_match(session, repo, self.policy, caller, resource_type, if_none_exist) if if_none_exist else None
            if match is not None:
                self.audit_found(ctx, match, disclosed=True)
                return Written(match.stored, 200, match.resource, found=True)
            stored = self.write(ctx, resource)
            self._audit_writes(ctx, "create")
            return Written(stored, 201)

        return self._run(caller, "create", resource_type, work)

    def audit_found(self, ctx: WriteContext, match: Match, *, disclosed: bool) -> None:
        """Audit a conditional interaction's find (a search) and, when its body is
        returned, the disclosures that makes."""
        event = self._event(ctx.caller, "search-type", [f"{match.stored.reference}/_history/{match.stored.version_id}"], match.stored.patient)
        append(ctx.session, event, patient=match.stored.patient, client_id=ctx.caller.principal.client_id)
        if disclosed:
            insert_disclosures(ctx.session, match.disclosures)

    def update(self, caller: Caller, resource: Any, resource_type: str, resource_id: str, if_match: int | None) -> Written:
        """Update (or, except for a Patient, create) the resource with this id; the answer
        carries what the caller may see of the version stored."""
        resource = validate_resource(resource, resource_type)
        if resource.get("id") != resource_id:
            raise FhirError(400, f"resource id {resource.get('id')!r} does not match the URL id {resource_id!r}", "invalid", f"{resource_type}.id")

        def work(session: Session, repo: Repository) -> Written:
            ctx = WriteContext(session, repo, caller, self)
            stored = self.put_in(ctx, resource, if_match)
            self._audit_writes(ctx, "update")
            return self.answer(ctx, stored, 201 if stored.version_id == 1 else 200)

        return self._run(caller, "update", f"{resource_type}/{resource_id}", work)

    def conditional_update(self, caller: Caller, resource: Any, resource_type: str, condition: str, if_match: int | None) -> Written:
        """``PUT {type}?condition``: update the one resource the caller may see that the search
        finds; create when there is none; 412 when there are several."""
        resource = validate_resource(resource, resource_type)

        def work(session: Session, repo: Repository) -> Written:
            ctx = WriteContext(session, repo, caller, self)
            written = self.conditional_put_in(ctx, resource, condition, if_match)
            self._audit_writes(ctx, "update" if written.status == 200 else "create")
            return self.answer(ctx, written.stored, written.status)

        return self._run(caller, "update", resource_type, work)

    def conditional_put_in(self, ctx: WriteContext, resource: dict[str, Any], condition: str, if_match: int | None) -> Written:
        """A conditional update within ``ctx``'s transaction. A new Patient gets an id from
        Pathway, whatever the body says; other new resources keep the id they carry."""
        resource_type = resource["resourceType"]
        match = one_match(ctx.session, ctx.repo, self.policy, ctx.caller, resource_type, condition)
        if match is not None:
            if resource.get("id", match.stored.id) != match.stored.id:
                raise FhirError(400, f"resource id {resource['id']!r} is not that of the {resource_type} the condition finds", "invalid", f"{resource_type}.id")
            resource["id"] = match.stored.id
            return Written(self.put_in(ctx, resource, if_match), 200)
        if resource_type == "Patient" or "id" not in resource:
            resource.pop("id", None)
            return Written(self.write(ctx, resource), 201)
        stored = self.put_in(ctx, resource, if_match)
        return Written(stored, 201 if stored.version_id == 1 else 200)

    def patch(self, caller: Caller, resource_type: str, resource_id: str, operations: Any, if_match: int | None) -> Written:
        if not isinstance(operations, list):
            raise FhirError(400, "PATCH body must be a JSON Patch array (application/json-patch+json)", "structure")

        def work(session: Session, repo: Repository) -> Written:
            current, _ = self._read_visible(session, repo, caller, resource_type, resource_id)
            if if_match is not None and if_match != int(current["meta"]["versionId"]):
                raise FhirError(412, f"{resource_type}/{resource_id}: version {if_match} is not current (current is {current['meta']['versionId']})", "conflict")
            try:
                patched = jsonpatch.apply_patch(current, operations)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
                raise FhirError(422, f"JSON Patch could not be applied: {exc}", "processing") from None
            if patched.get("id") != resource_id or patched.get("resourceType") != resource_type:
                raise FhirError(422, "JSON Patch may not change resourceType or id", "processing")
            patched = validate_resource(patched, resource_type)
            ctx = WriteContext(session, repo, caller, self)
            stored = self.write(ctx, patched, if_match=int(current["meta"]["versionId"]))
            self._audit_writes(ctx, "patch")
            return self.answer(ctx, stored, 200)

        return self._run(caller, "patch", f"{resource_type}/{resource_id}", work)

    def delete(self, caller: Caller, resource_type: str, resource_id: str, if_match: int | None) -> None:
        def work(session: Session, repo: Repository) -> None:
            ctx = WriteContext(session, repo, caller, self)
            if self.delete_in(ctx, resource_type, resource_id, if_match) is not None:
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

    async def search(self, caller: Caller, resource_type: str, params: list[tuple[str, str]], base: str, strict: bool = False) -> dict[str, Any]:
        """A searchset Bundle of what the caller may see: matches, then what they include."""
        self._check_type(resource_type)
        query = parse_search(resource_type, params, strict)

        def work(session: Session, repo: Repository) -> Seen:
            counted = self._count_visible(session, caller, self._matches(repo, caller, resource_type, query), query) if query.wants_total else None
            page = Page() if query.summary_count else self._page(session, caller, self._matches(repo, caller, resource_type, query), query)
            included = self._included(session, repo, caller, resource_type, query, page.resources)
            shown = page.resources + included.resources
            matches = [subsetted(r, query.elements, mandatory_elements(resource_type)) for r in page.resources] if query.elements else page.resources
            next_page = [("_cursor", encode_cursor(page.next))] if page.next is not None else None
            withheld = page.withheld or included.withheld or (counted is not None and counted[1])
            total = counted[0] if counted is not None else None
            bundle = bundles.searchset(base, resource_type, matches, query.applied, next_page, withheld, included=included.resources, total=total)
            patients = {patient_of(r) for r in shown} - {None}
            return Seen(
                bundle,
                [f"{r['resourceType']}/{r['id']}" for r in shown],
                next(iter(patients)) if len(patients) == 1 else query.patient,
                page.disclosures + included.disclosures,
                resource_type not in DIRECTORY_TYPES or any(r["resourceType"] not in DIRECTORY_TYPES for r in shown),
            )

        return await self._read(caller, "search-type", resource_type, work)

    def _matches(self, repo: Repository, caller: Caller, resource_type: str, query: SearchQuery) -> Iterator[tuple[Cursor, Stored]]:
        return matches(repo, resource_type, query, self.policy.search_custodians(caller, resource_type))

    def _count_visible(self, session: Session, caller: Caller, rows: Iterator[tuple[Cursor, Stored]], query: SearchQuery, chunk: int = 200) -> tuple[int, bool]:
        """How many of the rows the caller may see (a total never counts what it may not), and
        whether the policy would warn that something was withheld."""
        count, withheld = 0, False
        while batch := [s for _, s in islice(rows, chunk)]:
            visible = visible_matches(self.policy, session, caller, batch, query)
            count += sum(r is not None for r in visible.resources)
            withheld = withheld or visible.withheld
        return count, withheld

    def _included(
        self, session: Session, repo: Repository, caller: Caller, resource_type: str, query: SearchQuery, matches: list[dict[str, Any]]
    ) -> Page:
        """What ``_include`` and ``_revinclude`` add to the matches, through the policy like them,
        each resource once (at most MAX_INCLUDED)."""
        known = {f"{r['resourceType']}/{r['id']}" for r in matches}
        wanted: list[Stored] = []
        read: list[frozenset[str]] = []  # what the search that found each one read (a _revinclude's parameter)

        def add(stored: Stored | None, by: frozenset[str] = frozenset()) -> None:
            if stored is not None and not stored.deleted and stored.reference not in known and len(wanted) < MAX_INCLUDED:
                known.add(stored.reference)
                wanted.append(stored)
                read.append(by)

        for include in query.includes:
            names = [n for n, t in search_param_types(resource_type).items() if t == "reference"] if include.param == "*" else [include.param]
            for resource in matches:
                for reference in (ref for name in names for ref in include_targets(resource, name, include.target)):
                    if reference not in known:
                        add(repo.current(*reference.split("/")))
        targets = [f"{r['resourceType']}/{r['id']}" for r in matches]
        for include in query.revincludes if targets else ():
            rows = repo.search(include.source, [(include.param, targets)], custodians=self.policy.search_custodians(caller, include.source))
            for _, stored in islice(rows, MAX_INCLUDED):
                add(stored, elements_read(include.param))
        if not wanted:
            return Page()
        visible = self.policy.visible(session, caller, wanted)
        shown = [r for stored, r, by in zip(wanted, visible.resources, read) if matches_skeleton(stored, r, by)]
        return Page(shown, visible.withheld, None, visible.disclosures)

    def _page(self, session: Session, caller: Caller, rows: Iterator[tuple[Cursor, Stored]], query: SearchQuery) -> Page:
        """Fill a page with what the caller may see, checking rows in chunks; ``next`` is the
        cursor of its last row when the caller may see more after it."""
        page, count = Page(), query.count
        if count == 0:
            return page
        chunk: list[tuple[Cursor, Stored]] = []
        last: Cursor | None = None

        def flush() -> bool:
            """Add the chunk's visible rows; True when a visible row is left over (there is a next page)."""
            nonlocal last
            visible = visible_matches(self.policy, session, caller, [s for _, s in chunk], query)
            page.withheld = page.withheld or visible.withheld
            shown: set[str] = set()
            more = False
            for (cursor, stored), resource in zip(chunk, visible.resources):
                if resource is None:
                    continue
                if len(page.resources) == count:
                    more = True
                    break
                page.resources.append(resource)
                last = cursor
                shown.add(f"{stored.reference}/_history/{stored.version_id}")
            page.disclosures.extend(_only_shown(visible.disclosures, shown))
            chunk.clear()
            return more

        for item in rows:
            chunk.append(item)
            if len(chunk) >= count + 1 and flush():
                page.next = last
                return page
        if chunk and flush():
            page.next = last
        return page

    # --- transactions --------------------------------------------------------------

    def transaction(self, caller: Caller, bundle: Any, base: str) -> dict[str, Any]:
        """Apply a transaction Bundle all-or-nothing (see gateway.fhir.transactions)."""
        entries = transactions.entries_of(bundle)

        def work(session: Session, repo: Repository) -> dict[str, Any]:
            ctx = WriteContext(session, repo, caller, self)
            responses = transactions.apply(self, ctx, entries)
            self._audit_writes(ctx, "transaction")
            return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "transaction-response", "entry": responses}

        return self._run(caller, "transaction", None, work)


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
