"""OneRoster CSV bundles: parsing, manifest, errors, zip safety, the demo round trip, public samples.

Bundles are written by the tests themselves (a folder, a zip file, zip bytes);
the public samples under ../shared/data/oneroster-samples are read where they
are, never copied into the repository.
"""

from __future__ import annotations

import csv
import io
import re
import tracemalloc
import zipfile
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rostersync.errors import SourceError
from rostersync.local.demo_csv import write_bundle
from rostersync.local.demo_data import DemoDistrict, generate_district
from rostersync.local.demo_sis import to_v12
from rostersync.roster.models import RecordError, normalize
from rostersync.sources.base import ENTITIES, SOURCE_LOCATION_KEY, BundleSource, Connector, SourcePage
from rostersync.sources.oneroster_csv import OneRosterCsvBundle, ZipLimits

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT.parent / "shared" / "data" / "oneroster-samples"
MOODLE = SAMPLES / "moodle-enrol_oneroster" / "tests" / "fixtures" / "csv_data"
needs_samples = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"public OneRoster samples not present at {SAMPLES}"
)

# ---- writing bundles ---------------------------------------------------------------

ORGS = (
    "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId\r\n"
    "org-d,active,2026-01-05T10:00:00.000Z,Lincoln USD,district,LUSD,\r\n"
    "org-s1,active,2026-01-05T10:00:00.000Z,Lincoln High,school,LHS,org-d\r\n"
)
SESSIONS = (
    "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear\r\n"
    "as-y,,,2025-2026,schoolYear,2025-08-20,2026-06-10,,2026\r\n"
    "as-f,,,Fall 2025,term,2025-08-20,2025-12-19,as-y,2026\r\n"
    "as-s,,,Spring 2026,term,2026-01-05,2026-06-10,as-y,2026\r\n"
)
CLASSES = (
    "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,"
    "schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods\r\n"
    'cls-1,,,"Algebra I, Honors","09,10",crs-1,ALG-1,scheduled,Room 1,org-s1,"as-f, as-s",Math,,"1, 3"\r\n'
    "cls-2,,,Band,,crs-2,BAND,scheduled,,org-s1,as-f,,,2\r\n"
)
USERS_1P1_HEADER = (
    "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,"
    "familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password\r\n"
)
USERS_1P1 = USERS_1P1_HEADER + (
    "u-t,,,true,org-s1,teacher,jsmith,{SIS:100},John,Smith,,100,JSmith@Lincoln.k12.us,,,,,\r\n"
    'u-s,,,false,"org-s1,org-d",student,ada,"{SIS:101},{LDAP:ada}",Ada,"O\'Brien, ""Jr""",,101,'
    "ada@students.k12.us,,,u-p,09,hunter2\r\n"
    "u-p,,,true,org-s1,parent,pat,,Pat,Parent,,,pat@example.com,,,,,\r\n"
)
ENROLLMENTS = (
    "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,"
    "beginDate,endDate\r\n"
    "e-1,,,cls-1,org-s1,u-t,teacher,true,2025-08-20,2025-12-19\r\n"
    "e-2,,,cls-1,org-s1,u-s,student,false,,\r\n"
)
USERS_1P2_HEADER = (
    "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,middleName,"
    "identifier,email,sms,phone,agentSourcedIds,grades,password,userMasterIdentifier,resourceSourcedIds,"
    "preferredGivenName,preferredMiddleName,preferredFamilyName,primaryOrgSourcedId,pronouns\r\n"
)
USERS_1P2 = USERS_1P2_HEADER + (
    "u-t,,,true,jsmith,,John,Smith,,,jsmith@lincoln.k12.us,,,,,,,,,,,org-s1,\r\n"
    "u-a,,,true,dana,,Dana,Whitfield,,,dana@lincoln.k12.us,,,,,,,,,,,org-d,\r\n"
    "u-s,,,TRUE,ada,,Ada,Lovelace,,,ada@students.k12.us,,,,09,,,,,,,org-s1,\r\n"
)
ROLES = (
    "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,"
    "userProfileSourcedId\r\n"
    "r-1,active,,u-t,primary,teacher,,,org-s1,\r\n"
    "r-2,active,,u-a,secondary,teacher,,,org-s1,\r\n"
    "r-3,active,,u-a,primary,districtAdministrator,2025-08-01,,org-d,\r\n"
    "r-4,tobedeleted,,u-s,primary,teacher,,,org-s1,\r\n"
    "r-5,,,u-s,primary,student,,,org-s1,\r\n"
    "r-6,,,u-ghost,primary,student,,,org-s1,\r\n"
)

FILES_1P1: dict[str, str] = {
    "orgs.csv": ORGS,
    "academicSessions.csv": SESSIONS,
    "classes.csv": CLASSES,
    "users.csv": USERS_1P1,
    "enrollments.csv": ENROLLMENTS,
}
FILES_1P2: dict[str, str] = FILES_1P1 | {"users.csv": USERS_1P2, "roles.csv": ROLES}


def manifest(version: str = "1.1", modes: dict[str, str] | None = None, extra: Iterable[str] = ()) -> str:
    files = (
        modes
        if modes is not None
        else dict.fromkeys(("orgs", "academicSessions", "classes", "users", "enrollments"), "bulk")
    )
    if version == "1.2" and modes is None:
        files["roles"] = "bulk"
    lines = ["propertyName,value", "manifest.version,1.0", f"oneroster.version,{version}"]
    lines += [f"file.{stem},{mode}" for stem, mode in files.items()]
    lines += list(extra)
    return "\r\n".join(lines) + "\r\n"


def zip_bytes(files: Mapping[str, str | bytes], *, folder: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, body in files.items():
            bundle.writestr(folder + name, body)
    return buffer.getvalue()


def as_folder(tmp_path: Path, files: Mapping[str, str | bytes]) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name, body in files.items():
        (folder / name).write_bytes(body.encode() if isinstance(body, str) else body)
    return folder


def bundle_of(tmp_path: Path, files: Mapping[str, str | bytes], **kwargs: Any) -> OneRosterCsvBundle:
    return OneRosterCsvBundle(as_folder(tmp_path, files), **kwargs)


def all_pages(bundle: OneRosterCsvBundle, entity: str) -> list[SourcePage]:
    return list(bundle.pages(entity))  # type: ignore[arg-type]


def records(bundle: OneRosterCsvBundle, entity: str) -> dict[str, dict]:
    return {r["sourcedId"]: r for page in all_pages(bundle, entity) for r in page.records}


def rejected(bundle: OneRosterCsvBundle, entity: str) -> list[dict]:
    return [r for page in all_pages(bundle, entity) for r in page.rejected]


# ---- reading 1.1 --------------------------------------------------------------------


def test_it_is_a_connector_and_a_bundle_source(tmp_path: Path) -> None:
    with bundle_of(tmp_path, FILES_1P1 | {"manifest.csv": manifest()}) as bundle:
        # Static conformance (mypy checks these assignments); the calls prove the methods exist.
        connector: Connector = bundle
        source: BundleSource = bundle
        assert source.run_mode() == "full"
        assert next(iter(connector.pages("orgs"))).entity == "orgs"


def test_1p1_records_come_in_rest_shape(tmp_path: Path) -> None:
    with bundle_of(tmp_path, FILES_1P1 | {"manifest.csv": manifest()}) as bundle:
        orgs = records(bundle, "orgs")
        sessions = records(bundle, "academicSessions")
        classes = records(bundle, "classes")
        users = records(bundle, "users")
        enrollments = records(bundle, "enrollments")

    assert orgs["org-s1"]["parent"] == {"sourcedId": "org-d", "type": "org"}
    assert orgs["org-d"]["parent"] is None
    assert sessions["as-f"]["parent"]["sourcedId"] == "as-y" and sessions["as-f"]["schoolYear"] == "2026"
    cls = classes["cls-1"]
    assert cls["title"] == "Algebra I, Honors"
    assert [t["sourcedId"] for t in cls["terms"]] == ["as-f", "as-s"]
    assert cls["periods"] == ["1", "3"] and cls["grades"] == ["09", "10"]
    assert cls["school"]["sourcedId"] == "org-s1" and cls["course"]["sourcedId"] == "crs-1"
    student = users["u-s"]
    assert [o["sourcedId"] for o in student["orgs"]] == ["org-s1", "org-d"]
    assert student["familyName"] == 'O\'Brien, "Jr"'
    assert student["userIds"] == [{"type": "SIS", "identifier": "101"}, {"type": "LDAP", "identifier": "ada"}]
    assert student["agents"] == [{"sourcedId": "u-p", "type": "user"}]
    assert student["enabledUser"] == "false" and student["role"] == "student"
    assert "password" not in student  # never carried into staging
    enrollment = enrollments["e-1"]
    assert enrollment["class"]["sourcedId"] == "cls-1" and enrollment["user"]["sourcedId"] == "u-t"
    assert enrollment["school"]["sourcedId"] == "org-s1" and enrollment["primary"] == "true"
    assert enrollment["beginDate"] == "2025-08-20"


def test_1p1_records_normalize(tmp_path: Path) -> None:
    with bundle_of(tmp_path, FILES_1P1 | {"manifest.csv": manifest()}) as bundle:
        normalized = {e: [normalize(e, r) for r in records(bundle, e).values()] for e in ENTITIES}

    student = next(u for u in normalized["users"] if u.sourcedId == "u-s")
    assert student.orgIds == ("org-s1", "org-d") and student.enabledUser is False
    cls = next(c for c in normalized["classes"] if c.sourcedId == "cls-1")
    assert cls.termIds == ("as-f", "as-s") and cls.periods == ("1", "3") and cls.schoolId == "org-s1"


def test_every_record_says_where_it_came_from(tmp_path: Path) -> None:
    with bundle_of(tmp_path, FILES_1P1 | {"manifest.csv": manifest()}) as bundle:
        users = records(bundle, "users")

    assert users["u-t"][SOURCE_LOCATION_KEY] == "users.csv line 2"
    assert users["u-s"][SOURCE_LOCATION_KEY] == "users.csv line 3"


@pytest.mark.parametrize("form", ["folder", "zip file", "zip bytes", "zip with a top folder"])
def test_bundle_forms(tmp_path: Path, form: str) -> None:
    files: dict[str, str | bytes] = FILES_1P1 | {"manifest.csv": manifest()}
    source: Path | bytes
    if form == "folder":
        source = as_folder(tmp_path, files)
    elif form == "zip bytes":
        source = zip_bytes(files)
    else:
        source = tmp_path / "bundle.zip"
        source.write_bytes(zip_bytes(files, folder="export-2026-03-01/" if "top" in form else ""))

    with OneRosterCsvBundle(source) as bundle:
        assert sorted(records(bundle, "users")) == ["u-p", "u-s", "u-t"]
        assert bundle.warnings == []


def test_bom_crlf_lf_quoted_commas_quotes_and_line_breaks(tmp_path: Path) -> None:
    users = (
        "\ufeff" + USERS_1P1_HEADER.replace("\r\n", "\n")
        + "u-1,,,true,org-s1,student,a,,Ann,\"Lee, \"\"Jr\"\"\",,,a@x.org,,,,,\n"
        + 'u-2,,,true,org-s1,student,b,,"Bo\r\nMulti",Line,,,b@x.org,,,,,\r\n'
        + "u-3,,,true,org-s1,student,c,,Cy,Zed,,,c@x.org,,,,,\r\n"
    )  # fmt: skip
    with bundle_of(tmp_path, FILES_1P1 | {"users.csv": users.encode(), "manifest.csv": manifest()}) as bundle:
        got = records(bundle, "users")

    assert list(got) == ["u-1", "u-2", "u-3"]  # the BOM did not become part of "sourcedId"
    assert got["u-1"]["familyName"] == 'Lee, "Jr"'
    assert got["u-2"]["givenName"] == "Bo\r\nMulti"
    # Physical lines: u-2 spans lines 3-4, so u-3 is on line 5.
    assert [r[SOURCE_LOCATION_KEY] for r in got.values()] == [
        "users.csv line 2",
        "users.csv line 3",
        "users.csv line 5",
    ]


def test_blank_lines_are_skipped_and_do_not_shift_line_numbers(tmp_path: Path) -> None:
    users = USERS_1P1_HEADER + "\r\n" + USERS_1P1.split("\r\n", 1)[1] + "\r\n\r\n"
    with bundle_of(tmp_path, FILES_1P1 | {"users.csv": users, "manifest.csv": manifest()}) as bundle:
        got = records(bundle, "users")

    assert got["u-t"][SOURCE_LOCATION_KEY] == "users.csv line 3"
    assert len(got) == 3


def test_header_names_match_case_insensitively_and_metadata_is_kept(tmp_path: Path) -> None:
    users = (
        "SOURCEDID,Status,dateLastModified,enabledUser,orgSourcedIds,Role,username,userIds,givenName,"
        "familyName,middleName,identifier,Email,sms,phone,agentSourcedIds,grades,password,metadata.nickname\r\n"
        "u-1,,,true,org-s1,student,a,,Ann,Lee,,,a@x.org,,,,,,Annie\r\n"
    )
    with bundle_of(tmp_path, FILES_1P1 | {"users.csv": users, "manifest.csv": manifest()}) as bundle:
        user = records(bundle, "users")["u-1"]
        warnings = bundle.warnings

    assert user["role"] == "student" and user["email"] == "a@x.org"
    assert user["metadata"] == {"nickname": "Annie"}
    assert warnings == []


def test_unknown_columns_are_ignored_with_a_warning_naming_them(tmp_path: Path) -> None:
    users = USERS_1P1_HEADER.replace("password", "password,favouriteColour") + (
        "u-1,,,true,org-s1,student,a,,Ann,Lee,,,a@x.org,,,,,,secret-teal\r\n"
    )
    with bundle_of(tmp_path, FILES_1P1 | {"users.csv": users, "manifest.csv": manifest()}) as bundle:
        user = records(bundle, "users")["u-1"]
        warnings = bundle.warnings

    assert "favouriteColour" not in user
    assert warnings == ["users.csv: unknown column(s) favouriteColour ignored"]
    assert not any("secret-teal" in w for w in warnings)  # names columns, never values


def test_pages_hold_page_size_records(tmp_path: Path) -> None:
    rows = "".join(f"u-{i:02d},,,true,org-s1,student,u{i},,G,F,,,u{i}@x.org,,,,,\r\n" for i in range(5))
    files = FILES_1P1 | {"users.csv": USERS_1P1_HEADER + rows, "manifest.csv": manifest()}
    with bundle_of(tmp_path, files, page_size=2) as bundle:
        pages = all_pages(bundle, "users")

    assert [p.number for p in pages] == [0, 1, 2]
    assert [len(p.records) for p in pages] == [2, 2, 1]
    assert all(p.entity == "users" and p.total is None for p in pages)


def test_a_header_only_file_gives_one_empty_page(tmp_path: Path) -> None:
    files = FILES_1P1 | {"enrollments.csv": ENROLLMENTS.split("\r\n")[0] + "\r\n", "manifest.csv": manifest()}
    with bundle_of(tmp_path, files) as bundle:
        pages = all_pages(bundle, "enrollments")

    assert [(p.number, p.records, p.rejected) for p in pages] == [(0, [], [])]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
        min_size=1,
        max_size=6,
    )
)
def test_any_text_survives_the_round_trip(tmp_path_factory: pytest.TempPathFactory, names: list[str]) -> None:
    # Given names holding commas, quotes, line breaks and any Unicode, written as a CSV exporter would
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(USERS_1P1_HEADER.strip().split(","))
    for i, name in enumerate(names):
        writer.writerow(
            [
                f"u-{i}",
                "",
                "",
                "true",
                "org-s1",
                "student",
                "u",
                "",
                name,
                "F",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
            ]
        )
    files = FILES_1P1 | {"users.csv": buffer.getvalue(), "manifest.csv": manifest()}

    # When the bundle is read
    with OneRosterCsvBundle(zip_bytes(files)) as bundle:
        got = records(bundle, "users")

    # Then every name comes back as written (rows of nothing but blanks aside)
    assert [got[f"u-{i}"]["givenName"] for i in range(len(names))] == names


def test_files_are_streamed_not_loaded(tmp_path: Path) -> None:
    row = "u-{i:07d},,,true,org-s1,student,user{i},,Given,Family,,,user{i}@students.example.org,,,,09,\r\n"
    body = USERS_1P1_HEADER + "".join(row.format(i=i) for i in range(120_000))
    source = tmp_path / "big.zip"
    source.write_bytes(zip_bytes(FILES_1P1 | {"users.csv": body, "manifest.csv": manifest()}))
    del body

    with OneRosterCsvBundle(source, page_size=500) as bundle:
        tracemalloc.start()
        count = sum(len(page.records) for page in bundle.pages("users"))
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    assert count == 120_000
    # The file is ~11 MB of text; a page of 500 records is a few hundred kB.
    assert peak < 4 * 1024 * 1024


# ---- 1.2 ----------------------------------------------------------------------------


def test_1p2_roles_are_merged_into_users(tmp_path: Path) -> None:
    with bundle_of(tmp_path, FILES_1P2 | {"manifest.csv": manifest("1.2")}) as bundle:
        users = records(bundle, "users")
        warnings = bundle.warnings

    admin = users["u-a"]
    assert admin["roles"] == [
        {"roleType": "secondary", "role": "teacher", "org": {"sourcedId": "org-s1", "type": "org"}},
        {
            "roleType": "primary",
            "role": "districtAdministrator",
            "org": {"sourcedId": "org-d", "type": "org"},
            "beginDate": "2025-08-01",
        },
    ]
    # 1.2 has no orgSourcedIds: the orgs are those of the roles, primary first.
    assert [o["sourcedId"] for o in admin["orgs"]] == ["org-d", "org-s1"]
    assert "role" not in admin
    # A deleted role (r-4) gives nothing.
    assert [r["role"] for r in users["u-s"]["roles"]] == ["student"]
    assert "roles.csv: roles of 1 user(s) not in users.csv ignored" in warnings


def test_1p2_users_normalize_with_their_primary_role(tmp_path: Path) -> None:
    with bundle_of(tmp_path, FILES_1P2 | {"manifest.csv": manifest("1.2")}) as bundle:
        users = {
            u.sourcedId: u for u in map(lambda r: normalize("users", r), records(bundle, "users").values())
        }

    assert users["u-a"].role == "districtAdministrator" and users["u-a"].orgIds == ("org-d", "org-s1")
    assert users["u-t"].role == "teacher" and users["u-s"].role == "student"
    assert users["u-s"].enabledUser is True  # "TRUE"


def test_1p2_role_without_an_org_gives_the_role_but_no_org(tmp_path: Path) -> None:
    roles = ROLES.replace("r-1,active,,u-t,primary,teacher,,,org-s1,", "r-1,active,,u-t,primary,teacher,,,,")
    with bundle_of(tmp_path, FILES_1P2 | {"roles.csv": roles, "manifest.csv": manifest("1.2")}) as bundle:
        teacher = records(bundle, "users")["u-t"]

    assert teacher["roles"] == [{"roleType": "primary", "role": "teacher", "org": None}]
    assert teacher["orgs"] == []
    assert normalize("users", teacher).role == "teacher"  # type: ignore[attr-defined]


def test_1p2_bulk_users_without_roles_file_is_a_source_error(tmp_path: Path) -> None:
    modes = dict.fromkeys(("orgs", "academicSessions", "classes", "users", "enrollments"), "bulk")
    files = FILES_1P2 | {"manifest.csv": manifest("1.2", modes | {"roles": "absent"})}

    with pytest.raises(SourceError, match=r"users\.csv: OneRoster 1\.2 users carry their role in roles\.csv"):
        bundle_of(tmp_path, files)


def test_1p2_delta_users_without_roles_file_warns(tmp_path: Path) -> None:
    files = {
        "users.csv": USERS_1P2,
        "manifest.csv": manifest("1.2", {"users": "delta", "roles": "absent"}),
    }
    with bundle_of(tmp_path, files) as bundle:
        assert any("users without a role will be rejected" in w for w in bundle.warnings)
        assert len(records(bundle, "users")) == 3


def test_1p2_ragged_roles_rows_are_rejected_on_the_users_pages(tmp_path: Path) -> None:
    roles = ROLES + "r-7,,,u-t,primary\r\n"
    with bundle_of(tmp_path, FILES_1P2 | {"roles.csv": roles, "manifest.csv": manifest("1.2")}) as bundle:
        pages = all_pages(bundle, "users")

    assert pages[0].rejected == [
        {"entity": "users", "sourcedId": "r-7", "reason": "roles.csv line 8: 5 fields, header has 10"}
    ]
    assert len([r for p in pages for r in p.records]) == 3


def test_1p2_many_ragged_roles_rows_are_paged_too(tmp_path: Path) -> None:
    roles = ROLES + "".join(f"r-x{i},,,u-t,primary\r\n" for i in range(5))
    files = FILES_1P2 | {"roles.csv": roles, "manifest.csv": manifest("1.2")}
    with bundle_of(tmp_path, files, page_size=2) as bundle:
        pages = all_pages(bundle, "users")

    assert [p.number for p in pages] == [0, 1, 2, 3]
    assert [(len(p.rejected), len(p.records)) for p in pages] == [(2, 0), (2, 0), (1, 1), (0, 2)]


# ---- manifest --------------------------------------------------------------------------


def test_all_bulk_is_a_full_run_with_every_entity_complete(tmp_path: Path) -> None:
    with bundle_of(tmp_path, FILES_1P1 | {"manifest.csv": manifest()}) as bundle:
        assert bundle.run_mode() == "full"
        assert bundle.complete_entities() == frozenset(ENTITIES)
        assert bundle.version == "1.1" and bundle.manifest.manifest_version == "1.0"


def test_any_delta_is_an_incremental_run_and_only_bulk_entities_are_complete(tmp_path: Path) -> None:
    modes = {
        "orgs": "bulk",
        "academicSessions": "bulk",
        "classes": "delta",
        "users": "delta",
        "enrollments": "absent",
    }
    files = {k: v for k, v in FILES_1P1.items() if k != "enrollments.csv"} | {
        "manifest.csv": manifest("1.1", modes)
    }
    with bundle_of(tmp_path, files) as bundle:
        assert bundle.run_mode() == "incremental"
        assert bundle.complete_entities() == frozenset({"orgs", "academicSessions"})
        assert [(p.number, p.records) for p in bundle.pages("enrollments")] == [(0, [])]


def test_a_file_the_manifest_calls_absent_is_not_read(tmp_path: Path) -> None:
    modes = {
        "orgs": "bulk",
        "academicSessions": "bulk",
        "classes": "bulk",
        "users": "bulk",
        "enrollments": "absent",
    }
    with bundle_of(tmp_path, FILES_1P1 | {"manifest.csv": manifest("1.1", modes)}) as bundle:
        assert records(bundle, "enrollments") == {}
        assert bundle.warnings == [
            "enrollments.csv is in the bundle but manifest.csv says file.enrollments is absent: ignored"
        ]


def test_manifest_oddities_are_tolerated_with_warnings(tmp_path: Path) -> None:
    extra = [
        "fiel.demographics,absent",
        "file.scoreScales,",
        "file.courses,",
        "source.systemName,SIS",
        "file.fooBar,bulk",
    ]
    with bundle_of(tmp_path, FILES_1P1 | {"manifest.csv": manifest(extra=extra)}) as bundle:
        warnings = bundle.warnings
        assert bundle.run_mode() == "full"

    assert warnings == [
        "manifest.csv: unknown property 'fiel.demographics' ignored",
        "manifest.csv: file.scoreScales has no value; read as absent",
        "manifest.csv: file.courses has no value; read as absent",
        "manifest.csv: unknown file 'file.fooBar' ignored",
    ]


def test_a_blank_value_for_an_entity_file_reads_as_absent(tmp_path: Path) -> None:
    modes = {
        "orgs": "bulk",
        "academicSessions": "bulk",
        "classes": "bulk",
        "users": "",
        "enrollments": "bulk",
    }
    with bundle_of(tmp_path, FILES_1P1 | {"manifest.csv": manifest("1.1", modes)}) as bundle:
        assert records(bundle, "users") == {}
        assert "users" not in bundle.complete_entities()
        assert "manifest.csv: file.users has no value; read as absent" in bundle.warnings


def test_an_unknown_mode_for_an_entity_file_is_a_source_error(tmp_path: Path) -> None:
    modes = {
        "orgs": "bulk",
        "academicSessions": "bulk",
        "classes": "bulk",
        "users": "full",
        "enrollments": "bulk",
    }

    with pytest.raises(
        SourceError, match=re.escape("manifest.csv: file.users is 'full'; expected bulk, delta or absent")
    ):
        bundle_of(tmp_path, FILES_1P1 | {"manifest.csv": manifest("1.1", modes)})


def test_a_missing_version_is_guessed_with_a_warning(tmp_path: Path) -> None:
    text = manifest("1.2").replace("oneroster.version,1.2", "oneroster.version,")
    with bundle_of(tmp_path, FILES_1P2 | {"manifest.csv": text}) as bundle:
        assert bundle.version == "1.2"
        assert "manifest.csv: oneroster.version is blank or missing; read as 1.2" in bundle.warnings


def test_an_unsupported_version_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"oneroster.version '3\.0' is not supported"):
        bundle_of(tmp_path, FILES_1P1 | {"manifest.csv": manifest("3.0")})


def test_a_bundle_without_manifest_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=re.escape("the bundle has no manifest.csv")):
        bundle_of(tmp_path, FILES_1P1)


# ---- bad input is answered ------------------------------------------------------------


def test_a_listed_file_missing_from_the_bundle_names_the_file(tmp_path: Path) -> None:
    files = {k: v for k, v in FILES_1P1.items() if k != "classes.csv"} | {"manifest.csv": manifest()}

    with pytest.raises(
        SourceError, match=r"manifest.csv lists file.classes as bulk but classes\.csv is not in the bundle"
    ):
        bundle_of(tmp_path, files)


@pytest.mark.parametrize(
    ("filename", "column", "version"),
    [
        ("users.csv", "sourcedId", "1.1"),
        ("users.csv", "role", "1.1"),
        ("users.csv", "orgSourcedIds", "1.1"),
        ("classes.csv", "schoolSourcedId", "1.1"),
        ("enrollments.csv", "userSourcedId", "1.1"),
        ("orgs.csv", "type", "1.1"),
        ("roles.csv", "userSourcedId", "1.2"),
    ],
)
def test_a_missing_required_column_names_file_and_column(
    tmp_path: Path, filename: str, column: str, version: str
) -> None:
    files = dict(FILES_1P2 if version == "1.2" else FILES_1P1)
    header, rest = files[filename].split("\r\n", 1)
    names = header.split(",")
    at = names.index(column)
    kept = [
        ",".join(f for i, f in enumerate(next(csv.reader([line])) if line else []) if i != at)
        for line in rest.split("\r\n")
    ]
    files[filename] = ",".join(n for n in names if n != column) + "\r\n" + "\r\n".join(kept)

    with pytest.raises(SourceError) as error:
        bundle_of(tmp_path, files | {"manifest.csv": manifest(version)})

    assert str(error.value) == f"{filename}: required column {column!r} is missing from the header"


def test_1p2_users_need_no_role_column(tmp_path: Path) -> None:
    with bundle_of(tmp_path, FILES_1P2 | {"manifest.csv": manifest("1.2")}) as bundle:
        assert len(records(bundle, "users")) == 3


def test_a_column_given_twice_is_a_source_error(tmp_path: Path) -> None:
    users = (
        USERS_1P1_HEADER.replace("password", "Email") + "u-1,,,true,org-s1,student,a,,A,B,,,a@x,,,,,b@x\r\n"
    )

    expected = re.escape("users.csv: column 'email' appears more than once in the header")
    with pytest.raises(SourceError, match=expected):
        bundle_of(tmp_path, FILES_1P1 | {"users.csv": users, "manifest.csv": manifest()})


def test_a_row_with_the_wrong_field_count_is_rejected_and_the_rest_goes_on(tmp_path: Path) -> None:
    users = (
        USERS_1P1
        + "u-bad,,,true,org-s1,student,bad,,Bad\r\n"
        + ("u-after,,,true,org-s1,student,after,,After,Row,,,after@x.org,,,,,\r\n")
    )
    with bundle_of(tmp_path, FILES_1P1 | {"users.csv": users, "manifest.csv": manifest()}) as bundle:
        pages = all_pages(bundle, "users")

    assert [r for p in pages for r in p.rejected] == [
        {"entity": "users", "sourcedId": "u-bad", "reason": "users.csv line 5: 9 fields, header has 18"}
    ]
    assert [r["sourcedId"] for p in pages for r in p.records] == ["u-t", "u-s", "u-p", "u-after"]
    assert pages[-1].records[-1][SOURCE_LOCATION_KEY] == "users.csv line 6"


def test_rejected_rows_count_toward_the_page_size(tmp_path: Path) -> None:
    users = USERS_1P1_HEADER + "".join(f"u-{i},short\r\n" for i in range(5))
    with bundle_of(
        tmp_path, FILES_1P1 | {"users.csv": users, "manifest.csv": manifest()}, page_size=2
    ) as bundle:
        pages = all_pages(bundle, "users")

    assert [len(p.rejected) for p in pages] == [2, 2, 1]
    assert [r["sourcedId"] for p in pages for r in p.rejected] == [f"u-{i}" for i in range(5)]


def test_text_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    users = USERS_1P1.encode() + "u-x,,,true,org-s1,student,x,,Jos\u00e9,Y,,,,,,,,\r\n".encode("latin-1")
    files = FILES_1P1 | {"users.csv": users, "manifest.csv": manifest()}
    expected = r"users\.csv line 5: not UTF-8 text"
    with bundle_of(tmp_path, files) as bundle, pytest.raises(SourceError, match=expected):
        all_pages(bundle, "users")


def test_an_empty_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"orgs\.csv is empty: it has no header row"):
        bundle_of(tmp_path, FILES_1P1 | {"orgs.csv": "", "manifest.csv": manifest()})


def test_a_missing_bundle_and_a_non_zip_are_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        OneRosterCsvBundle(tmp_path / "nowhere.zip")
    with pytest.raises(SourceError, match="not a readable zip file"):
        OneRosterCsvBundle(b"PK but not really a zip")


# ---- zip safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../evil.csv", "/etc/cron.d/evil", "C:\\evil.csv", "a/../../evil.csv", "..\\evil.csv"]
)
def test_path_traversal_names_are_refused(name: str) -> None:
    data = zip_bytes(FILES_1P1 | {"manifest.csv": manifest(), name: "x"})

    with pytest.raises(SourceError, match=re.escape("has an absolute or '..' path: refused")):
        OneRosterCsvBundle(data)


def test_a_member_that_inflates_too_much_is_refused_as_a_zip_bomb() -> None:
    bomb = b"0" * (30 * 1024 * 1024)  # deflates about 1000 times
    data = zip_bytes(FILES_1P1 | {"manifest.csv": manifest(), "users.csv": bomb})

    with pytest.raises(
        SourceError, match=r"zip member 'users\.csv' inflates \d+ times \(limit 200\): refused as a zip bomb"
    ):
        OneRosterCsvBundle(data)


def test_a_zip_too_large_in_total_is_refused() -> None:
    data = zip_bytes(FILES_1P1 | {"manifest.csv": manifest()})

    with pytest.raises(
        SourceError, match=r"zip inflates to \d+ bytes, more than 1000: refused as a zip bomb"
    ):
        OneRosterCsvBundle(data, zip_limits=ZipLimits(max_total_bytes=1000))


def test_a_zip_with_too_many_members_is_refused() -> None:
    data = zip_bytes(FILES_1P1 | {"manifest.csv": manifest()} | {f"extra-{i}.txt": "" for i in range(10)})

    with pytest.raises(SourceError, match="zip holds 16 members, more than 8: refused"):
        OneRosterCsvBundle(data, zip_limits=ZipLimits(max_members=8))


def test_an_encrypted_member_is_refused() -> None:
    data = bytearray(zip_bytes(FILES_1P1 | {"manifest.csv": manifest()}))
    # Set the "encrypted" flag bit of every central directory entry.
    at = data.find(b"PK\x01\x02")
    while at != -1:
        data[at + 8] |= 0x1
        at = data.find(b"PK\x01\x02", at + 4)

    with pytest.raises(SourceError, match="is encrypted: refused"):
        OneRosterCsvBundle(bytes(data))


def test_a_damaged_member_is_a_source_error_not_a_crash() -> None:
    rows = "".join(f"u-{i},,,true,org-s1,student,u{i},,G{i},F{i},,,u{i}@x.org,,,,,\r\n" for i in range(3000))
    data = bytearray(
        zip_bytes(FILES_1P1 | {"manifest.csv": manifest(), "users.csv": USERS_1P1_HEADER + rows})
    )
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as bundle:
        info = bundle.getinfo("users.csv")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for offset in range(start + info.compress_size // 2, start + info.compress_size // 2 + 16):
        data[offset] ^= 0xFF

    # Found when the header is checked or when the rows are read, never as a raw zlib error.
    expected = re.escape("zip member 'users.csv' is damaged")
    with pytest.raises(SourceError, match=expected), OneRosterCsvBundle(bytes(data)) as bundle:
        all_pages(bundle, "users")


# ---- the demo district round trip ------------------------------------------------------------


@pytest.fixture(scope="module")
def district() -> DemoDistrict:
    return generate_district(today=date(2026, 3, 1))


def _normalized(entity: str, raw: dict) -> Any:
    try:
        return normalize(entity, raw)
    except RecordError as error:
        return ("rejected", error.reason)  # the same rejection from both sources is equal too


def _expected(district: DemoDistrict, entity: str, version: str) -> dict[str, Any]:
    expected = {}
    for raw in district.records(entity):
        record = _normalized(entity, raw)
        if version == "1.2" and entity == "users" and not isinstance(record, tuple):
            # 1.2 names administrators by where they work; everything else is as in 1.1.
            primary_role = to_v12("users", raw, district)["roles"][0]["role"]
            record = record.model_copy(update={"role": primary_role})
        expected[raw["sourcedId"]] = record
    return expected


@pytest.mark.parametrize(
    ("version", "as_zip"), [("1.1", True), ("1.1", False), ("1.2", True), ("1.2", False)]
)
def test_demo_bundle_reads_back_as_the_rest_records(
    district: DemoDistrict, tmp_path: Path, version: str, as_zip: bool
) -> None:
    # Given the demo district written as a CSV bundle
    path = write_bundle(district, tmp_path / ("demo.zip" if as_zip else "demo"), version=version, zip=as_zip)

    # When it is read back and normalized
    with OneRosterCsvBundle(path, page_size=100) as bundle:
        assert bundle.version == version and bundle.run_mode() == "full"
        assert bundle.complete_entities() == frozenset(ENTITIES)
        got = {}
        for entity in ENTITIES:
            pages = all_pages(bundle, entity)
            assert [r for p in pages for r in p.rejected] == []
            got[entity] = {r["sourcedId"]: _normalized(entity, r) for p in pages for r in p.records}
        assert bundle.warnings == []

    # Then every record equals the normalized REST record of the same district
    for entity in ENTITIES:
        assert got[entity] == _expected(district, entity, version), entity


def test_demo_bundle_writes_no_password_and_a_complete_manifest(
    district: DemoDistrict, tmp_path: Path
) -> None:
    path = write_bundle(district, tmp_path / "demo", version="1.2", zip=False)

    manifest_rows = dict(csv.reader((path / "manifest.csv").read_text().splitlines()))
    assert manifest_rows["oneroster.version"] == "1.2"
    assert {k: v for k, v in manifest_rows.items() if v == "bulk"} == {
        f"file.{stem}": "bulk"
        for stem in ("academicSessions", "classes", "courses", "enrollments", "orgs", "roles", "users")
    }
    users = list(csv.DictReader((path / "users.csv").open(newline="", encoding="utf-8")))
    assert {u["password"] for u in users} == {""}
    assert sorted(p.name for p in path.iterdir()) == [
        "academicSessions.csv", "classes.csv", "courses.csv", "enrollments.csv", "manifest.csv", "orgs.csv",
        "roles.csv", "users.csv",
    ]  # fmt: skip


def test_demo_zip_is_written_atomically(district: DemoDistrict, tmp_path: Path) -> None:
    write_bundle(district, tmp_path / "demo.zip")

    assert [p.name for p in tmp_path.iterdir()] == ["demo.zip"]


# ---- public samples written by others ------------------------------------------------------


def _read_everything(bundle: OneRosterCsvBundle) -> tuple[dict[str, list[dict]], list[dict], list[str]]:
    """Records per entity, connector rejections, and normalization failures ("file line N: reason")."""
    got: dict[str, list[dict]] = {}
    rejections: list[dict] = []
    failures: list[str] = []
    for entity in ENTITIES:
        got[entity] = []
        for page in bundle.pages(entity):
            rejections += page.rejected
            for record in page.records:
                got[entity].append(record)
                try:
                    normalize(entity, record)
                except RecordError as error:
                    failures.append(f"{record[SOURCE_LOCATION_KEY]}: {error.reason}")
    return got, rejections, failures


def _data_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return sum(1 for row in csv.reader(handle) if any(row)) - 1


SAMPLE_1P1 = [
    "roster-hub/storage/sample_csv/en",
    "roster-hub/storage/sample_csv/ja",
    "moodle-enrol_oneroster/tests/fixtures/csv_data/Test_minimal_data_set.zip.d",
    "moodle-enrol_oneroster/tests/fixtures/csv_data/Test_full_data_set.zip.d",
]


@needs_samples
@pytest.mark.parametrize("folder", SAMPLE_1P1)
def test_public_1p1_bundles_read_whole(folder: str) -> None:
    path = SAMPLES / folder
    with OneRosterCsvBundle(path) as bundle:
        assert bundle.version == "1.1" and bundle.run_mode() == "full"
        got, rejections, failures = _read_everything(bundle)
        warnings = bundle.warnings

    assert rejections == [] and failures == []
    for entity in ENTITIES:
        assert len(got[entity]) == _data_rows(path / f"{entity}.csv"), entity
    if folder.startswith("roster-hub"):
        assert warnings == ["manifest.csv: unknown property 'fiel.demographics' ignored"]
        assert got["users"][0]["metadata"]["phoneticGivenName"]


@needs_samples
def test_public_1p2_delta_bundle_is_incremental_with_roles() -> None:
    with OneRosterCsvBundle(MOODLE / "oneroster_test_data.zip.d") as bundle:
        assert bundle.version == "1.2"
        assert bundle.run_mode() == "incremental" and bundle.complete_entities() == frozenset()
        got, rejections, failures = _read_everything(bundle)

    assert rejections == [] and failures == []
    user = normalize("users", got["users"][0])
    assert (user.sourcedId, user.role, user.orgIds) == ("USER_0", "student", ("ORG_1",))


@needs_samples
def test_public_broken_1p2_bundle_is_answered_with_files_lines_and_columns() -> None:
    with OneRosterCsvBundle(MOODLE / "v1p2_full_dataset.zip.d") as bundle:
        got, rejections, failures = _read_everything(bundle)
        warnings = bundle.warnings

    # roles.csv's header has two unnamed columns: each of its 9-field rows is rejected by line.
    assert rejections and all(r["entity"] == "users" for r in rejections)
    assert all(re.fullmatch(r"roles\.csv line \d+: 9 fields, header has 11", r["reason"]) for r in rejections)
    # Without roles, no user can be imported; each failure names its file and line.
    assert len(failures) == len(got["users"]) > 0
    assert all(re.fullmatch(r"users\.csv line \d+: role: missing", f) for f in failures)
    # Misspelt headers and blank manifest values are named.
    assert (
        "users.csv: unknown column(s) prefferedGivenName, prefferedMiddleName, prefferedFamilyName ignored"
        in warnings
    )
    assert "roles.csv: unknown column(s) dataLastModified ignored" in warnings
    assert "roles.csv: 2 column(s) without a name ignored" in warnings
    assert "manifest.csv: file.userProfiles has no value; read as absent" in warnings
