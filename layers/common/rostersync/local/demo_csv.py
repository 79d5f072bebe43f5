"""The demo district as a OneRoster CSV bundle, so the same district can be fed as CSV.

`write_bundle(district, dest)` writes a bulk bundle of OneRoster 1.1 or 1.2
CSV files (orgs, academicSessions, courses, classes, users, enrollments, and for
1.2 roles) with a manifest, as a zip file or a folder. Read back with
`OneRosterCsvBundle` and normalized, every record equals the normalized 1.1
REST record of the same district (`district.records(entity)`); for 1.2, users
carry the 1.2 role names the demo SIS gives them (`districtAdministrator`,
`principal`, ...), from the same `to_v12` conversion.

Rows are written one at a time, so a benchmark-size district is written
without a second copy in memory. The manifest is written last and a zip is
renamed into place when complete: whoever watches the folder (an SFTP pick-up)
never sees half a bundle.

One deliberate liberty: OneRoster asks bulk rows to leave `status` and
`dateLastModified` blank, but the demo keeps them, because its showcase holds a
`tobedeleted` user and enrollment that every source must deliver alike.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Literal, Protocol

from rostersync.local.demo_data import DemoDistrict
from rostersync.local.demo_sis import to_v12

CsvVersion = Literal["1.1", "1.2"]
Row = list[str]

_ORG_COLUMNS = ("sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId")
_SESSION_COLUMNS = (
    "sourcedId", "status", "dateLastModified", "title", "type", "startDate", "endDate", "parentSourcedId",
    "schoolYear",
)  # fmt: skip
_COURSE_COLUMNS = (
    "sourcedId", "status", "dateLastModified", "schoolYearSourcedId", "title", "courseCode", "grades",
    "orgSourcedId", "subjects", "subjectCodes",
)  # fmt: skip
_CLASS_COLUMNS = (
    "sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId", "classCode", "classType",
    "location", "schoolSourcedId", "termSourcedIds", "subjects", "subjectCodes", "periods",
)  # fmt: skip
_USER_COLUMNS_1P1 = (
    "sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role", "username", "userIds",
    "givenName", "familyName", "middleName", "identifier", "email", "sms", "phone", "agentSourcedIds",
    "grades", "password",
)  # fmt: skip
_USER_COLUMNS_1P2 = (
    "sourcedId", "status", "dateLastModified", "enabledUser", "username", "userIds", "givenName",
    "familyName", "middleName", "identifier", "email", "sms", "phone", "agentSourcedIds", "grades",
    "password", "userMasterIdentifier", "resourceSourcedIds", "preferredGivenName", "preferredMiddleName",
    "preferredFamilyName", "primaryOrgSourcedId", "pronouns",
)  # fmt: skip
_ROLE_COLUMNS = (
    "sourcedId", "status", "dateLastModified", "userSourcedId", "roleType", "role", "beginDate", "endDate",
    "orgSourcedId", "userProfileSourcedId",
)  # fmt: skip
_ENROLLMENT_COLUMNS = (
    "sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId", "userSourcedId", "role",
    "primary", "beginDate", "endDate",
)  # fmt: skip

# Every file the manifest of each version names; those not written are `absent`.
_MANIFEST_FILES: dict[str, tuple[str, ...]] = {
    "1.1": (
        "academicSessions", "categories", "classes", "classResources", "courses", "courseResources",
        "demographics", "enrollments", "lineItems", "orgs", "resources", "results", "users",
    ),
    "1.2": (
        "academicSessions", "categories", "classes", "classResources", "courses", "courseResources",
        "demographics", "enrollments", "lineItemLearningObjectiveIds", "lineItems", "lineItemScoreScales",
        "orgs", "resources", "resultLearningObjectiveIds", "results", "resultScoreScales", "roles",
        "scoreScales", "userProfiles", "userResources", "users",
    ),
}  # fmt: skip


def write_bundle(
    district: DemoDistrict,
    dest: Path,
    *,
    version: CsvVersion = "1.1",
    zip: bool = True,
) -> Path:
    """Write `district` as a bulk OneRoster CSV bundle at `dest` and return `dest`.

    `dest` is the zip file to create (zip=True) or the folder to fill (zip=False).
    """
    if version not in _MANIFEST_FILES:
        raise ValueError(f"unsupported OneRoster CSV version: {version!r}")
    files = _bundle_files(district, version)
    if zip:
        _write_zip(dest, files, version)
    else:
        _write_folder(dest, files, version)
    return dest


# ---- where files go ---------------------------------------------------------------


class _Sink(Protocol):
    def __call__(self, name: str) -> AbstractContextManager[IO[str]]: ...


def _write_zip(dest: Path, files: dict[str, _Table], version: CsvVersion) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as bundle:

        @contextmanager
        def member(name: str) -> Iterator[IO[str]]:
            # force_zip64: a benchmark district's enrollments.csv may pass 2 GiB.
            with bundle.open(name, "w", force_zip64=True) as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                try:
                    yield text
                finally:
                    text.flush()
                    text.detach()

        _write_all(member, files, version)
    os.replace(partial, dest)


def _write_folder(dest: Path, files: dict[str, _Table], version: CsvVersion) -> None:
    dest.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def member(name: str) -> Iterator[IO[str]]:
        with (dest / name).open("w", encoding="utf-8", newline="") as text:
            yield text

    _write_all(member, files, version)


def _write_all(sink: _Sink, files: dict[str, _Table], version: CsvVersion) -> None:
    for stem, (columns, rows) in files.items():
        with sink(f"{stem}.csv") as text:
            writer = csv.writer(text)  # quotes only where needed; CRLF as RFC 4180 says
            writer.writerow(columns)
            writer.writerows(rows())
    with sink("manifest.csv") as text:  # last: its presence says the bundle is complete
        csv.writer(text).writerows(_manifest_rows(version, files))


def _manifest_rows(version: CsvVersion, files: Iterable[str]) -> list[Row]:
    written = set(files)
    rows = [["propertyName", "value"], ["manifest.version", "1.0"], ["oneroster.version", version]]
    rows += [[f"file.{stem}", "bulk" if stem in written else "absent"] for stem in _MANIFEST_FILES[version]]
    rows += [["source.systemName", "rostersync demo SIS"], ["source.systemCode", "rostersync-demo"]]
    return rows


# ---- records to rows --------------------------------------------------------------

_Table = tuple[tuple[str, ...], Callable[[], Iterable[Row]]]


def _bundle_files(district: DemoDistrict, version: CsvVersion) -> dict[str, _Table]:
    files: dict[str, _Table] = {
        "orgs": (_ORG_COLUMNS, lambda: map(_org_row, district.orgs)),
        "academicSessions": (_SESSION_COLUMNS, lambda: map(_session_row, district.academic_sessions)),
        "courses": (_COURSE_COLUMNS, lambda: _course_rows(district)),
        "classes": (_CLASS_COLUMNS, lambda: map(_class_row, district.classes)),
    }
    if version == "1.1":
        files["users"] = (_USER_COLUMNS_1P1, lambda: map(_user_row_1p1, district.users))
    else:
        files["users"] = (_USER_COLUMNS_1P2, lambda: map(_user_row_1p2, district.users))
        files["roles"] = (_ROLE_COLUMNS, lambda: _role_rows(district))
    files["enrollments"] = (_ENROLLMENT_COLUMNS, lambda: map(_enrollment_row, district.enrollments))
    return files


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _id(ref: dict | None) -> str:
    return ref["sourcedId"] if ref else ""


def _ids(refs: Iterable[dict] | None) -> str:
    return ",".join(ref["sourcedId"] for ref in refs or ())


def _joined(values: Iterable[str] | None) -> str:
    return ",".join(values or ())


def _base(record: dict) -> Row:
    return [record["sourcedId"], _text(record.get("status")), _text(record.get("dateLastModified"))]


def _org_row(org: dict) -> Row:
    return [*_base(org), org["name"], org["type"], _text(org.get("identifier")), _id(org.get("parent"))]


def _session_row(session: dict) -> Row:
    return [
        *_base(session),
        session["title"],
        session["type"],
        _text(session.get("startDate")),
        _text(session.get("endDate")),
        _id(session.get("parent")),
        _text(session.get("schoolYear")),
    ]


def _class_row(cls: dict) -> Row:
    return [
        *_base(cls),
        cls["title"],
        _joined(cls.get("grades")),
        _id(cls.get("course")),
        _text(cls.get("classCode")),
        _text(cls.get("classType")),
        _text(cls.get("location")),
        _id(cls.get("school")),
        _ids(cls.get("terms")),
        _joined(cls.get("subjects")),
        "",
        _joined(cls.get("periods")),
    ]


def _course_rows(district: DemoDistrict) -> Iterator[Row]:
    """One course per course ref of the classes, described by its first class."""
    school_year = next((s["sourcedId"] for s in district.academic_sessions if s["type"] == "schoolYear"), "")
    seen: set[str] = set()
    for cls in district.classes:
        course_id = _id(cls.get("course"))
        if not course_id or course_id in seen:
            continue
        seen.add(course_id)
        code = _text(cls.get("classCode")).split("-")[0]
        yield [
            course_id, "active", _text(cls.get("dateLastModified")), school_year, cls["title"], code,
            _joined(cls.get("grades")), _id(cls.get("school")), _joined(cls.get("subjects")), "",
        ]  # fmt: skip


def _user_ids(user: dict) -> str:
    return ",".join(f"{{{i.get('type', '')}:{i.get('identifier', '')}}}" for i in user.get("userIds") or ())


def _user_row_1p1(user: dict) -> Row:
    return [
        *_base(user),
        _text(user.get("enabledUser")),
        _ids(user.get("orgs")),
        user["role"],
        _text(user.get("username")),
        _user_ids(user),
        *_person(user),
        "",  # password: never exported
    ]


def _person(user: dict) -> Row:
    return [
        _text(user.get("givenName")),
        _text(user.get("familyName")),
        _text(user.get("middleName")),
        _text(user.get("identifier")),
        _text(user.get("email")),
        _text(user.get("sms")),
        _text(user.get("phone")),
        _ids(user.get("agents")),
        _joined(user.get("grades")),
    ]


def _user_row_1p2(user: dict) -> Row:
    orgs = user.get("orgs") or []
    return [
        *_base(user),
        _text(user.get("enabledUser")),
        _text(user.get("username")),
        _user_ids(user),
        *_person(user),
        "",  # password: never exported
        "",  # userMasterIdentifier
        "",  # resourceSourcedIds
        "",  # preferredGivenName
        "",  # preferredMiddleName
        "",  # preferredFamilyName
        _id(orgs[0]) if orgs else "",
        "",  # pronouns
    ]


def _role_rows(district: DemoDistrict) -> Iterator[Row]:
    # The demo SIS's own 1.2 conversion decides the 1.2 role names, so REST and
    # CSV deliver the same roles.
    for user in district.users:
        for number, role in enumerate(to_v12("users", user, district)["roles"], start=1):
            yield [
                f"role-{user['sourcedId']}-{number}", "active", _text(user.get("dateLastModified")),
                user["sourcedId"], role["roleType"], role["role"], "", "", _id(role["org"]), "",
            ]  # fmt: skip


def _enrollment_row(enrollment: dict) -> Row:
    return [
        *_base(enrollment),
        _id(enrollment.get("class")),
        _id(enrollment.get("school")),
        _id(enrollment.get("user")),
        enrollment["role"],
        _text(enrollment.get("primary")),
        _text(enrollment.get("beginDate")),
        _text(enrollment.get("endDate")),
    ]
