"""Everything about a person is encrypted at rest (DESIGN §9).

The demo partnership is built into a fresh database (people at every stage,
carers, consents, referrals, an early exit, contingency alerts, deliveries,
audit), then the raw database is searched for every demo person's names, CHI
number, phone and street and their carers' names: in the SQLite file and its
WAL byte by byte, and (on both backends) in every text and binary column.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import LargeBinary, String, Text, inspect, select, text

from gateway.audit.chain import Actor, append, audit_event, read_event, verify
from gateway.audit.ledger import about_patient, disclosure, insert_disclosures
from gateway.cli import main
from gateway.demo import build_demo
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.sharing.break_glass import written
from gateway.store.models import AuditRow, BreakGlassRow, DisclosureRow, ResourceRow, ResourceVersionRow
from gateway.store.repository import now_utc

from .conftest import REPO, free_port

CHI_SYSTEM = "https://fhir.nhs.uk/Id/chi-number"
# DESIGN §9: only the directory is stored in clear (written out here, not taken from the code under test).
DIRECTORY_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location", "Endpoint"})


def _people(gateway: Gateway) -> tuple[int, int, set[str]]:
    """(patients, carers, what names them) read back through the repository, i.e. decrypted."""
    terms: set[str] = set()
    counts = {"Patient": 0, "RelatedPerson": 0}
    with gateway.reading() as session:
        repo = gateway.repository(session)
        for kind in counts:
            for _, stored in repo.search(kind):
                counts[kind] += 1
                person = stored.resource
                for name in person.get("name", []):
                    terms.update(name.get("given", []))
                    terms.add(name.get("family", ""))
                    terms.add(" ".join([*name.get("given", [])[:1], name.get("family", "")]))
                terms.update(i["value"] for i in person.get("identifier", []) if i.get("system") == CHI_SYSTEM)
                terms.update(t["value"] for t in person.get("telecom", []) if t.get("system") == "phone")
                terms.update(line for a in person.get("address", []) for line in a.get("line", []))
    return counts["Patient"], counts["RelatedPerson"], {t for t in terms if t.strip()}


def _directory_text(gateway: Gateway) -> bytes:
    """What is meant to be readable without keys: the directory and the configuration."""
    with gateway.reading() as session:
        bodies = session.scalars(select(ResourceRow.body).where(ResourceRow.type.in_(DIRECTORY_TYPES))).all()
    conf = [p.read_bytes() for p in (REPO / "conf").glob("*.yaml")]
    return b"\n".join([*bodies, *conf])


def _probes(term: str) -> list[bytes]:
    """Byte strings that give the term away. Short names are looked for as they would
    stand in JSON or text, since three or four letters turn up by chance in megabytes
    of ciphertext."""
    raw = term.encode()
    return [raw] if len(raw) >= 5 else [b'"' + raw + b'"', raw + b" ", b" " + raw]


def _column_values(gateway: Gateway) -> Iterator[tuple[str, bytes]]:
    """("table.column", value) for every text and binary value in the database."""
    with gateway.engine.connect() as connection:
        inspector = inspect(connection)
        for table in inspector.get_table_names():
            for column in inspector.get_columns(table):
                if not isinstance(column["type"], (String, Text, LargeBinary)):
                    continue
                query = text(f'SELECT "{column["name"]}" FROM "{table}" WHERE "{column["name"]}" IS NOT NULL')
                for (value,) in connection.execute(query):
                    yield f"{table}.{column['name']}", value if isinstance(value, bytes) else str(value).encode()


def _found(haystack: bytes, terms: set[str]) -> set[str]:
    return {t for t in terms if any(p in haystack for p in _probes(t))}


@pytest.fixture
def demo(settings: Settings, tmp_path: Path) -> Iterator[tuple[Gateway, dict, Path]]:  # type: ignore[type-arg]
    out = tmp_path / "demo"
    summary = build_demo(settings, out, port=free_port())
    gateway = Gateway.start(settings)
    yield gateway, summary, out
    gateway.close()


def test_nothing_naming_a_demo_person_is_stored_in_clear(demo, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    gateway, summary, _ = demo
    patients, carers, terms = _people(gateway)
    assert patients == summary["people"] and carers >= 5  # five demo people have a carer
    stages = summary["stages"]
    assert stages, "the demo ran no pathway"
    # Staff and organisations share a few surnames with the people; those are in the
    # directory on purpose. CHI numbers never are.
    clear_on_purpose = _found(_directory_text(gateway), terms)
    searched = terms - clear_on_purpose
    chis = {t for t in terms if t.isdigit() and len(t) == 10}
    assert len(chis) == patients and chis <= searched
    assert len(searched) > 3 * patients

    in_columns: dict[str, set[str]] = {}
    for where, value in _column_values(gateway):
        if hit := _found(value, searched):
            in_columns.setdefault(where, set()).update(hit)
    assert in_columns == {}

    if settings.database_url.startswith("sqlite:///"):
        database = Path(settings.database_url.removeprefix("sqlite:///"))
        files = [p for p in (database, Path(f"{database}-wal")) if p.exists()]
        assert sum(p.stat().st_size for p in files) > 100_000  # the demo is in there
        assert {p.name: _found(p.read_bytes(), searched) for p in files} == {p.name: set() for p in files}


def test_every_person_type_is_sealed_and_the_directory_is_not(demo) -> None:  # type: ignore[no-untyped-def]
    gateway, _, _ = demo
    with gateway.reading() as session:
        rows = session.execute(select(ResourceVersionRow.type, ResourceVersionRow.key_id)).all()
    clear = {t for t, key in rows if key is None}
    sealed = {t for t, key in rows if key is not None}
    assert clear <= DIRECTORY_TYPES and {"Organization"} <= clear
    assert {"Patient", "RelatedPerson", "Consent", "Task", "EpisodeOfCare", "Communication"} <= sealed


def test_key_and_credential_files_are_owner_only(demo, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    _, summary, out = demo
    secrets = [settings.secrets_dir / "data-keys.json", settings.secrets_dir / "gateway-signing-key.pem"]
    credentials = [Path(p) for p in summary["clients"].values()]
    assert len(credentials) >= 5
    modes = {str(p): stat.S_IMODE(p.stat().st_mode) for p in [*secrets, *credentials]}
    assert modes == {str(p): 0o600 for p in [*secrets, *credentials]}
    assert stat.S_IMODE(settings.secrets_dir.stat().st_mode) == 0o700


def test_keys_new_writes_its_credentials_owner_only_even_over_an_open_file(gateway: Gateway, settings: Settings, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATHWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(settings.secrets_dir))
    path = tmp_path / "creds" / "portal.json"
    path.parent.mkdir()
    path.write_text("left by someone else")
    path.chmod(0o644)
    assert main(["keys", "new", "portal", "--org", "https://pathway.scot/Id/partner|carers-centre", "--scopes", "system/*.read", "--out", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert orjson.loads(path.read_bytes())["client_id"] == "portal"


def _audited_world(gateway: Gateway) -> str:
    """A person with a resource, audit entries and a ledger row about them; returns their reference."""
    with gateway.transaction() as session:
        patient = gateway.repository(session).create({"resourceType": "Patient", "name": [{"family": "Scrymgeour", "given": ["Leanne"]}]}, "org|a")
        reference = patient.reference
        actor = Actor("social-work", "org|a", acting_for=reference)
        for n in range(3):
            append(session, audit_event("read", actor, patient=reference, entities=[reference], detail=f"read {n} of Leanne Scrymgeour"), patient=reference, client_id="social-work")
        append(session, audit_event("read", actor, detail="someone else"), client_id="social-work")
        insert_disclosures(session, [disclosure(at=now_utc(), patient=reference, recipient="org|b", acting_for=None, client_id="social-work", purpose="TREAT", channel="api", resources=[reference], agreements=[], consents=[], break_glass=None)])
    return reference


def test_audit_rows_are_sealed_and_found_by_blind_index(gateway: Gateway) -> None:
    reference = _audited_world(gateway)
    with gateway.reading() as session:
        rows = session.scalars(select(AuditRow).order_by(AuditRow.seq)).all()
        assert not any(b"Scrymgeour" in r.body or reference.encode() in r.body for r in rows)
        assert reference not in {r.patient for r in rows}
        about = session.scalars(select(AuditRow).where(AuditRow.patient == gateway.keyring.blind(reference))).all()
        assert [read_event(session, r)["outcomeDesc"] for r in about] == [f"read {n} of Leanne Scrymgeour" for n in range(3)]
        ledger = session.scalars(select(DisclosureRow).where(about_patient(session, reference))).all()
        assert [orjson.loads(r.resources) for r in ledger] == [[reference]]
        assert session.scalar(select(DisclosureRow.patient)) != reference
        assert verify(session).ok


def test_a_changed_sealed_audit_entry_is_found(gateway: Gateway) -> None:
    _audited_world(gateway)
    with gateway.transaction() as session:
        row = session.get(AuditRow, 2)
        row.body = row.body[:-1] + bytes([row.body[-1] ^ 1])
    with gateway.reading() as session:
        report = verify(session)
    assert report.broken == "audit entry 2 was changed: its sealed content does not open"


def test_rotate_data_reseals_everything_and_the_chain_still_verifies(gateway: Gateway, settings: Settings, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    reference = _audited_world(gateway)
    with gateway.reading() as session:
        entries = session.query(AuditRow).count()
        hashes = session.scalars(select(AuditRow.hash).order_by(AuditRow.seq)).all()
    old_key = gateway.keyring.active
    monkeypatch.setenv("PATHWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(settings.secrets_dir))
    assert main(["keys", "rotate-data"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    # One Patient (current row and its one version) and every audit entry.
    assert report["by_kind"] == {"resources": 2, "audit_entries": entries, "audit_patients_blinded": 0, "quarantine": 0, "match_review": 0, "break_glass": 0}
    rotated = Gateway.start(settings)
    try:
        assert rotated.keyring.active == report["active_key"] != old_key
        with rotated.reading() as session:
            assert {rotated.keyring.sealed_with(b) for b in session.scalars(select(AuditRow.body))} == {rotated.keyring.active}
            assert session.scalars(select(AuditRow.hash).order_by(AuditRow.seq)).all() == hashes
            assert verify(session, rotated.signing_key).ok
            assert rotated.repository(session).read("Patient", reference.split("/")[1]).resource["name"][0]["family"] == "Scrymgeour"
    finally:
        rotated.close()


def test_rotate_data_seals_rows_left_in_clear_by_older_versions(gateway: Gateway, settings: Settings, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    reference = _audited_world(gateway)
    # As an older gateway left them: a person resource in clear, an audit entry in clear
    # with its patient column naming the reference.
    with gateway.transaction() as session:
        patient_id = reference.split("/")[1]
        plain = gateway.repository(session).read("Patient", patient_id).raw
        session.execute(ResourceRow.__table__.update().where(ResourceRow.id == patient_id).values(key_id=None, body=plain))
        first = session.get(AuditRow, 1)
        first.body, first.patient = orjson.dumps(read_event(session, first), option=orjson.OPT_SORT_KEYS), reference
        moment = now_utc()
        session.add(BreakGlassRow(id="bg-1", client_id="duty", organization="o|1", user="J Smith", patient=reference, basis="vital-interests",
                                  reason="Mr Scrymgeour found unconscious at home", started=moment, ends=moment))
    monkeypatch.setenv("PATHWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(settings.secrets_dir))
    assert main(["keys", "rotate-data"]) == 0
    report = orjson.loads(capsys.readouterr().out)["by_kind"]
    assert (report["audit_patients_blinded"], report["break_glass"]) == (1, 1)
    rotated = Gateway.start(settings)
    try:
        with rotated.reading() as session:
            assert session.get(ResourceRow, ("Patient", patient_id)).key_id == rotated.keyring.active
            grant = session.get(BreakGlassRow, "bg-1")
            assert "Scrymgeour" not in grant.reason and written(session, grant)[0] == "Mr Scrymgeour found unconscious at home"
            first = session.get(AuditRow, 1)
            assert not first.body.startswith(b"{") and first.patient == rotated.keyring.blind(reference)
            assert verify(session).ok
    finally:
        rotated.close()


def test_engines_keep_parameters_out_of_errors(gateway: Gateway) -> None:
    with pytest.raises(Exception) as raised, gateway.engine.connect() as connection:
        connection.execute(text("SELECT * FROM no_such_table WHERE x = :secret"), {"secret": "Scrymgeour 0101800002"})
    assert "Scrymgeour" not in str(raised.value) and "0101800002" not in str(raised.value)
    assert "hidden due to hide_parameters" in str(raised.value)
