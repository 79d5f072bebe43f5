"""OneRoster CSV bundles, versions 1.1 and 1.2, as a roster source.

A bundle is a zip file (a path, or its bytes) or a directory holding
`manifest.csv` and one CSV file per entity. `manifest.csv` decides what is in
it: `file.users` = `bulk` (the whole entity), `delta` (changes only) or
`absent`. A bundle with any delta file is an incremental run; an all-bulk one
is a full run, and only its bulk entities may lose records by absence.

Records come out in the OneRoster REST JSON shape the normalizer reads
(`parentSourcedId` becomes `parent`, `termSourcedIds` becomes `terms`, ...),
each tagged with where it came from (`"_source": "users.csv line 17"`, the
physical line, the header being line 1). Files are read as a stream, page by
page; only 1.2's roles.csv is held in memory, because each user's roles must
be joined onto its users.csv row.

Bad input is answered, not swallowed:
- a file the manifest lists but the bundle lacks, or a file without a required
  column, raises `SourceError` naming the file and the column, when the bundle
  is opened, before anything is staged;
- a row with the wrong number of fields becomes a `SourcePage.rejected` entry
  naming file and line, and the rest of the file goes on;
- a zip with an absolute or `..` member name, too many members, or members that
  inflate too much (a zip bomb) is refused with `SourceError`.
Manifest oddities that leave the meaning clear (blank values, unknown or
misspelt rows such as `fiel.demographics`, unknown columns) become `warnings`.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal, NamedTuple, Protocol

from aws_lambda_powertools import Logger

from rostersync.errors import SourceError
from rostersync.sources.base import (
    ENTITIES,
    SOURCE_LOCATION_KEY,
    Entity,
    Position,
    SourcePage,
    resume_by_skipping,
)

logger = Logger(service="rostersync", child=True)

DEFAULT_PAGE_SIZE = 1000
MANIFEST = "manifest.csv"
ROLES = "roles"  # the 1.2 file joined onto users

FileMode = Literal["bulk", "delta", "absent"]
Version = Literal["1.1", "1.2"]
_MODES: frozenset[str] = frozenset({"bulk", "delta", "absent"})

# The manifest's `file.X` names, 1.1 and 1.2 together: anything else is a typo.
KNOWN_FILES = frozenset(
    {
        "academicSessions", "categories", "classes", "classResources", "courses", "courseResources",
        "demographics", "enrollments", "lineItems", "orgs", "resources", "results", "users",
        "lineItemLearningObjectiveIds", "lineItemScoreScales", "resultLearningObjectiveIds",
        "resultScoreScales", "roles", "scoreScales", "userProfiles", "userResources",
    }
)  # fmt: skip
_OTHER_PROPERTIES = frozenset(
    {"manifest.version", "oneroster.version", "source.systemName", "source.systemCode"}
)

# Every column OneRoster defines for the files read here (1.1 and 1.2 together),
# by canonical name; headers are matched case-insensitively against them.
COLUMNS: dict[str, tuple[str, ...]] = {
    "orgs": ("sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId"),
    "academicSessions": (
        "sourcedId", "status", "dateLastModified", "title", "type", "startDate", "endDate",
        "parentSourcedId", "schoolYear",
    ),
    "classes": (
        "sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId", "classCode",
        "classType", "location", "schoolSourcedId", "termSourcedIds", "subjects", "subjectCodes", "periods",
    ),
    "users": (
        "sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role", "username",
        "userIds", "givenName", "familyName", "middleName", "identifier", "email", "sms", "phone",
        "agentSourcedIds", "grades", "password", "userMasterIdentifier", "resourceSourcedIds",
        "preferredGivenName", "preferredMiddleName", "preferredFamilyName", "primaryOrgSourcedId", "pronouns",
    ),
    "enrollments": (
        "sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId", "userSourcedId",
        "role", "primary", "beginDate", "endDate",
    ),
    ROLES: (
        "sourcedId", "status", "dateLastModified", "userSourcedId", "roleType", "role", "beginDate",
        "endDate", "orgSourcedId", "userProfileSourcedId",
    ),
}  # fmt: skip

# Required columns: those OneRoster marks required *and* without which no row of
# the file can become a correct product record. Columns the product never reads
# (schoolYear, courseSourcedId, ...) are not demanded, so a bundle is not
# refused over data nobody uses.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "orgs": ("sourcedId", "name", "type"),
    "academicSessions": ("sourcedId", "title", "type", "startDate", "endDate"),
    "classes": ("sourcedId", "title", "schoolSourcedId", "termSourcedIds"),
    "users": ("sourcedId", "username", "givenName", "familyName"),
    "enrollments": ("sourcedId", "classSourcedId", "userSourcedId", "role"),
    ROLES: ("userSourcedId", "roleType", "role", "orgSourcedId"),
}
_REQUIRED_1P1_USERS = ("role", "orgSourcedIds")  # 1.2 moved both into roles.csv

_METADATA_PREFIX = "metadata."
# Where a row's `metadata.*` extension values travel to the mappers (not a column name).
_METADATA_KEY = "\0metadata"
_GIB = 1024**3


@dataclass(frozen=True)
class ZipLimits:
    """What a bundle zip may hold before it is refused as a zip bomb.

    The largest districts (1M users, 7M enrollments) make about 2 GB of CSV,
    hence a 4 GiB total. OneRoster CSV compresses 5-30 times; 200 is far beyond
    any real file. Members under `ratio_floor_bytes` are never bombs, whatever
    their ratio (a header-only file compresses absurdly well).
    """

    max_members: int = 200
    max_total_bytes: int = 4 * _GIB
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Manifest:
    oneroster_version: Version
    manifest_version: str
    # `file.X` of manifest.csv by X (canonical case); a file not listed is absent.
    files: Mapping[str, FileMode]
    source_system: str = ""

    def mode(self, stem: str) -> FileMode:
        return self.files.get(stem, "absent")


class OneRosterCsvBundle:
    """A `Connector` and `BundleSource` over one OneRoster CSV bundle."""

    def __init__(
        self,
        bundle: str | Path | bytes,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        zip_limits: ZipLimits | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._page_size = page_size
        self._warnings: list[str] = []
        self._files = _open_bundle(bundle, zip_limits or ZipLimits())
        try:
            self._manifest = self._read_manifest()
            self._headers = self._check_files()
        except BaseException:
            self._files.close()
            raise

    def __enter__(self) -> OneRosterCsvBundle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._files.close()

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def version(self) -> Version:
        return self._manifest.oneroster_version

    @property
    def warnings(self) -> list[str]:
        """What was odd but understood (manifest typos, unknown columns); names files, never data."""
        return list(self._warnings)

    # -- BundleSource -------------------------------------------------------

    def run_mode(self) -> Literal["full", "incremental"]:
        modes = [self._manifest.mode(stem) for stem in self._read_stems()]
        return "incremental" if "delta" in modes else "full"

    def complete_entities(self) -> frozenset[Entity]:
        return frozenset(entity for entity in ENTITIES if self._manifest.mode(entity) == "bulk")

    # -- Connector ----------------------------------------------------------

    def pages(
        self, entity: Entity, since: datetime | None = None, start: Position | None = None
    ) -> Iterator[SourcePage]:
        """Yield the entity's records in pages of `page_size`; page 0 even when the file is absent.

        `since` is ignored: a bundle is taken as delivered, and its manifest
        (bulk or delta) says what kind of run it makes. From `start` (a fetch
        continued in a new invocation, on the same bundle re-opened), the
        file is read again from its first row and the pages before
        `start["page"]` are dropped: a local file reads fast, and pages stay
        exactly the same.
        """
        # Read one page ahead, so that the last page says it is the last.
        return resume_by_skipping(self._pages(entity), start)

    def _pages(self, entity: Entity) -> Iterator[SourcePage]:
        if entity not in COLUMNS or entity == ROLES:
            raise ValueError(f"unknown OneRoster entity: {entity!r}")
        if self._manifest.mode(entity) == "absent":
            yield SourcePage(entity=entity, number=0, records=[])
            return
        if entity == "users" and self.version == "1.2":
            join = _RoleJoin(self._load_roles())
            yield from self._paginate(entity, join, join.rejected)
            join.report(self._warn)
        else:
            yield from self._paginate(entity, _MAPPERS[entity], [])

    # -- reading ------------------------------------------------------------

    def _paginate(self, entity: Entity, mapper: _Mapper, rejected: list[dict]) -> Iterator[SourcePage]:
        """Pages of records and rejected rows; `rejected` may arrive pre-filled (from roles.csv)."""
        records: list[dict] = []
        number = 0
        carried, rejected = rejected, []
        for start in range(0, len(carried), self._page_size):
            chunk = carried[start : start + self._page_size]
            if len(chunk) < self._page_size:
                rejected = chunk  # the rest shares a page with the first rows
                break
            yield SourcePage(entity=entity, number=number, records=[], rejected=chunk)
            number += 1
        with self._open_csv(entity) as reader:
            for row in reader.rows(entity):
                if row.rejection is not None:
                    rejected.append(row.rejection)
                else:
                    record = mapper(row.values)
                    record[SOURCE_LOCATION_KEY] = f"{reader.name} line {row.line}"
                    records.append(record)
                # Rejected rows count too: a file of nothing but ragged rows stays paged.
                if len(records) + len(rejected) >= self._page_size:
                    yield SourcePage(entity=entity, number=number, records=records, rejected=rejected)
                    number, records, rejected = number + 1, [], []
        if records or rejected or number == 0:
            yield SourcePage(entity=entity, number=number, records=records, rejected=rejected)

    def _load_roles(self) -> _Roles:
        """Every active role of roles.csv by userSourcedId, and its ragged rows.

        The one file held in memory: a user's roles may be anywhere in roles.csv,
        and a users.csv row can only be completed once all of them are known.
        Roles are kept as tuples of shared strings (role names, org ids and dates
        repeat endlessly) and become dicts only when their user's row is read:
        about 250 bytes a user, some 250 MB for a million users.
        """
        roles = _Roles()
        if self._manifest.mode(ROLES) == "absent":
            return roles
        shared: dict[str, str] = {}

        def share(value: str) -> str:
            text = value.strip()
            return shared.setdefault(text, text)

        with self._open_csv(ROLES) as reader:
            for row in reader.rows("users"):
                if row.rejection is not None:
                    roles.rejected.append(row.rejection)
                    continue
                v = row.values
                if v.get("status", "").strip().lower() in ("tobedeleted", "inactive"):
                    continue  # a deleted role no longer gives its user that role
                role = (
                    share(v["roleType"]),
                    share(v["role"]),
                    share(v["orgSourcedId"]),
                    share(v.get("beginDate", "")),
                    share(v.get("endDate", "")),
                )
                user_id = v["userSourcedId"].strip()
                roles.by_user[user_id] = (*roles.by_user.get(user_id, ()), role)
        return roles

    def _open_csv(self, stem: str) -> _CsvReader:
        name = self._files.find(f"{stem}.csv")
        if name is None:  # checked at open; the bundle cannot have changed since
            raise SourceError(f"{stem}.csv is missing from the bundle")
        reader = _CsvReader(PurePosixPath(name).name, self._files.open(name))
        expected = self._headers[stem]
        if reader.columns != expected:
            reader.close()
            raise SourceError(f"{reader.name}: the header changed while the bundle was read")
        return reader

    # -- opening: manifest and headers ----------------------------------------

    def _read_manifest(self) -> Manifest:
        name = self._files.find(MANIFEST)
        if name is None:
            raise SourceError("the bundle has no manifest.csv: a OneRoster CSV bundle must have one")
        properties = _manifest_properties(name, self._files.open(name))
        return _interpret_manifest(properties, self._files, self._warn)

    def _check_files(self) -> dict[str, tuple[str, ...]]:
        """Header of every file to be read, checked now so a bad bundle fails before staging."""
        headers: dict[str, tuple[str, ...]] = {}
        for stem in self._read_stems():
            mode = self._manifest.mode(stem)
            member = self._files.find(f"{stem}.csv")
            if mode == "absent":
                if member is not None:
                    self._warn(
                        f"{stem}.csv is in the bundle but manifest.csv says file.{stem} is absent: ignored"
                    )
                continue
            if member is None:
                raise SourceError(
                    f"manifest.csv lists file.{stem} as {mode} but {stem}.csv is not in the bundle"
                )
            with _CsvReader(PurePosixPath(member).name, self._files.open(member)) as reader:
                headers[stem] = reader.columns
                self._check_header(stem, reader)
        self._check_roles_present(headers)
        return headers

    def _check_header(self, stem: str, reader: _CsvReader) -> None:
        present = set(reader.columns)
        required = _REQUIRED[stem]
        if stem == "users" and self.version == "1.1":
            required = required + _REQUIRED_1P1_USERS
        for column in required:
            if column not in present:
                raise SourceError(f"{reader.name}: required column {column!r} is missing from the header")
        if reader.unknown:
            self._warn(f"{reader.name}: unknown column(s) {', '.join(reader.unknown)} ignored")
        if reader.unnamed:
            self._warn(f"{reader.name}: {reader.unnamed} column(s) without a name ignored")

    def _check_roles_present(self, headers: Mapping[str, tuple[str, ...]]) -> None:
        users = headers.get("users")
        if (
            self.version != "1.2"
            or users is None
            or self._manifest.mode(ROLES) != "absent"
            or "role" in users
        ):
            return
        message = (
            "OneRoster 1.2 users carry their role in roles.csv, but manifest.csv gives file.roles as absent"
        )
        if self._manifest.mode("users") == "bulk":
            raise SourceError(f"users.csv: {message}")
        # A delta may only delete users, which needs no role; active ones are rejected one by one.
        self._warn(f"users.csv: {message}; users without a role will be rejected")

    def _read_stems(self) -> tuple[str, ...]:
        return (*ENTITIES, ROLES) if self.version == "1.2" else ENTITIES

    def _warn(self, message: str) -> None:
        if message not in self._warnings:
            self._warnings.append(message)
            logger.warning("OneRoster CSV bundle", extra={"bundle_warning": message})


# ---- the files of a bundle -------------------------------------------------------


class _BundleFiles(Protocol):
    def find(self, filename: str) -> str | None:
        """The member or file holding `filename` (case-insensitive) next to manifest.csv."""
        ...

    def open(self, name: str) -> IO[bytes]: ...

    def close(self) -> None: ...


def _open_bundle(bundle: str | Path | bytes, limits: ZipLimits) -> _BundleFiles:
    if isinstance(bundle, bytes | bytearray | memoryview):
        return _ZipFiles(io.BytesIO(bytes(bundle)), limits)
    path = Path(bundle)
    if path.is_dir():
        return _DirFiles(path)
    if not path.is_file():
        raise SourceError(f"bundle {path.name!r} does not exist")
    return _ZipFiles(path, limits)


def _index(names: list[str]) -> dict[str, str]:
    """Lower-cased file name -> member name, for the folder that holds manifest.csv.

    A zip made by compressing a folder puts everything one level down; the
    manifest marks the root either way.
    """
    manifests = [n for n in names if PurePosixPath(n).name.lower() == MANIFEST]
    if len(manifests) > 1:
        raise SourceError(f"the bundle holds {len(manifests)} manifest.csv files; expected one")
    root = PurePosixPath(manifests[0]).parent if manifests else PurePosixPath(".")
    index: dict[str, str] = {}
    for name in names:
        path = PurePosixPath(name)
        if path.parent == root:
            key = path.name.lower()
            if key in index:
                raise SourceError(f"the bundle holds {path.name} twice (names differ only in case)")
            index[key] = name
    return index


class _DirFiles:
    def __init__(self, root: Path) -> None:
        # Flat: a loose bundle is one folder of CSV files.
        self._root = root
        self._index = _index([p.name for p in root.iterdir() if p.is_file()])

    def find(self, filename: str) -> str | None:
        return self._index.get(filename.lower())

    def open(self, name: str) -> IO[bytes]:
        return (self._root / name).open("rb")

    def close(self) -> None:
        pass


class _ZipFiles:
    def __init__(self, source: Path | IO[bytes], limits: ZipLimits) -> None:
        try:
            self._zip = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
            raise SourceError(f"the bundle is not a readable zip file ({type(exc).__name__})") from None
        try:
            infos = _check_zip(self._zip.infolist(), limits)
            self._infos = {info.filename: info for info in infos}
            self._index = _index(list(self._infos))
        except BaseException:
            self._zip.close()
            raise

    def find(self, filename: str) -> str | None:
        return self._index.get(filename.lower())

    def open(self, name: str) -> IO[bytes]:
        info = self._infos[name]
        try:
            member = self._zip.open(info)
        except (NotImplementedError, zipfile.BadZipFile, RuntimeError) as exc:
            # Unsupported compression (deflate64), a damaged entry, a password.
            raise SourceError(f"zip member {_shown(name)} cannot be read ({exc})") from None
        # Members are read as a stream; the bound makes a header that lies about
        # the size fail instead of inflating without end.
        return io.BufferedReader(_BoundedStream(member, info.file_size, name), buffer_size=256 * 1024)

    def close(self) -> None:
        self._zip.close()


_DRIVE = re.compile(r"^[A-Za-z]:")


def _check_zip(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The file members, after refusing unsafe names and zip bombs."""
    if len(infos) > limits.max_members:
        raise SourceError(f"zip holds {len(infos)} members, more than {limits.max_members}: refused")
    files: list[zipfile.ZipInfo] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        _check_member_name(info.filename)
        if info.is_dir():
            continue
        if info.filename in seen:
            raise SourceError(f"zip holds member {_shown(info.filename)} twice: refused")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise SourceError(f"zip member {_shown(info.filename)} is encrypted: refused")
        if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(
            info.compress_size, 1
        ):
            raise SourceError(
                f"zip member {_shown(info.filename)} inflates {info.file_size // max(info.compress_size, 1)}"
                f" times (limit {limits.max_ratio:g}): refused as a zip bomb"
            )
        total += info.file_size
        files.append(info)
    if total > limits.max_total_bytes:
        raise SourceError(
            f"zip inflates to {total} bytes, more than {limits.max_total_bytes}: refused as a zip bomb"
        )
    return files


def _check_member_name(name: str) -> None:
    # Nothing is extracted to disk here, but such a name is an attack on whoever
    # unpacks the bundle next, and no honest SIS export holds one.
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or _DRIVE.match(normalized) or ".." in normalized.split("/"):
        raise SourceError(f"zip member {_shown(name)} has an absolute or '..' path: refused")


def _shown(name: str) -> str:
    return repr(name[:120])


class _BoundedStream(io.RawIOBase):
    """A zip member stream that fails once it yields more than its declared size."""

    def __init__(self, inner: IO[bytes], limit: int, name: str) -> None:
        self._inner = inner
        self._left = limit
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(buffer))
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            # A bad CRC or a truncated member: the bundle was damaged in transit.
            raise SourceError(f"zip member {_shown(self._name)} is damaged ({type(exc).__name__})") from None
        self._left -= len(data)
        if self._left < 0:
            raise SourceError(f"zip member {_shown(self._name)} inflates beyond its declared size: refused")
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._inner.close()
        super().close()


# ---- CSV ----------------------------------------------------------------------


class _Row(NamedTuple):
    line: int
    values: dict[str, str]
    rejection: dict | None = None


class _CsvReader:
    """One CSV file: canonical header names, then rows as {column: value} with line numbers."""

    def __init__(self, name: str, binary: IO[bytes]) -> None:
        self.name = name
        self._binary = binary
        self._reader = csv.reader(self._decoded_lines())
        stem = PurePosixPath(name).stem
        known = {column.lower(): column for column in COLUMNS.get(stem, ())}
        raw = self._next_row(1)
        if raw is None:
            self.close()
            raise SourceError(f"{name} is empty: it has no header row")
        self.width = len(raw)
        self.columns, self.unknown, self.unnamed = _canonical_header(name, raw, known)
        self._sourced_id_at = self.columns.index("sourcedId") if "sourcedId" in self.columns else 0
        # Found once per file: scanning every row's keys for them costs a fifth of the reading time.
        self._metadata = tuple(
            (position, column[len(_METADATA_PREFIX) :])
            for position, column in enumerate(self.columns)
            if column.startswith(_METADATA_PREFIX)
        )

    def __enter__(self) -> _CsvReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._binary.close()

    def _decoded_lines(self) -> Iterator[str]:
        """The file's physical lines as text, decoded one by one.

        Decoding per line (not per buffer) lets a byte that is not UTF-8 be
        reported on its own line. Lines keep their CRLF or LF, so csv still
        sees quoted line breaks; a BOM on the first line is dropped.
        """
        for number, raw in enumerate(self._binary, start=1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise SourceError(
                    f"{self.name} line {number}: not UTF-8 text, as OneRoster requires"
                    " (was it saved as Windows-1252 or Latin-1?)"
                ) from None

    def raw_rows(self) -> Iterator[tuple[int, list[str]]]:
        """(first physical line, fields) of every row that is not blank."""
        while True:
            line = self._reader.line_num + 1
            fields = self._next_row(line)
            if fields is None:
                return
            if any(fields):  # a blank line (or a row of empty fields) holds no record
                yield line, fields

    def rows(self, entity: str) -> Iterator[_Row]:
        """Every row as {column: value}, or as a rejection when its field count is wrong."""
        columns, width, metadata = self.columns, self.width, self._metadata
        for line, fields in self.raw_rows():
            if len(fields) == width:
                values: dict[str, Any] = dict(zip(columns, fields, strict=True))
                if metadata:
                    values[_METADATA_KEY] = {name: fields[position] for position, name in metadata}
                yield _Row(line, values)
            else:
                yield _Row(line, {}, self._ragged(entity, line, fields))

    def _ragged(self, entity: str, line: int, fields: list[str]) -> dict:
        at = self._sourced_id_at
        return {
            "entity": entity,
            "sourcedId": fields[at].strip()[:255] if at < len(fields) else "",
            "reason": f"{self.name} line {line}: {len(fields)} fields, header has {self.width}",
        }

    def _next_row(self, line: int) -> list[str] | None:
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise SourceError(f"{self.name} line {line}: not valid CSV ({exc})") from None


def _canonical_header(
    name: str, raw: list[str], known: Mapping[str, str]
) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """(columns, unknown names, count of unnamed) for a header row.

    Known names are matched case-insensitively and given their canonical case;
    `metadata.*` extension columns are kept; other columns are kept under their
    own name but mapped to nothing.
    """
    columns: list[str] = []
    unknown: list[str] = []
    unnamed = 0
    for position, cell in enumerate(raw):
        text = cell.strip()
        if not text:
            unnamed += 1
            columns.append(f"\0unnamed{position}")  # never collides, never mapped
            continue
        canonical = known.get(text.lower())
        if canonical is None and not text.lower().startswith(_METADATA_PREFIX):
            unknown.append(text[:60])
        columns.append(canonical or text)
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise SourceError(f"{name}: column {duplicates[0]!r} appears more than once in the header")
    return tuple(columns), tuple(unknown), unnamed


# ---- manifest ---------------------------------------------------------------------


def _manifest_properties(name: str, binary: IO[bytes]) -> dict[str, str]:
    with _CsvReader(PurePosixPath(name).name, binary) as reader:
        lowered = [c.lower() for c in reader.columns]
        for column in ("propertyname", "value"):
            if column not in lowered:
                raise SourceError(f"manifest.csv: required column {column!r} is missing from the header")
        key_at, value_at = lowered.index("propertyname"), lowered.index("value")
        properties: dict[str, str] = {}
        for line, fields in reader.raw_rows():
            if len(fields) != reader.width and any(f.strip() for f in fields[reader.width :]):
                raise SourceError(
                    f"manifest.csv line {line}: {len(fields)} fields, header has {reader.width}"
                )
            key = fields[key_at].strip() if key_at < len(fields) else ""
            value = fields[value_at].strip() if value_at < len(fields) else ""
            if key in properties and properties[key] != value:
                raise SourceError(f"manifest.csv line {line}: {key} given twice with different values")
            properties[key] = value
    return properties


def _interpret_manifest(
    properties: Mapping[str, str], files: _BundleFiles, warn: Callable[[str], None]
) -> Manifest:
    canonical_files = {stem.lower(): stem for stem in KNOWN_FILES}
    modes: dict[str, FileMode] = {}
    for key, value in properties.items():
        if key.startswith("file."):
            stem = canonical_files.get(key[5:].lower())
            if stem is None:
                warn(f"manifest.csv: unknown file {key!r} ignored")
                continue
            modes[stem] = _file_mode(stem, value, warn)
        elif key not in _OTHER_PROPERTIES:
            warn(f"manifest.csv: unknown property {key[:60]!r} ignored")
    manifest_version = properties.get("manifest.version", "")
    if not manifest_version:
        warn("manifest.csv: manifest.version is blank or missing")
    return Manifest(
        oneroster_version=_oneroster_version(properties.get("oneroster.version", ""), files, warn),
        manifest_version=manifest_version,
        files=modes,
        source_system=properties.get("source.systemName", ""),
    )


def _file_mode(stem: str, value: str, warn: Callable[[str], None]) -> FileMode:
    mode = value.lower()
    if not mode:
        warn(f"manifest.csv: file.{stem} has no value; read as absent")
        return "absent"
    if mode not in _MODES:
        if stem in COLUMNS:
            # Guessing bulk would delete by absence; guessing absent would ignore the data.
            raise SourceError(f"manifest.csv: file.{stem} is {value[:40]!r}; expected bulk, delta or absent")
        warn(f"manifest.csv: file.{stem} is {value[:40]!r}; expected bulk, delta or absent (file not read)")
        return "absent"
    return mode  # type: ignore[return-value]


def _oneroster_version(value: str, files: _BundleFiles, warn: Callable[[str], None]) -> Version:
    if value in ("1.1", "1.2"):
        return value  # type: ignore[return-value]
    if value == "1.0":
        warn("manifest.csv: oneroster.version 1.0 read as 1.1 (same CSV layout)")
        return "1.1"
    if value:
        raise SourceError(f"manifest.csv: oneroster.version {value[:20]!r} is not supported (1.1 or 1.2)")
    guessed: Version = "1.2" if files.find("roles.csv") is not None else "1.1"
    warn(f"manifest.csv: oneroster.version is blank or missing; read as {guessed}")
    return guessed


# ---- rows to OneRoster REST shapes ------------------------------------------------

_Mapper = Callable[[dict[str, str]], dict]


def _split(value: str | None) -> list[str]:
    """A multi-valued field: comma-separated inside one quoted field."""
    if not value:
        return []
    return [item for item in (part.strip() for part in value.split(",")) if item]


def _ref(sourced_id: str | None, ref_type: str) -> dict[str, str] | None:
    text = (sourced_id or "").strip()
    return {"sourcedId": text, "type": ref_type} if text else None


def _refs(value: str | None, ref_type: str) -> list[dict[str, str]]:
    return [{"sourcedId": item, "type": ref_type} for item in _split(value)]


def _user_ids(value: str | None) -> list[dict[str, str]]:
    """`{LDAP:12},{Fed:23}` -> [{"type": "LDAP", "identifier": "12"}, ...]."""
    ids = []
    for item in _split(value):
        kind, _sep, identifier = item.strip("{}").partition(":")
        ids.append({"type": kind.strip(), "identifier": identifier.strip()} if _sep else {"identifier": kind})
    return ids


def _base(v: dict[str, str]) -> dict:
    record: dict[str, object] = {
        "sourcedId": v.get("sourcedId", "").strip(),
        "status": v.get("status", "").strip(),
        "dateLastModified": v.get("dateLastModified", "").strip(),
    }
    metadata: Any = v.get(_METADATA_KEY)
    if metadata and any(metadata.values()):
        record["metadata"] = metadata
    return record


def _org(v: dict[str, str]) -> dict:
    return _base(v) | {
        "name": v.get("name", ""),
        "type": v.get("type", "").strip(),
        "identifier": v.get("identifier", ""),
        "parent": _ref(v.get("parentSourcedId"), "org"),
    }


def _academic_session(v: dict[str, str]) -> dict:
    return _base(v) | {
        "title": v.get("title", ""),
        "type": v.get("type", "").strip(),
        "startDate": v.get("startDate", "").strip(),
        "endDate": v.get("endDate", "").strip(),
        "parent": _ref(v.get("parentSourcedId"), "academicSession"),
        "schoolYear": v.get("schoolYear", "").strip(),
    }


def _class(v: dict[str, str]) -> dict:
    return _base(v) | {
        "title": v.get("title", ""),
        "classCode": v.get("classCode", ""),
        "classType": v.get("classType", "").strip(),
        "location": v.get("location", ""),
        "grades": _split(v.get("grades")),
        "subjects": _split(v.get("subjects")),
        "subjectCodes": _split(v.get("subjectCodes")),
        "course": _ref(v.get("courseSourcedId"), "course"),
        "school": _ref(v.get("schoolSourcedId"), "org"),
        "terms": _refs(v.get("termSourcedIds"), "academicSession"),
        "periods": _split(v.get("periods")),
    }


_USER_TEXT = (
    "username", "givenName", "familyName", "middleName", "identifier", "email", "sms", "phone",
    "userMasterIdentifier", "preferredGivenName", "preferredMiddleName", "preferredFamilyName", "pronouns",
)  # fmt: skip


def _user(v: dict[str, str]) -> dict:
    # `password` is never carried over: it would travel into staging and logs.
    # Free text stays as sent, as in a REST record; the normalizer trims it.
    record = _base(v) | {key: v[key] for key in _USER_TEXT if key in v}
    record |= {
        "enabledUser": v.get("enabledUser", "").strip(),
        "userIds": _user_ids(v.get("userIds")),
        "agents": _refs(v.get("agentSourcedIds"), "user"),
        "grades": _split(v.get("grades")),
    }
    if "role" in v:
        record["role"] = v["role"].strip()
    if "orgSourcedIds" in v:
        record["orgs"] = _refs(v["orgSourcedIds"], "org")
    if "primaryOrgSourcedId" in v:
        record["primaryOrg"] = _ref(v["primaryOrgSourcedId"], "org")
    return record


# (roleType, role, orgSourcedId, beginDate, endDate) of one roles.csv row.
_RoleRow = tuple[str, str, str, str, str]


@dataclass
class _Roles:
    by_user: dict[str, tuple[_RoleRow, ...]] = field(default_factory=dict)
    rejected: list[dict] = field(default_factory=list)


class _RoleJoin:
    """The 1.2 users mapper: each row gets its roles.csv roles (and, from them, its orgs)."""

    def __init__(self, roles: _Roles) -> None:
        self._by_user = roles.by_user
        self.rejected = roles.rejected
        self._matched = 0

    def __call__(self, v: dict[str, str]) -> dict:
        record = _user(v)
        rows = self._by_user.get(record["sourcedId"])
        if rows is not None:
            self._matched += 1
            record["roles"] = [_role(row) for row in rows]
            if "orgs" not in record:
                # 1.2 users.csv has no orgSourcedIds: a user belongs to the orgs it has a role in.
                record["orgs"] = _distinct_orgs(record["roles"])
        return record

    def report(self, warn: Callable[[str], None]) -> None:
        # Counted, not tracked per user, to keep the join small; a user listed
        # twice in users.csv can only make this an undercount.
        unmatched = len(self._by_user) - self._matched
        if unmatched > 0:
            # In a delta, a role change needs its user's row too: without it there is no record to change.
            warn(f"roles.csv: roles of {unmatched} user(s) not in users.csv ignored")


def _role(row: _RoleRow) -> dict:
    role_type, role, org_id, begin, end = row
    shaped: dict = {"roleType": role_type, "role": role, "org": _ref(org_id, "org")}
    if begin:
        shaped["beginDate"] = begin
    if end:
        shaped["endDate"] = end
    return shaped


def _distinct_orgs(roles: list[dict]) -> list[dict]:
    ordered = sorted(roles, key=lambda role: role.get("roleType") != "primary")
    seen: dict[str, dict] = {}
    for role in ordered:
        if role["org"] is not None:  # a role without an org (a defect) adds none
            seen.setdefault(role["org"]["sourcedId"], role["org"])
    return list(seen.values())


def _enrollment(v: dict[str, str]) -> dict:
    return _base(v) | {
        "class": _ref(v.get("classSourcedId"), "class"),
        "school": _ref(v.get("schoolSourcedId"), "org"),
        "user": _ref(v.get("userSourcedId"), "user"),
        "role": v.get("role", "").strip(),
        "primary": v.get("primary", "").strip(),
        "beginDate": v.get("beginDate", "").strip(),
        "endDate": v.get("endDate", "").strip(),
    }


_MAPPERS: dict[str, _Mapper] = {
    "orgs": _org,
    "academicSessions": _academic_session,
    "classes": _class,
    "users": _user,
    "enrollments": _enrollment,
}
