"""The versioned store: encryption at rest, key rotation, blind identifier index."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from gateway.cli import main
from gateway.runtime import Gateway
from gateway.store.models import ResourceRow, ResourceVersionRow, SearchTokenRow
from gateway.store.checkpoint import WalCheckpointer
from gateway.store.writelock import WriteLock

CHI = "0101800002"


def _labelled_condition() -> dict:  # type: ignore[type-arg]
    return {
        "resourceType": "Condition",
        "meta": {
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}],
            "tag": [{"system": "https://pathway.scot/CodeSystem/data-category", "code": "mental-health"}],
        },
        "subject": {"reference": "Patient/p1"},
        "code": {"text": "Depressive episode"},
    }


def _directory_org() -> dict:  # type: ignore[type-arg]
    return {"resourceType": "Organization", "name": "Tayview House", "identifier": [{"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}]}


def test_sensitive_bodies_are_ciphertext_in_the_database(gateway: Gateway) -> None:
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        condition = repo.create(_labelled_condition(), "org|a")
        org = repo.create(_directory_org(), "org|a")
    with gateway.sessions() as session:
        raw_condition = session.get(ResourceRow, ("Condition", condition.id))
        raw_org = session.get(ResourceRow, ("Organization", org.id))
        assert raw_condition.key_id == gateway.keyring.active
        assert b"Depressive" not in raw_condition.body
        assert b"Tayview" in raw_org.body and raw_org.key_id is None
        assert gateway.repository(session).read("Condition", condition.id).resource["code"]["text"] == "Depressive episode"


def test_ciphertext_is_bound_to_its_row(gateway: Gateway) -> None:
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        first = repo.create(_labelled_condition(), "org|a")
        second = repo.create(_labelled_condition(), "org|a")
    with gateway.transaction() as session:
        moved = session.get(ResourceRow, ("Condition", first.id)).body
        session.get(ResourceRow, ("Condition", second.id)).body = moved
    with gateway.sessions() as session:
        try:
            gateway.repository(session).read("Condition", second.id)
        except Exception as exc:  # noqa: BLE001 - any decryption failure is the expected outcome
            assert exc.__class__.__name__ == "InvalidTag"
        else:
            raise AssertionError("a ciphertext moved to another row decrypted")


def test_identifiers_are_indexed_blind(gateway: Gateway) -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/chi-number", "value": CHI}]}
    with gateway.transaction() as session:
        stored = gateway.repository(session).create(patient, "org|a")
    with gateway.sessions() as session:
        values = session.scalars(select(SearchTokenRow.value).where(SearchTokenRow.id == stored.id)).all()
        assert values and not any(CHI in v for v in values)
        found = list(gateway.repository(session).search("Patient", [("identifier", [CHI])]))
        assert [s.id for _, s in found] == [stored.id]


def test_rotate_data_reencrypts_current_and_history(gateway: Gateway, settings, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        stored = repo.create(_labelled_condition(), "org|a")
        repo.update({**stored.resource, "note": [{"text": "reviewed"}]}, "org|a", if_match=1)
    old_key = gateway.keyring.active
    monkeypatch.setenv("PATHWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(settings.secrets_dir))
    assert main(["keys", "rotate-data"]) == 0
    assert '"reencrypted": 3' in capsys.readouterr().out
    rotated = Gateway.start(settings)
    try:
        assert rotated.keyring.active != old_key
        with rotated.sessions() as session:
            keys = set(session.scalars(select(ResourceVersionRow.key_id)).all()) | set(session.scalars(select(ResourceRow.key_id)).all())
            assert keys == {rotated.keyring.active}
            assert rotated.repository(session).vread("Condition", stored.id, 1).resource["code"]["text"] == "Depressive episode"
    finally:
        rotated.close()


def _other_process_can_write(lock_file: Path) -> bool:
    probe = "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    return subprocess.run([sys.executable, "-c", probe, str(lock_file)], capture_output=True).returncode == 0


def test_sqlite_write_lock_keeps_other_processes_waiting_until_released(tmp_path: Path) -> None:
    lock = WriteLock(tmp_path / "pathway.db")
    lock_file = tmp_path / "pathway.db-writelock"
    with lock:
        assert not _other_process_can_write(lock_file)
    assert _other_process_can_write(lock_file)
    lock.close()


def test_the_checkpointer_copies_the_log_into_the_database_file_by_itself(tmp_path: Path) -> None:
    database = tmp_path / "pathway.db"
    writer = sqlite3.connect(database, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # only the checkpointer may copy
    writer.execute("CREATE TABLE t (b BLOB)")
    writer.executemany("INSERT INTO t VALUES (?)", [(bytes(1000),)] * 2000)
    assert database.stat().st_size < 100_000  # the 2 MB written so far are all in the log
    checkpointer = WalCheckpointer(database, interval=0.01)
    try:
        deadline = time.monotonic() + 5
        while database.stat().st_size < 2_000_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert database.stat().st_size >= 2_000_000
    finally:
        checkpointer.close()
        writer.close()
