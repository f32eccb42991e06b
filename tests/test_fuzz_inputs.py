"""Mutated source extracts never crash an adapter or lose a record.

Starting from the golden fixtures, hypothesis flips, cuts, duplicates and splices bytes
(and, for EMIS, inside one file of a zip). Whatever arrives, an adapter either refuses the
whole extract with an IngestError that says why, or accounts for every record it read:
each is accepted or quarantined with a location and a reason, never silently dropped.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adapters
from adapters import IngestError

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
AGENT = {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "21506"}
EMIS_FILES = sorted((FIXTURES / "emis" / "input").glob("*.csv"))
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few byte-level edits of the kinds broken exports make."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        edit = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "duplicate"]))
        if edit == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif edit == "cut":
            del data[at : at + draw(st.integers(1, 40))]
        elif edit == "insert":
            data[at:at] = draw(st.sampled_from([b",", b'"', b"\n", b"\r\n", b"\x00", b"\xff\xfe", b"{", b"}", b"null", b"-1", b"9" * 30, "é".encode()]))
        elif edit == "truncate":
            del data[at:]
        elif edit == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 200))]
    return bytes(data)


def _accounts_for_every_record(source: str, data: bytes) -> None:
    try:
        result = adapters.ingest(source, data, agent=AGENT)
    except IngestError as refusal:
        assert str(refusal), "a refused extract must say why"
        return
    report = result.report()
    assert report["records"] == report["accepted"] + len(report["quarantined"]), report
    for held in report["quarantined"]:
        assert held["location"] and held["reason"], held


@pytest.mark.parametrize(("source", "fixture"), [("socialwork", "socialwork.json"), ("thirdsector", "thirdsector.csv")])
def test_mutated_extracts_are_read_or_refused_never_crash(source: str, fixture: str) -> None:
    original = (FIXTURES / fixture).read_bytes()

    @FUZZ
    @given(data=mutated(original))
    def check(data: bytes) -> None:
        _accounts_for_every_record(source, data)

    check()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_mutated_emis_files_in_a_zip_are_read_or_refused_never_crash() -> None:
    originals = {path.name: path.read_bytes() for path in EMIS_FILES}

    @FUZZ
    @given(name=st.sampled_from(sorted(originals)), data=st.data())
    def check(name: str, data: st.DataObject) -> None:
        _accounts_for_every_record("emis", _zip({**originals, name: data.draw(mutated(originals[name]))}))

    check()
