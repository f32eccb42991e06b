"""What every source adapter shares: reading input, quarantine, validation, the report.

An adapter turns source bytes into a stream of :class:`Mapped` records (the FHIR
resources one source record becomes) and :class:`Quarantined` records (what
could not be read or mapped, with where and why). Nothing is dropped silently:
every source record ends up as exactly one of the two.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import secrets
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import IO, Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from mappings.labels import label_resource

SOURCE_BASE = "https://pathway.scot/source"
MAX_ZIP_MEMBERS = 200
MAX_UNCOMPRESSED = 2 * 1024**3
MAX_RATIO = 200
# Text is decoded with replacement, so one bad byte costs its row (quarantined), not the file.
UNDECODABLE = "\ufffd"


class IngestError(Exception):
    """The input as a whole cannot be read (not a zip, not JSON, missing required file...)."""


class ForeignRecords(IngestError):
    """The extract carries records of another organisation than the one pushing it: refused whole."""


@dataclass(frozen=True)
class IdScheme:
    """The ids ingested resources get: HMAC-SHA256 under the installation's secret key.

    An id tells nothing of the identifiers it was made from, and nobody without the key can
    predict it (so nobody can take an id before its record arrives). A person's Patient id
    comes from their CHI alone, the same whichever organisation sends it; every other id is
    scoped to the pushing organisation (``scope``, "system|value"), so the same source ids
    sent by another organisation name other records. Re-ingest gives the same ids.
    """

    key: bytes = field(repr=False)
    scope: str

    @classmethod
    def random(cls, scope: str) -> IdScheme:
        """A scheme under a fresh random key (dry runs and tests without a gateway)."""
        return cls(secrets.token_bytes(32), scope)

    @property
    def organisation(self) -> dict[str, str]:
        """The pushing organisation as a FHIR Identifier."""
        system, _, value = self.scope.partition("|")
        return {"system": system, "value": value}

    def _id(self, message: bytes) -> str:
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def person(self, chi: str) -> str:
        """The Patient id of the person with this CHI."""
        return self._id(b"person/chi/" + chi.encode())

    def record(self, source: str, *key: object) -> str:
        """The id of what a source record becomes, for this organisation (a JSON list: unambiguous)."""
        return self._id(orjson.dumps([self.scope, source, *map(str, key)]))


@dataclass(frozen=True)
class Quarantined:
    """A source record kept aside, with its location (file:line or id) and the reason."""

    location: str
    reason: str
    record: dict[str, Any] | None = None


@dataclass
class Mapped:
    """The resources one source record became, and the people it concerns."""

    location: str
    resources: list[dict[str, Any]]
    persons: set[str] = field(default_factory=set)
    deletions: list[tuple[str, str]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)  # accepted, but a person to check by hand


class RecordProblem(ValueError):
    """Raised inside an adapter for one record; becomes a Quarantined entry.

    ``review`` carries possible matches for a person who could not be matched with
    certainty; they go to the match-review list with the quarantined record.
    """

    def __init__(self, message: str, review: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.review = review


def checked(location: str, record: dict[str, Any] | None, build: Callable[[], Mapped]) -> Mapped | Quarantined:
    """Map one source record; a RecordProblem or resources that are not valid FHIR R4
    quarantine it with the reason, the record kept."""
    try:
        mapped = build()
    except RecordProblem as problem:
        kept = {**record, "review": problem.review} if record is not None and problem.review else record
        return Quarantined(location, str(problem), kept)
    invalid = validation_problem(mapped.resources)
    if invalid:
        return Quarantined(location, f"does not make valid FHIR: {invalid}", record)
    mapped.location = location
    return mapped


def source_uri(source: str, *key: object) -> str:
    return f"{SOURCE_BASE}/{source}/" + "/".join(str(k) for k in key)


def finish(resource: dict[str, Any], ids: IdScheme, source: str, *key: object) -> dict[str, Any]:
    """Give a built resource its id, ``meta.source`` and labels."""
    resource["id"] = ids.record(source, resource["resourceType"], *key)
    resource.setdefault("meta", {})["source"] = source_uri(source, *key)
    return label_resource(resource, source)


@lru_cache(maxsize=None)
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def validation_problem(resources: Iterable[dict[str, Any]]) -> str | None:
    """The first FHIR R4 structural problem in these resources, or None when all validate."""
    for resource in resources:
        try:
            _model(resource["resourceType"]).model_validate(resource)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            return f"{resource['resourceType']}.{where}: {err['msg']}"
    return None


def parse_date(value: str, what: str) -> str:
    """An ISO date checked for reality (1980-02-30 is refused)."""
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise RecordProblem(f"{what} {value!r} is not a real date (YYYY-MM-DD)") from None


def birth_date(value: str, what: str) -> str:
    """A birth date that is a real date and not in the future."""
    born = parse_date(value, what)
    if born > date.today().isoformat():
        raise RecordProblem(f"{what} {born} is in the future")
    return born


# --- reading input -------------------------------------------------------------------


def read_bytes(data: bytes | Path) -> bytes:
    if isinstance(data, Path):
        try:
            return data.read_bytes()
        except OSError as exc:
            raise IngestError(f"cannot read {data}: {exc.strerror}") from None
    return data


def csv_rows(text_stream: Iterable[str], name: str) -> Iterator[tuple[str, dict[str, str] | None, str | None]]:
    """(location, row by header name, problem) for each data row of a CSV stream.

    Handles a BOM, RFC 4180 quoting (commas and newlines inside quotes) and
    reports rows whose field count differs from the header's.
    """
    reader = csv.reader(text_stream)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise IngestError(f"{name}: cannot read the header row: {exc}") from None
    header = [h.lstrip("\ufeff").strip() for h in header]
    while True:
        location = f"{name}:{reader.line_num + 1}"  # where the record starts (quoted fields may span lines)
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield location, None, f"unreadable CSV: {exc}"
            continue
        if not row or row == [""]:
            continue
        if len(row) != len(header):
            yield location, None, f"row has {len(row)} fields, the header has {len(header)}"
            continue
        if any(UNDECODABLE in field for field in row):
            yield location, None, "row contains bytes that are not valid UTF-8"
            continue
        yield location, dict(zip(header, row)), None


class Files:
    """A folder or a zip of extract files, opened by name (safely)."""

    def __init__(self, data: bytes | Path) -> None:
        self._folder: Path | None = None
        self._zip: zipfile.ZipFile | None = None
        self.inflated = 0
        if isinstance(data, Path) and data.is_dir():
            self._folder = data
            return
        raw = read_bytes(data)
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(raw))
        except zipfile.BadZipFile:
            raise IngestError("input is neither a folder nor a zip file") from None
        self._check_zip(len(raw))

    def _check_zip(self, size: int) -> None:
        assert self._zip is not None
        members = self._zip.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise IngestError(f"zip has {len(members)} members; at most {MAX_ZIP_MEMBERS} are accepted")
        total = 0
        for member in members:
            path = PurePosixPath(member.filename)
            if path.is_absolute() or ".." in path.parts or "\\" in member.filename:
                raise IngestError(f"zip member {member.filename!r} has an unsafe path")
            total += member.file_size
        if total > MAX_UNCOMPRESSED or (size and total / size > MAX_RATIO and total > 50 * 1024**2):
            raise IngestError("zip expands far beyond its size (a zip bomb?); refused")

    def has(self, name: str) -> bool:
        """Whether the extract holds a file of this name."""
        if self._folder is not None:
            return (self._folder / name).is_file()
        assert self._zip is not None
        return any(PurePosixPath(m).name == name for m in self._zip.namelist())

    def open_text(self, name: str) -> io.TextIOBase | None:
        """The named file as text (UTF-8, BOM tolerated), or None when it is absent."""
        if self._folder is not None:
            path = self._folder / name
            return path.open(encoding="utf-8-sig", errors="replace", newline="") if path.exists() else None
        assert self._zip is not None
        match = next((m for m in self._zip.namelist() if PurePosixPath(m).name == name), None)
        if match is None:
            return None
        try:
            opened = self._zip.open(match)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as exc:
            raise IngestError(f"zip member {match!r} cannot be opened ({exc})") from None
        member = io.BufferedReader(_CheckedMember(opened, match, self))
        return io.TextIOWrapper(member, encoding="utf-8-sig", errors="replace", newline="")

    def count(self, size: int) -> None:
        """Add bytes actually inflated from the zip; refuse once they pass the limit
        (the sizes in member headers are what the sender claims, not what is there)."""
        self.inflated += size
        if self.inflated > MAX_UNCOMPRESSED:
            raise IngestError(f"zip expands to more than {MAX_UNCOMPRESSED // 1024**2} MB; refused")


class _CheckedMember(io.RawIOBase):
    """A zip member's bytes as read, counted against the extract's limit; a corrupt member
    (bad CRC, false size in its header, truncated data) is an IngestError, not a crash."""

    def __init__(self, source: IO[bytes], name: str, files: Files) -> None:
        self._source, self._name, self._files = source, name, files

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._source.read(len(buffer))
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise IngestError(f"zip member {self._name!r} cannot be read ({exc}); its header may not match its data") from None
        self._files.count(len(data))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._source.close()
        super().close()
