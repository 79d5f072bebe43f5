"""`normalize`: every source shape of SPEC 4 is read into one model, or rejected with a reason."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from rostersync.roster.models import (
    AcademicSession,
    Enrollment,
    Org,
    RecordError,
    RosterClass,
    User,
    normalize,
    record_id,
)

ENTITIES = ("orgs", "academicSessions", "classes", "users", "enrollments")

# The smallest active record of each entity that must be accepted.
MINIMAL = {
    "orgs": {"sourcedId": "o1", "name": "Lincoln High", "type": "school"},
    "academicSessions": {"sourcedId": "t1", "title": "Fall 2026", "type": "term"},
    "classes": {"sourcedId": "c1", "title": "Algebra I", "school": {"sourcedId": "o1"}},
    "users": {"sourcedId": "u1", "role": "student", "email": "a@x.org"},
    "enrollments": {
        "sourcedId": "e1",
        "user": {"sourcedId": "u1"},
        "class": {"sourcedId": "c1"},
        "role": "student",
    },
}
MODELS = {
    "orgs": Org,
    "academicSessions": AcademicSession,
    "classes": RosterClass,
    "users": User,
    "enrollments": Enrollment,
}


def reason_of(entity: str, raw: object) -> str:
    with pytest.raises(RecordError) as caught:
        normalize(entity, raw)
    assert caught.value.reason == str(caught.value)
    return caught.value.reason


# ---- common fields ---------------------------------------------------------------


@pytest.mark.parametrize("entity", ENTITIES)
def test_minimal_record_of_each_entity_is_accepted_as_its_model(entity: str) -> None:
    record = normalize(entity, MINIMAL[entity])

    assert type(record) is MODELS[entity]
    assert record.sourcedId == MINIMAL[entity]["sourcedId"]
    assert record.status == "active"
    assert not record.deleted


@pytest.mark.parametrize("entity", ENTITIES)
@pytest.mark.parametrize(
    ("raw_status", "expected"),
    [
        (None, "active"),
        ("", "active"),
        ("active", "active"),
        ("Active", "active"),
        ("tobedeleted", "tobedeleted"),
        ("toBeDeleted", "tobedeleted"),
        ("inactive", "tobedeleted"),  # legacy 1.0 status
        ("INACTIVE", "tobedeleted"),
    ],
)
def test_status_is_read_with_legacy_inactive_as_tobedeleted(
    entity: str, raw_status: object, expected: str
) -> None:
    record = normalize(entity, {**MINIMAL[entity], "status": raw_status})

    assert record.status == expected
    assert record.deleted is (expected == "tobedeleted")


@pytest.mark.parametrize("entity", ENTITIES)
def test_unknown_status_is_rejected_naming_the_value(entity: str) -> None:
    reason = reason_of(entity, {**MINIMAL[entity], "status": "archived"})

    assert reason == "status: unknown status 'archived'"


@pytest.mark.parametrize("entity", ENTITIES)
@pytest.mark.parametrize("sourced_id", [None, "", "   ", {"id": "x"}, ["u1"], 1.5])
def test_missing_or_unusable_sourced_id_is_rejected(entity: str, sourced_id: object) -> None:
    reason = reason_of(entity, {**MINIMAL[entity], "sourcedId": sourced_id})

    assert reason == "sourcedId: missing"


@pytest.mark.parametrize("entity", ENTITIES)
def test_absent_sourced_id_key_is_rejected(entity: str) -> None:
    raw = {k: v for k, v in MINIMAL[entity].items() if k != "sourcedId"}

    assert reason_of(entity, raw) == "sourcedId: missing"


@pytest.mark.parametrize("entity", ENTITIES)
def test_sourced_id_is_stripped_and_numbers_become_text(entity: str) -> None:
    assert normalize(entity, {**MINIMAL[entity], "sourcedId": "  abc  "}).sourcedId == "abc"
    assert normalize(entity, {**MINIMAL[entity], "sourcedId": 42}).sourcedId == "42"


@pytest.mark.parametrize("entity", ENTITIES)
def test_overlong_sourced_id_is_rejected(entity: str) -> None:
    assert normalize(entity, {**MINIMAL[entity], "sourcedId": "x" * 255}).sourcedId == "x" * 255

    reason = reason_of(entity, {**MINIMAL[entity], "sourcedId": "x" * 256})

    assert reason == "sourcedId: sourcedId longer than 255 characters"


@pytest.mark.parametrize("entity", ENTITIES)
@pytest.mark.parametrize("raw", [None, "u1", 7, ["sourcedId", "u1"], [{"sourcedId": "u1"}], True])
def test_non_object_record_is_rejected(entity: str, raw: object) -> None:
    assert reason_of(entity, raw) == "record is not a JSON object"


def test_unknown_entity_is_rejected() -> None:
    assert reason_of("courses", {"sourcedId": "x"}) == "unknown entity 'courses'"


@pytest.mark.parametrize("entity", ENTITIES)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-08-01T12:30:00.000Z", datetime(2026, 8, 1, 12, 30, tzinfo=UTC)),
        ("2026-08-01T12:30:00Z", datetime(2026, 8, 1, 12, 30, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
)
def test_date_last_modified_is_read(entity: str, raw: object, expected: datetime | None) -> None:
    assert normalize(entity, {**MINIMAL[entity], "dateLastModified": raw}).dateLastModified == expected


@pytest.mark.parametrize("entity", ENTITIES)
def test_bad_date_last_modified_is_rejected_naming_the_field(entity: str) -> None:
    reason = reason_of(entity, {**MINIMAL[entity], "dateLastModified": "yesterday"})

    assert reason.startswith("dateLastModified: ")


@pytest.mark.parametrize("entity", ENTITIES)
def test_unknown_keys_are_ignored(entity: str) -> None:
    record = normalize(entity, {**MINIMAL[entity], "metadata": {"x": 1}, "href": "/x", "extra": None})

    assert record == normalize(entity, MINIMAL[entity])


# ---- deletions -----------------------------------------------------------------


@pytest.mark.parametrize("entity", ENTITIES)
@pytest.mark.parametrize("status", ["tobedeleted", "inactive", "TOBEDELETED"])
def test_deletion_with_only_an_id_is_accepted(entity: str, status: str) -> None:
    record = normalize(entity, {"sourcedId": "gone-1", "status": status})

    assert type(record) is MODELS[entity]
    assert record.sourcedId == "gone-1"
    assert record.deleted


@pytest.mark.parametrize("entity", ENTITIES)
def test_deletion_without_an_id_is_rejected(entity: str) -> None:
    assert reason_of(entity, {"status": "tobedeleted"}) == "sourcedId: missing"


@pytest.mark.parametrize(
    ("entity", "required", "reason"),
    [
        ("classes", "school", "schoolId: missing"),
        ("enrollments", "user", "userId: missing"),
        ("enrollments", "class", "classId: missing"),
    ],
)
def test_active_record_missing_a_reference_is_rejected_but_its_deletion_is_not(
    entity: str, required: str, reason: str
) -> None:
    raw = {k: v for k, v in MINIMAL[entity].items() if k != required}

    assert reason_of(entity, raw) == reason
    assert normalize(entity, {**raw, "status": "tobedeleted"}).deleted


# ---- references ------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        {"sourcedId": "o1", "href": "/orgs/o1", "type": "org"},
        {"sourcedId": "o1"},
        {"sourcedId": " o1 "},
        "o1",
        " o1 ",
    ],
)
def test_class_school_reference_as_object_or_bare_id(ref: object) -> None:
    record = normalize("classes", {**MINIMAL["classes"], "school": ref})

    assert record.schoolId == "o1"


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        ([{"sourcedId": "t1"}, {"sourcedId": "t2"}], ("t1", "t2")),
        (["t1", "t2"], ("t1", "t2")),
        ([{"sourcedId": "t1"}, "t2"], ("t1", "t2")),
        ("t1,t2", ("t1", "t2")),
        ("t1, t2", ("t1", "t2")),
        ({"sourcedId": "t1"}, ("t1",)),
        ("t1", ("t1",)),
        ([], ()),
        (None, ()),
        ("", ()),
        ([{"sourcedId": ""}, None, "t3"], ("t3",)),
    ],
)
def test_class_terms_as_object_list_bare_ids_or_comma_string(
    terms: object, expected: tuple[str, ...]
) -> None:
    assert normalize("classes", {**MINIMAL["classes"], "terms": terms}).termIds == expected


@pytest.mark.parametrize(
    ("periods", "expected"),
    [
        (["3"], ("3",)),
        (["1", "3"], ("1", "3")),
        ("3", ("3",)),
        ("1,3", ("1", "3")),
        ("1, 3 ,", ("1", "3")),
        ([" 2 ", ""], ("2",)),
        ([], ()),
        (None, ()),
        ("", ()),
    ],
)
def test_class_periods_as_list_or_comma_string(periods: object, expected: tuple[str, ...]) -> None:
    assert normalize("classes", {**MINIMAL["classes"], "periods": periods}).periods == expected


def test_class_fields_are_read() -> None:
    record = normalize(
        "classes",
        {
            "sourcedId": "c1",
            "title": " Algebra I ",
            "classCode": "ALG1-3",
            "classType": "scheduled",
            "school": {"sourcedId": "o1"},
            "terms": [{"sourcedId": "t1"}],
            "periods": ["3"],
            "course": {"sourcedId": "crs-1"},
        },
    )

    assert record == RosterClass(
        sourcedId="c1",
        title="Algebra I",
        classCode="ALG1-3",
        classType="scheduled",
        schoolId="o1",
        termIds=("t1",),
        periods=("3",),
        courseId="crs-1",
    )


@pytest.mark.parametrize("ref", [{"sourcedId": "x"}, "x"])
def test_enrollment_references_as_object_or_bare_id(ref: object) -> None:
    raw = {"sourcedId": "e1", "user": ref, "class": ref, "school": ref, "role": "teacher"}

    record = normalize("enrollments", raw)

    assert (record.userId, record.classId, record.schoolId) == ("x", "x", "x")


def test_enrollment_without_school_is_accepted() -> None:
    assert normalize("enrollments", MINIMAL["enrollments"]).schoolId is None


def test_org_and_session_parents_as_object_or_bare_id() -> None:
    assert normalize("orgs", {"sourcedId": "o1", "parent": {"sourcedId": "d"}}).parentId == "d"
    assert normalize("orgs", {"sourcedId": "o1", "parent": "d"}).parentId == "d"
    assert normalize("orgs", {"sourcedId": "o1", "parent": None}).parentId is None
    assert normalize("academicSessions", {"sourcedId": "t1", "parent": {"sourcedId": "y"}}).parentId == "y"


@pytest.mark.parametrize(
    ("orgs", "expected"),
    [
        ([{"sourcedId": "o1"}, {"sourcedId": "o2"}], ("o1", "o2")),
        (["o1", "o2"], ("o1", "o2")),
        ("o1,o2", ("o1", "o2")),
        ({"sourcedId": "o1"}, ("o1",)),
        (None, ()),
    ],
)
def test_user_orgs_as_objects_bare_ids_or_comma_string(orgs: object, expected: tuple[str, ...]) -> None:
    assert normalize("users", {**MINIMAL["users"], "orgs": orgs}).orgIds == expected


# ---- roles: 1.1 `role` and 1.2 `roles[]` ----------------------------------------


@pytest.mark.parametrize(
    "role",
    [
        "student",
        "teacher",
        "aide",
        "administrator",
        "parent",
        "guardian",
        "relative",
        "proctor",
        "counselor",
        "districtAdministrator",
        "siteAdministrator",
        "systemAdministrator",
        "principal",
    ],
)
def test_user_role_1_1_is_read_as_given(role: str) -> None:
    assert normalize("users", {**MINIMAL["users"], "role": role}).role == role


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ([{"roleType": "primary", "role": "teacher", "org": {"sourcedId": "o1"}}], "teacher"),
        (
            [
                {"roleType": "secondary", "role": "teacher"},
                {"roleType": "primary", "role": "principal"},
            ],
            "principal",
        ),
        (
            [
                {"roleType": "secondary", "role": "aide"},
                {"roleType": "secondary", "role": "teacher"},
                {"roleType": "primary", "role": "districtAdministrator"},
            ],
            "districtAdministrator",
        ),
        # No primary role: the first counts.
        ([{"roleType": "secondary", "role": "aide"}, {"roleType": "secondary", "role": "teacher"}], "aide"),
        ([{"role": "student"}], "student"),
        # Junk entries are skipped when looking for the first.
        (["teacher", {"roleType": "secondary", "role": "aide"}], "aide"),
    ],
)
def test_user_role_1_2_roles_list_primary_counts(roles: list, expected: str) -> None:
    raw = {"sourcedId": "u1", "email": "a@x.org", "roles": roles}

    assert normalize("users", raw).role == expected


def test_user_1_2_roles_list_wins_over_a_role_key() -> None:
    raw = {"sourcedId": "u1", "role": "student", "roles": [{"roleType": "primary", "role": "teacher"}]}

    assert normalize("users", raw).role == "teacher"


def test_user_empty_1_2_roles_list_falls_back_to_role_key() -> None:
    raw = {"sourcedId": "u1", "role": "student", "roles": []}

    assert normalize("users", raw).role == "student"


# ---- booleans ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("false", False),
        ("TRUE", True),
        ("False", False),
        (" true ", True),
        ("1", True),
        ("0", False),
        (None, True),  # absent: enabled
        ("", True),
    ],
)
def test_enabled_user_as_json_boolean_or_text(raw: object, expected: bool) -> None:
    assert normalize("users", {**MINIMAL["users"], "enabledUser": raw}).enabledUser is expected


def test_enabled_user_absent_means_enabled() -> None:
    assert normalize("users", MINIMAL["users"]).enabledUser is True


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(True, True), (False, False), ("true", True), ("false", False), (None, False), ("", False)],
)
def test_enrollment_primary_as_json_boolean_or_text(raw: object, expected: bool) -> None:
    assert normalize("enrollments", {**MINIMAL["enrollments"], "primary": raw}).primary is expected


@pytest.mark.parametrize("raw", ["maybe", "yes please", "2", "t", [], {}])
def test_bad_boolean_is_rejected_naming_the_value(raw: object) -> None:
    assert (
        reason_of("users", {**MINIMAL["users"], "enabledUser": raw})
        == f"enabledUser: not a boolean: {str(raw)[:40]!r}"
    )
    assert reason_of("enrollments", {**MINIMAL["enrollments"], "primary": raw}).startswith(
        "primary: not a boolean: "
    )


# ---- user fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Pat.Lee@Lincoln.K12.US", "pat.lee@lincoln.k12.us"),
        ("  PAT@X.ORG ", "pat@x.org"),
        ("pat@x.org", "pat@x.org"),
        (None, ""),
        ("", ""),
    ],
)
def test_email_is_stored_lower_cased_and_trimmed(raw: object, expected: str) -> None:
    assert normalize("users", {**MINIMAL["users"], "email": raw}).email == expected


def test_user_fields_are_read() -> None:
    raw = {
        "sourcedId": "u1",
        "status": "active",
        "dateLastModified": "2026-08-01T00:00:00Z",
        "username": " JSmith ",
        "enabledUser": "false",
        "givenName": "John",
        "familyName": "Smith",
        "role": "teacher",
        "email": "JSmith@Lincoln.K12.US",
        "orgs": [{"sourcedId": "org-school-1", "type": "org"}],
        "agents": [],
    }

    assert normalize("users", raw) == User(
        sourcedId="u1",
        dateLastModified=datetime(2026, 8, 1, tzinfo=UTC),
        username="JSmith",
        enabledUser=False,
        givenName="John",
        familyName="Smith",
        role="teacher",
        email="jsmith@lincoln.k12.us",
        orgIds=("org-school-1",),
    )


# ---- dates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "field", "model_field"),
    [
        ("academicSessions", "startDate", "startDate"),
        ("academicSessions", "endDate", "endDate"),
        ("enrollments", "beginDate", "beginDate"),
        ("enrollments", "endDate", "endDate"),
    ],
)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("2026-09-01", date(2026, 9, 1)), ("2026-09-01T00:00:00Z", date(2026, 9, 1)), (None, None), ("", None)],
)
def test_dates_are_read(
    entity: str, field: str, model_field: str, raw: object, expected: date | None
) -> None:
    record = normalize(entity, {**MINIMAL[entity], field: raw})

    assert getattr(record, model_field) == expected


@pytest.mark.parametrize(
    ("entity", "field"),
    [
        ("academicSessions", "startDate"),
        ("academicSessions", "endDate"),
        ("enrollments", "beginDate"),
        ("enrollments", "endDate"),
    ],
)
@pytest.mark.parametrize("raw", ["2026-13-01", "2026-02-30", "next monday", "01/09/2026", "2026"])
def test_bad_date_is_rejected_naming_the_field(entity: str, field: str, raw: str) -> None:
    reason = reason_of(entity, {**MINIMAL[entity], field: raw})

    assert reason.startswith(f"{field}: ")


def test_session_fields_are_read() -> None:
    raw = {
        "sourcedId": "as-fall",
        "title": "Fall 2026",
        "type": "term",
        "startDate": "2026-08-20",
        "endDate": "2026-12-20",
        "parent": {"sourcedId": "as-year"},
    }

    assert normalize("academicSessions", raw) == AcademicSession(
        sourcedId="as-fall",
        title="Fall 2026",
        type="term",
        startDate=date(2026, 8, 20),
        endDate=date(2026, 12, 20),
        parentId="as-year",
    )


# ---- record_id (naming a rejected record) ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [({"sourcedId": " u1 "}, "u1"), ({"sourcedId": 5}, "5"), ({}, ""), ("u1", ""), (None, ""), ([], "")],
)
def test_record_id_names_a_raw_record_as_best_known(raw: object, expected: str) -> None:
    assert record_id(raw) == expected


# ---- required content of active records ------------------------------------------


@pytest.mark.parametrize(
    ("entity", "raw", "reason"),
    [
        ("users", {"sourcedId": "u1", "email": "a@x.org"}, "role: missing"),
        ("users", {"sourcedId": "u1", "role": "  "}, "role: missing"),
        ("users", {"sourcedId": "u1", "roles": []}, "role: missing"),
        ("users", {"sourcedId": "u1", "roles": [{"roleType": "primary"}]}, "role: missing"),
        ("enrollments", {"sourcedId": "e1", "user": "u1", "class": "c1"}, "role: missing"),
        ("enrollments", {"sourcedId": "e1", "role": "student"}, "userId: missing; classId: missing"),
        ("classes", {"sourcedId": "c1", "school": "o1"}, "title: missing"),
        ("classes", {"sourcedId": "c1", "title": "", "school": "o1"}, "title: missing"),
        ("classes", {"sourcedId": "c1"}, "title: missing; schoolId: missing"),
    ],
)
def test_active_record_without_what_it_cannot_do_without_is_rejected(
    entity: str, raw: dict, reason: str
) -> None:
    # Not imported silently: an IT administrator sees why (SPEC 5).
    assert reason_of(entity, raw) == reason
    assert normalize(entity, {**raw, "status": "tobedeleted"}).deleted


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-09-01T08:00:00", datetime(2026, 9, 1, 8, tzinfo=UTC)),
        ("2026-09-01T08:00:00Z", datetime(2026, 9, 1, 8, tzinfo=UTC)),
        ("2026-09-01T03:00:00-05:00", datetime(2026, 9, 1, 8, tzinfo=UTC)),
    ],
)
def test_date_last_modified_without_a_zone_is_read_as_utc(raw: str, expected: datetime) -> None:
    # Every two versions of a record can then be compared.
    stamp = normalize("users", {**MINIMAL["users"], "dateLastModified": raw}).dateLastModified

    assert stamp == expected
    assert stamp is not None and stamp.utcoffset() is not None


@pytest.mark.parametrize(
    ("entity", "raw"),
    [
        ("users", {"email": "a@x.org"}),
        ("classes", {"sourcedId": None, "title": "Algebra I"}),
        ("enrollments", {"sourcedId": "", "user": "u1", "class": "c1"}),
    ],
)
def test_reason_names_a_missing_sourced_id_with_the_other_missing_fields(entity: str, raw: dict) -> None:
    assert "sourcedId: missing" in reason_of(entity, raw)


@pytest.mark.parametrize(
    ("entity", "raw"),
    [
        ("users", {"sourcedId": "u1", "status": "tobedeleted", "role": "wizard"}),
        ("users", {"sourcedId": "u1", "status": "tobedeleted", "email": ["a@b.org"], "enabledUser": "maybe"}),
        (
            "enrollments",
            {"sourcedId": "e1", "status": "tobedeleted", "beginDate": "2026-02-01", "endDate": "2025-01-01"},
        ),
        ("classes", {"sourcedId": "c1", "status": "tobedeleted", "periods": {"bad": 1}}),
    ],
)
def test_a_deletion_with_unreadable_fields_still_deletes(entity: str, raw: dict) -> None:
    record = normalize(entity, raw)
    assert record.deleted
    assert record.sourcedId == raw["sourcedId"]
