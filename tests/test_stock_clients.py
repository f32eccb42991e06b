"""Stock FHIR clients against a live gateway, used the way a partner would use them.

A partner registers a key, signs a client assertion (joserfc here, no Pathway code), trades it
for a bearer token and then calls ``/fhir`` with fhirpy or fhirclient alone. Every body either
client receives is recorded and must parse with fhirclient's strict models and with
fhir.resources (R4B): a body that breaks a strict client is a gateway bug.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class
from fhirclient.models.bundle import Bundle
from fhirclient.models.condition import Condition
from fhirclient.models.fhirelementfactory import FHIRElementFactory
from fhirclient.models.medicationstatement import MedicationStatement
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError, MultipleResourcesFound, OperationOutcome, ResourceNotFound
from joserfc import jwt
from joserfc.jwk import ECKey

from gateway.auth.clients import new_client_key, register_client
from gateway.auth.tokens import ASSERTION_TYPE
from gateway.runtime import Gateway
from mappings.identifiers import CHI_SYSTEM

from .conftest import HSCP, LiveServer
from .test_fhir_api import patient
from .test_sharing import FACILITY, partnership, person  # noqa: F401  (fixtures: Ann's record and her consent)

PEER_RECOVERY = "https://pathway.scot/Id/partner|lochee-peer-recovery"
READ_WRITE = ["system/*.read", "system/*.write"]
TIMEOUT = 10.0


class ReceivedBodies:
    """A requests response hook that keeps every JSON body a stock client receives."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.content and "json" in response.headers.get("content-type", ""):
            self.bodies.append(response.json())
        return response

    def assert_all_parse_strictly(self) -> None:
        """Each body is a FHIR resource that fhirclient (strict) and fhir.resources R4B accept."""
        assert self.bodies, "no FHIR body was received"
        for body in self.bodies:
            FHIRElementFactory.instantiate(body["resourceType"], body)
            get_fhir_model_class(body["resourceType"]).model_validate(body)


@pytest.fixture
def received() -> ReceivedBodies:
    return ReceivedBodies()


def assertion(client_id: str, token_url: str, key_pem: str, kid: str) -> str:
    """A SMART Backend Services client assertion, signed ES384 as a partner would sign it."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 120, "iat": now, "jti": uuid.uuid4().hex}
    return jwt.encode({"alg": "ES384", "kid": kid, "typ": "JWT"}, claims, ECKey.import_key(key_pem), algorithms=["ES384"])


def fetch_token(token_url: str, client_id: str, key_pem: str, kid: str, scope: str | None = None) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(client_id, token_url, key_pem, kid),
    }
    if scope:
        form["scope"] = scope
    return httpx.post(token_url, data=form, timeout=TIMEOUT)


Bearer = Callable[..., str]


@pytest.fixture
def bearer(gateway: Gateway, server: LiveServer) -> Bearer:
    """Register a partner client with a fresh key and return an access token for it."""

    def issue(client_id: str, organization: str = HSCP, scopes: list[str] = READ_WRITE) -> str:
        key = new_client_key()
        with gateway.transaction() as session:
            register_client(session, client_id, organization, scopes, public_keys=[key.public_jwk])
        response = fetch_token(f"{server.url}/oauth/token", client_id, key.private_pem, key.kid)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    return issue


FhirpyFactory = Callable[..., SyncFHIRClient]


@pytest.fixture
def fhirpy_client(server: LiveServer, received: ReceivedBodies) -> FhirpyFactory:
    """A fhirpy client on the gateway's FHIR base, recording every body it receives."""

    def make(token: str, **headers: str) -> SyncFHIRClient:
        return SyncFHIRClient(
            f"{server.url}/fhir",
            authorization=f"Bearer {token}",
            extra_headers=headers or None,
            requests_config={"timeout": TIMEOUT, "hooks": {"response": [received]}},
        )

    return make


@pytest.fixture
def fhirclient_server(server: LiveServer, received: ReceivedBodies) -> Callable[[str], FHIRServer]:
    """A fhirclient server object whose requests session carries the bearer token."""

    def make(token: str) -> FHIRServer:
        fhir = FHIRServer(None, base_uri=f"{server.url}/fhir")
        fhir.session.headers["Authorization"] = f"Bearer {token}"
        fhir.session.hooks["response"].append(received)
        return fhir

    return make


def observation_body(patient_id: str, when: str, text: str = "Alcohol units per week") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
    }


def modes(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    """(search mode, Type/id) of each entry of a searchset Bundle."""
    return [(e["search"]["mode"], f"{e['resource']['resourceType']}/{e['resource'].get('id')}") for e in bundle.get("entry", [])]


# --- discovery and tokens ---------------------------------------------------------------


def test_smart_configuration_under_the_fhir_base_leads_to_a_v2_scoped_token(gateway, server, fhirpy_client):  # type: ignore[no-untyped-def]
    config = httpx.get(f"{server.url}/fhir/.well-known/smart-configuration", timeout=TIMEOUT)
    assert config.status_code == 200, config.text
    smart = config.json()
    assert smart["token_endpoint"] == f"{server.url}/oauth/token"
    assert "client-confidential-asymmetric" in smart["capabilities"]
    assert "private_key_jwt" in smart["token_endpoint_auth_methods_supported"]
    assert {"ES384", "RS384"} <= set(smart["token_endpoint_auth_signing_alg_values_supported"])
    assert "system/*.read" in smart["scopes_supported"]  # what clients hold, and the v2 form
    assert any(scope.endswith(".rs") for scope in smart["scopes_supported"])

    key = new_client_key()
    with gateway.transaction() as session:
        register_client(session, "v2-partner", HSCP, READ_WRITE, public_keys=[key.public_jwk])
    response = fetch_token(smart["token_endpoint"], "v2-partner", key.private_pem, key.kid, scope="system/Patient.rs")
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["scope"].split() == ["system/Patient.rs"]
    reader = fhirpy_client(token["access_token"])
    assert reader.resources("Patient").fetch() == []
    with pytest.raises(ForbiddenError):
        reader.resource("Patient", **patient()).save()


# --- fhirpy -------------------------------------------------------------------------------


def test_get_or_create_twice_makes_one_patient(bearer, fhirpy_client, received):  # type: ignore[no-untyped-def]
    client = fhirpy_client(bearer("social-work"))
    ann = patient()
    chi = ann["identifier"][0]["value"]
    by_chi = client.resources("Patient").search(identifier=f"{CHI_SYSTEM}|{chi}")

    first, created = by_chi.get_or_create(client.resource("Patient", **ann))
    again, created_again = by_chi.get_or_create(client.resource("Patient", **ann))
    assert created and not created_again
    assert again.id == first.id

    # The header form (HAPI's generic client, fhirclient) finds the same Patient.
    conditional = fhirpy_client(bearer("social-work-retry"), **{"If-None-Exist": f"identifier={CHI_SYSTEM}|{chi}"})
    retried = conditional.resource("Patient", **ann)
    retried.save()
    assert retried.id == first.id
    assert [p.id for p in by_chi.fetch_all()] == [first.id]

    # Several matches: 412, which fhirpy reports as MultipleResourcesFound.
    client.resource("Patient", **patient(serial=1)).save()
    with pytest.raises(MultipleResourcesFound):
        client.resources("Patient").search(family="Reid").get_or_create(client.resource("Patient", **patient(serial=2)))
    received.assert_all_parse_strictly()


@pytest.fixture
def ann_record(bearer, fhirpy_client) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Ann, her sister as a RelatedPerson and three observations whose dates are not in the
    order they were recorded, all written through fhirpy by the HSCP."""
    token = bearer("social-work")
    client = fhirpy_client(token)
    ann = client.resource("Patient", **patient())
    ann.save()
    sister = client.resource("RelatedPerson", patient={"reference": f"Patient/{ann.id}"}, name=[{"given": ["Jean"], "family": "Reid"}])
    sister.save()
    observations = []
    for when in ("2024-03-01", "2024-01-15", "2024-02-10"):
        observation = client.resource("Observation", **observation_body(ann.id, when))
        observation.save()
        observations.append(observation.id)
    return {"client": client, "token": token, "patient": ann.id, "sister": sister.id, "observations": observations}


def test_search_with_include_revinclude_and_sort(ann_record, received):  # type: ignore[no-untyped-def]
    client, ann = ann_record["client"], ann_record["patient"]
    in_order = ann_record["observations"]
    by_date = [in_order[1], in_order[2], in_order[0]]
    observations = client.resources("Observation").search(subject=f"Patient/{ann}")

    assert [o.id for o in observations.sort("date").fetch()] == by_date
    assert [o.id for o in observations.sort("-date").fetch()] == by_date[::-1]
    assert [o.id for o in observations.sort("_lastUpdated").fetch()] == in_order
    assert [o.id for o in observations.sort("-_lastUpdated").fetch()] == in_order[::-1]

    with_subject = observations.sort("date").include("Observation", "subject").fetch_raw()
    assert modes(with_subject) == [("match", f"Observation/{i}") for i in by_date] + [("include", f"Patient/{ann}")]

    everything = (
        client.resources("Patient").search(_id=ann).revinclude("Observation", "subject").revinclude("RelatedPerson", "patient").fetch_raw()
    )
    found = modes(everything)
    assert found[0] == ("match", f"Patient/{ann}")
    assert sorted(found[1:]) == sorted(
        [("include", f"Observation/{i}") for i in in_order] + [("include", f"RelatedPerson/{ann_record['sister']}")]
    )
    assert observations.count() == 3  # fhirpy's count() reads Bundle.total

    # POST {type}/_search with a form body (HAPI's generic client does this) is the same search
    posted = requests.post(
        f"{client.url}/Observation/_search",
        data={"subject": f"Patient/{ann}", "_sort": "date"},
        headers={"Authorization": f"Bearer {ann_record['token']}", "Accept": "application/fhir+json"},
        hooks={"response": [received]},
        timeout=TIMEOUT,
    )
    assert posted.status_code == 200, posted.text
    assert [e["resource"]["id"] for e in posted.json()["entry"]] == by_date
    received.assert_all_parse_strictly()


def test_fetch_all_over_pages_while_another_thread_creates(ann_record, bearer, fhirpy_client, received):  # type: ignore[no-untyped-def]
    """60 observations exist, pages of 10, and 3 more are written between every two pages (20 in
    all): fetch_all sees each observation that existed once, and none twice."""
    client, ann = ann_record["client"], ann_record["patient"]
    existing = list(ann_record["observations"])
    for day in range(57):
        observation = client.resource("Observation", **observation_body(ann, f"2023-{1 + day // 28:02d}-{1 + day % 28:02d}"))
        observation.save()
        existing.append(observation.id)

    writer_client = fhirpy_client(bearer("social-work-writer"))
    page_read: queue.Queue[None] = queue.Queue()
    writes_done: queue.Queue[None] = queue.Queue()
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        while not stop.is_set():
            try:
                page_read.get(timeout=0.1)
            except queue.Empty:
                continue
            for _ in range(min(3, 20 - len(written))):
                observation = writer_client.resource("Observation", **observation_body(ann, "2024-06-01", "Written during paging"))
                observation.save()
                written.append(observation.id)
            writes_done.put(None)

    pages = 0

    def between_pages(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        nonlocal pages
        if response.request.method == "GET":
            pages += 1
            page_read.put(None)
            writes_done.get(timeout=TIMEOUT)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        reader = client.resources("Observation").search(subject=f"Patient/{ann}").limit(10)
        reader.client.requests_config["hooks"]["response"].append(between_pages)
        seen = [o.id for o in reader.fetch_all()]
    finally:
        stop.set()
        thread.join(timeout=TIMEOUT)
    assert len(written) == 20 and pages >= 7
    assert len(seen) == len(set(seen)), "an observation came back twice"
    assert set(existing) <= set(seen), f"{len(set(existing) - set(seen))} observations that existed were skipped"
    received.assert_all_parse_strictly()


def test_versioned_update_refuses_a_stale_version_then_delete(bearer, fhirpy_client, received):  # type: ignore[no-untyped-def]
    token = bearer("social-work")
    client = fhirpy_client(token)
    ann = client.resource("Patient", **patient())
    ann.save()
    observation = client.resource("Observation", **observation_body(ann.id, "2024-01-01"))
    observation.save()
    assert observation["meta"]["versionId"] == "1"

    current = fhirpy_client(token, **{"If-Match": 'W/"1"'})
    changed = current.resource("Observation", **{**observation, "valueQuantity": {"value": 14, "unit": "units/week"}})
    changed.save()
    assert changed["meta"]["versionId"] == "2"

    stale = current.resource("Observation", **{**observation, "valueQuantity": {"value": 40, "unit": "units/week"}})
    with pytest.raises(MultipleResourcesFound, match="not current"):  # fhirpy's name for a 412
        stale.save()
    latest = client.reference("Observation", observation.id).to_resource()
    assert latest["meta"]["versionId"] == "2" and latest["valueQuantity"]["value"] == 14

    latest.delete()
    with pytest.raises(ResourceNotFound):
        client.reference("Observation", observation.id).to_resource()
    received.assert_all_parse_strictly()


def test_bodies_of_the_wrong_types_are_refused_not_stored(bearer, fhirpy_client, received):  # type: ignore[no-untyped-def]
    client = fhirpy_client(bearer("social-work"))
    for element, value in (("active", "yes"), ("gender", "bogus"), ("multipleBirthInteger", "2")):
        with pytest.raises(OperationOutcome, match=element):
            client.resource("Patient", **{**patient(), element: value}).save()
    assert client.resources("Patient").fetch() == []
    received.assert_all_parse_strictly()


# --- fhirclient ---------------------------------------------------------------------------


def _entries(bundles: Iterator[Bundle]) -> list[tuple[str, str]]:
    return [(e.search.mode, f"{e.resource.resource_type}/{e.resource.id}") for b in bundles for e in b.entry or []]


def test_fhirclient_reads_and_searches_what_the_facility_may_see(person, bearer, fhirclient_server, received):  # type: ignore[no-untyped-def]
    """The facility sees Ann and her prescribing but not her mental-health entry: searches say
    "some information withheld" in an entry marked search.mode = outcome, and totals do not count
    what is withheld."""
    facility = fhirclient_server(bearer("facility-stock", FACILITY, ["system/*.read"]))
    ann_id = person["patient"].split("/")[1]
    ann = Patient.read(ann_id, facility)
    assert ann.name[0].family == "Reid" and ann.birthDate.isostring == "1984-05-17"

    medications = _entries(MedicationStatement.where({"patient": ann_id}).perform_iter(facility))
    assert medications == [("match", f"MedicationStatement/{person['methadone']}")]

    conditions = _entries(Condition.where({"patient": ann_id}).perform_iter(facility))
    assert [mode for mode, _ in conditions] == ["outcome"] and conditions[0][1].startswith("OperationOutcome/")

    search = Patient.where({"_id": ann_id}).include("subject", MedicationStatement, reverse=True).include("subject", Condition, reverse=True)
    around_ann = _entries(search.perform_iter(facility))
    assert [e for e in around_ann if e[0] != "outcome"] == [
        ("match", f"Patient/{ann_id}"),
        ("include", f"MedicationStatement/{person['methadone']}"),
    ]
    assert [mode for mode, _ in around_ann].count("outcome") == 1

    assert Bundle.read_from(f"Condition?patient={ann_id}&_summary=count", facility).total == 0
    assert Bundle.read_from(f"MedicationStatement?patient={ann_id}&_summary=count", facility).total == 1
    received.assert_all_parse_strictly()


def test_fhirclient_stranger_learns_nothing_through_includes(person, bearer, fhirclient_server, received):  # type: ignore[no-untyped-def]
    """A partner that may see nothing of Ann gets what it would get if she did not exist."""
    stranger = fhirclient_server(bearer("peer-recovery-stock", PEER_RECOVERY, ["system/*.read"]))
    ann_id = person["patient"].split("/")[1]
    search = Patient.where({"_id": ann_id}).include("subject", Condition, reverse=True)
    assert _entries(search.perform_iter(stranger)) == []
    assert _entries(Patient.where({"_id": "not-a-patient"}).include("subject", Condition, reverse=True).perform_iter(stranger)) == []
    assert Bundle.read_from(f"Condition?patient={ann_id}&_summary=count", stranger).total == 0
    received.assert_all_parse_strictly()
