"""The audit chain: every access is recorded, and tampering is found and named."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update

from gateway.audit.chain import read_event, seal, verify
from gateway.cli import main
from gateway.store.models import AuditRow, AuditSealRow

from .test_fhir_api import patient


@pytest.fixture
def audited(make_client, gateway, settings, monkeypatch):  # type: ignore[no-untyped-def]
    """A gateway with some audited traffic, and the CLI pointed at its database."""
    client = make_client("social-work")
    created = client.post("Patient", patient()).json()
    for _ in range(3):
        client.get(f"Patient/{created['id']}")
    client.get("Patient/missing")
    monkeypatch.setenv("PATHWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(settings.secrets_dir))
    return gateway, created


def _events(gateway) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    with gateway.sessions() as session:
        return [read_event(session, r) for r in session.scalars(select(AuditRow).order_by(AuditRow.seq))]


def test_every_access_writes_an_audit_event(audited):  # type: ignore[no-untyped-def]
    gateway, created = audited
    events = _events(gateway)
    reads = [e for e in events if e["subtype"][0]["code"] == "read"]
    assert len(reads) == 4
    ok = reads[0]
    assert ok["action"] == "R" and ok["outcome"] == "0"
    assert ok["entity"][0]["what"]["reference"] == f"Patient/{created['id']}"
    assert ok["agent"][0]["who"]["identifier"]["value"] == "social-work"
    assert ok["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    assert reads[-1]["outcome"] == "4" and "not known" in reads[-1]["outcomeDesc"]
    assert any(e["subtype"][0]["code"] == "create" and e["action"] == "C" for e in events)


def test_intact_chain_verifies(audited, capsys):  # type: ignore[no-untyped-def]
    assert main(["audit", "verify"]) == 0
    assert "audit chain intact" in capsys.readouterr().out


def _tamper(gateway, statement) -> None:  # type: ignore[no-untyped-def]
    with gateway.transaction() as session:
        session.execute(statement)


def test_changed_row_is_named(audited, capsys):  # type: ignore[no-untyped-def]
    gateway, _ = audited
    _tamper(gateway, update(AuditRow).where(AuditRow.seq == 4).values(body=b'{"forged": true}'))
    assert main(["audit", "verify"]) == 1
    assert "audit entry 4 was changed" in capsys.readouterr().out


def test_deleted_row_is_named(audited, capsys):  # type: ignore[no-untyped-def]
    gateway, _ = audited
    _tamper(gateway, delete(AuditRow).where(AuditRow.seq == 3))
    assert main(["audit", "verify"]) == 1
    assert "audit entry 3 is missing" in capsys.readouterr().out


def test_deleted_tail_is_found(audited, capsys):  # type: ignore[no-untyped-def]
    gateway, _ = audited
    with gateway.sessions() as session:
        last = session.scalar(select(AuditRow.seq).order_by(AuditRow.seq.desc()))
    _tamper(gateway, delete(AuditRow).where(AuditRow.seq == last))
    assert main(["audit", "verify"]) == 1
    assert f"audit entries {last} to {last} are missing" in capsys.readouterr().out


def test_reordered_rows_are_found(audited, capsys):  # type: ignore[no-untyped-def]
    gateway, _ = audited
    with gateway.sessions() as session:
        two, three = session.get(AuditRow, 2), session.get(AuditRow, 3)
        swapped = [(2, three.body, three.prev_hash, three.hash), (3, two.body, two.prev_hash, two.hash)]
    for seq, body, prev_hash, digest in swapped:
        _tamper(gateway, update(AuditRow).where(AuditRow.seq == seq).values(body=body, prev_hash=prev_hash, hash=digest))
    assert main(["audit", "verify"]) == 1
    assert "audit entry 2" in capsys.readouterr().out


def test_seal_is_checked_with_the_public_key(audited):  # type: ignore[no-untyped-def]
    gateway, _ = audited
    with gateway.transaction() as session:
        sealed = seal(session, gateway.signing_key)
    assert sealed is not None
    with gateway.sessions() as session:
        assert verify(session, gateway.signing_key).ok
    # rewriting the whole chain consistently still contradicts the signed seal
    _tamper(gateway, update(AuditSealRow).where(AuditSealRow.seq == sealed.seq).values(hash="f" * 64))
    with gateway.sessions() as session:
        report = verify(session, gateway.signing_key)
    assert not report.ok and "seal" in report.broken
