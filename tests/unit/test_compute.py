"""`compute_product`: the rules of SPEC 4 end to end, on small hand-built snapshots.

Records are built from raw OneRoster-shaped dicts through `normalize`, as the
pipeline does, and every test asserts the exact product records it expects.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

import pytest

from rostersync.roster.compute import (
    MAIN_LOCATION,
    ProductState,
    RosterOptions,
    Snapshot,
    compute_product,
)
from rostersync.roster.models import Record, normalize
from rostersync.roster.product import Issue, ProductClass, ProductEnrollment, ProductUser, School

TODAY = date(2026, 10, 1)


def days(n: int) -> str:
    return (TODAY + timedelta(days=n)).isoformat()


# ---- raw record builders -----------------------------------------------------------

AUTO_EMAIL = "<sourcedId>@x.org"  # a marker: the user's email is made from its sourcedId


def org(sid: str, name: str = "", *, type_: str = "school", status: str = "active") -> dict[str, Any]:
    return {"sourcedId": sid, "status": status, "name": name or sid.title(), "type": type_}


def term(sid: str, title: str, start: str | None = None, *, status: str = "active") -> dict[str, Any]:
    return {"sourcedId": sid, "status": status, "title": title, "type": "term", "startDate": start}


def klass(
    sid: str,
    school: str = "s1",
    *,
    title: str = "",
    terms: tuple[str, ...] = (),
    periods: tuple[str, ...] = (),
    code: str = "",
    status: str = "active",
) -> dict[str, Any]:
    return {
        "sourcedId": sid,
        "status": status,
        "title": title or f"Class {sid}",
        "classCode": code,
        "school": {"sourcedId": school},
        "terms": [{"sourcedId": t} for t in terms],
        "periods": list(periods),
    }


def user(
    sid: str,
    role: str = "student",
    *,
    email: str | None = AUTO_EMAIL,
    orgs: tuple[str, ...] = ("s1",),
    enabled: Any = True,
    username: str = "",
    status: str = "active",
) -> dict[str, Any]:
    return {
        "sourcedId": sid,
        "status": status,
        "role": role,
        "email": f"{sid}@x.org" if email is AUTO_EMAIL else email,
        "orgs": [{"sourcedId": o} for o in orgs],
        "enabledUser": enabled,
        "username": username,
        "givenName": f"G{sid}",
        "familyName": f"F{sid}",
    }


def enr(
    user_id: str,
    class_id: str,
    role: str = "student",
    *,
    begin: str | None = None,
    end: str | None = None,
    status: str = "active",
    sid: str = "",
) -> dict[str, Any]:
    return {
        "sourcedId": sid or f"e-{class_id}-{user_id}",
        "status": status,
        "user": {"sourcedId": user_id},
        "class": {"sourcedId": class_id},
        "role": role,
        "beginDate": begin,
        "endDate": end,
    }


def snapshot(
    *,
    orgs: list[dict] = (),  # type: ignore[assignment]
    terms: list[dict] = (),  # type: ignore[assignment]
    classes: list[dict] = (),  # type: ignore[assignment]
    users: list[dict] = (),  # type: ignore[assignment]
    enrollments: list[dict] = (),  # type: ignore[assignment]
) -> Snapshot:
    def read(entity: str, raws: list[dict]) -> dict[str, Record]:
        records = [normalize(entity, raw) for raw in raws]
        return {r.sourcedId: r for r in records}

    return Snapshot(
        orgs=read("orgs", orgs),
        academic_sessions=read("academicSessions", terms),
        classes=read("classes", classes),
        users=read("users", users),
        enrollments=read("enrollments", enrollments),
    )


def compute(snap: Snapshot, **options: Any) -> ProductState:
    return compute_product(snap, RosterOptions(**options), TODAY)


def product_user(sid: str, role: str = "Student", **changes: Any) -> ProductUser:
    fields: dict[str, Any] = {
        "id": sid,
        "sourcedId": sid,
        "email": f"{sid}@x.org",
        "username": f"{sid}@x.org",
        "givenName": f"G{sid}",
        "familyName": f"F{sid}",
        "role": role,
        "status": "active",
        "schoolIds": ("s1",),
    }
    return ProductUser(**(fields | changes))


def product_class(sid: str, **changes: Any) -> ProductClass:
    fields: dict[str, Any] = {
        "id": sid,
        "sourcedId": sid,
        "name": f"Class {sid}",
        "title": f"Class {sid}",
        "schoolId": "s1",
        "classCode": "",
        "periods": (),
        "terms": (),
        "termIds": (),
        "teacherIds": (),
        "studentIds": (),
        "startDate": None,
        "visibleFrom": None,
    }
    return ProductClass(**(fields | changes))


def product_enrollment(user_id: str, class_id: str, role: str = "student") -> ProductEnrollment:
    return ProductEnrollment(id=f"e-{class_id}-{user_id}", classId=class_id, userId=user_id, role=role)


def err(entity: str, sid: str, reason: str) -> Issue:
    return Issue(entity=entity, sourcedId=sid, reason=reason)


# ---- a small district, every output exact -------------------------------------------


def small_district() -> Snapshot:
    return snapshot(
        orgs=[
            org("d", "Lincoln USD", type_="district"),
            org("s1", "Lincoln High"),
            org("s2", "Washington Middle"),
        ],
        terms=[term("fall", "Fall 2026", days(-30))],
        classes=[
            klass("c1", "s1", title="Algebra I", terms=("fall",), periods=("3",), code="ALG1"),
            klass("c2", "s2", title="Band", terms=("fall",), periods=("1",)),
        ],
        users=[
            user("t1", "teacher", orgs=("d", "s1")),
            user("t2", "teacher", orgs=("s2",)),
            user("10", orgs=("s1",)),
            user("9", orgs=("s2", "s1")),
            user("p1", "parent"),
        ],
        enrollments=[
            enr("t1", "c1", "teacher", begin=days(-30)),
            enr("10", "c1", begin=days(-29)),
            enr("9", "c1", begin=days(-29)),
            enr("t2", "c2", "teacher", begin=days(-30)),
            enr("9", "c2", begin=days(-28)),
        ],
    )


def test_small_district_with_auto_create_schools_on() -> None:
    state = compute(small_district(), auto_create_schools=True)

    assert state.schools == {
        "s1": School(id="s1", name="Lincoln High"),
        "s2": School(id="s2", name="Washington Middle"),
    }
    start = TODAY - timedelta(days=30)
    assert state.classes == {
        "c1": product_class(
            "c1",
            name="Algebra I",
            title="Algebra I",
            classCode="ALG1",
            periods=("3",),
            terms=("Fall 2026",),
            termIds=("fall",),
            teacherIds=("t1",),
            studentIds=("9", "10"),
            startDate=start,
            visibleFrom=start - timedelta(days=15),
        ),
        "c2": product_class(
            "c2",
            name="Band",
            title="Band",
            schoolId="s2",
            periods=("1",),
            terms=("Fall 2026",),
            termIds=("fall",),
            teacherIds=("t2",),
            studentIds=("9",),
            startDate=start,
            visibleFrom=start - timedelta(days=15),
        ),
    }
    assert state.users == {
        "t1": product_user("t1", "Teacher 1", schoolIds=("s1",)),
        "t2": product_user("t2", "Teacher 1", schoolIds=("s2",)),
        "10": product_user("10", schoolIds=("s1",)),
        "9": product_user("9", schoolIds=("s1", "s2")),
    }
    assert state.enrollments == {
        e.id: e
        for e in (
            product_enrollment("t1", "c1", "teacher"),
            product_enrollment("10", "c1"),
            product_enrollment("9", "c1"),
            product_enrollment("t2", "c2", "teacher"),
            product_enrollment("9", "c2"),
        )
    }
    assert state.errors == []
    assert state.warnings == []


def test_small_district_with_auto_create_schools_off_has_one_main_location() -> None:
    state = compute(small_district(), auto_create_schools=False)

    assert state.schools == {"main": School(id="main", name="Main Location")}
    assert state.schools["main"] == MAIN_LOCATION
    assert {c.id: c.schoolId for c in state.classes.values()} == {"c1": "main", "c2": "main"}
    assert {u.id: u.schoolIds for u in state.users.values()} == {
        "t1": ("main",),
        "t2": ("main",),
        "10": ("main",),
        "9": ("main",),
    }
    assert state.errors == []


def test_only_school_orgs_become_locations() -> None:
    snap = snapshot(
        orgs=[
            org("d", type_="district"),
            org("s1", "One"),
            org("dept", type_="department"),
            org("n", type_="national"),
            org("s2", "Two"),
        ]
    )

    assert compute(snap).schools == {"s1": School(id="s1", name="One"), "s2": School(id="s2", name="Two")}


def test_user_school_ids_are_its_school_orgs_sorted_and_known_only() -> None:
    snap = snapshot(
        orgs=[org("d", type_="district"), org("s1"), org("s2")],
        users=[user("u1", orgs=("s2", "d", "s1", "nowhere")), user("u2", orgs=()), user("u3", orgs=("d",))],
    )

    state = compute(snap)

    assert {u.id: u.schoolIds for u in state.users.values()} == {"u1": ("s1", "s2"), "u2": (), "u3": ()}


# ---- classes: teachers and students ----------------------------------------------


def class_roster_snapshot() -> Snapshot:
    return snapshot(
        orgs=[org("s1")],
        classes=[klass("c1")],
        users=[
            user("t1", "teacher"),
            user("a1", "aide"),
            user("a2", "aide"),
            user("adm", "administrator"),
            user("s1stu", "student"),
            user("s2stu", "student"),
            user("p1", "parent"),
        ],
        enrollments=[
            enr("t1", "c1", "teacher"),
            enr("a1", "c1", "aide"),
            enr("a2", "c1", "teacher"),  # an aide on the roster as teacher
            enr("adm", "c1", "administrator"),
            enr("s1stu", "c1", "student"),
            enr("s2stu", "c1", "student"),
            enr("p1", "c1", "student"),  # parents never imported, even enrolled
        ],
    )


def test_class_teacher_and_student_ids_with_import_admins_off() -> None:
    state = compute(class_roster_snapshot(), import_admins=False)

    assert state.classes["c1"].teacherIds == ("a2", "t1")
    assert state.classes["c1"].studentIds == ("s1stu", "s2stu")
    assert {u.id: u.role for u in state.users.values()} == {
        "t1": "Teacher 1",
        "a2": "Teacher 1",
        "s1stu": "Student",
        "s2stu": "Student",
    }
    assert set(state.enrollments) == {"e-c1-t1", "e-c1-a2", "e-c1-s1stu", "e-c1-s2stu"}
    assert state.errors == []


def test_class_teacher_and_student_ids_with_import_admins_on() -> None:
    mapping = {"teacher": "Teacher 3", "aide": "Teacher 2", "administrator": "District Admin"}

    state = compute(class_roster_snapshot(), import_admins=True, role_mapping=mapping)

    assert state.classes["c1"].teacherIds == ("a1", "a2", "adm", "t1")
    assert state.classes["c1"].studentIds == ("s1stu", "s2stu")
    assert {u.id: u.role for u in state.users.values()} == {
        "t1": "Teacher 3",
        "a1": "Teacher 2",
        "a2": "Teacher 2",
        "adm": "District Admin",
        "s1stu": "Student",
        "s2stu": "Student",
    }
    assert state.enrollments["e-c1-adm"] == product_enrollment("adm", "c1", "administrator")


def test_student_enrolled_as_teacher_is_teacher_1_and_a_teacher_of_that_class() -> None:
    snap = snapshot(
        orgs=[org("s1")],
        classes=[klass("c1"), klass("c2")],
        users=[user("ta", "student"), user("x", "student")],
        enrollments=[enr("ta", "c1", "teacher"), enr("ta", "c2", "student"), enr("x", "c1")],
    )

    state = compute(snap)

    assert state.users["ta"].role == "Teacher 1"
    assert state.classes["c1"].teacherIds == ("ta",)
    assert state.classes["c2"].studentIds == ("ta",)


def test_1_2_administrator_roles_are_imported_as_administrator_with_import_admins_on() -> None:
    roles = ["districtAdministrator", "siteAdministrator", "systemAdministrator", "principal"]
    raw_users = [
        {"sourcedId": r, "email": f"{r}@x.org", "roles": [{"roleType": "primary", "role": r}]} for r in roles
    ]
    snap = snapshot(orgs=[org("s1")], users=raw_users)

    assert compute(snap, import_admins=False).users == {}
    on = compute(snap, import_admins=True)
    assert {u.id: u.role for u in on.users.values()} == dict.fromkeys(roles, "School Admin")


def test_numeric_ids_sort_numerically_on_a_class() -> None:
    ids = ["100", "9", "10", "2", "abc"]
    snap = snapshot(
        orgs=[org("s1")],
        classes=[klass("c1")],
        users=[user(i) for i in ids],
        enrollments=[enr(i, "c1") for i in ids],
    )

    assert compute(snap).classes["c1"].studentIds == ("2", "9", "10", "100", "abc")


# ---- ended enrollments ------------------------------------------------------------


@pytest.mark.parametrize(
    ("end", "on_class"),
    [(days(-1), False), (days(-300), False), (days(0), True), (days(1), True), (None, True)],
    ids=["ended-yesterday", "ended-long-ago", "ends-today", "ends-tomorrow", "no-end"],
)
def test_ended_enrollment_drops_its_user_from_the_class(end: str | None, on_class: bool) -> None:
    snap = snapshot(
        orgs=[org("s1")],
        classes=[klass("c1"), klass("c2")],
        users=[user("u1")],
        enrollments=[enr("u1", "c1", end=end), enr("u1", "c2")],
    )

    state = compute(snap)

    assert state.classes["c1"].studentIds == (("u1",) if on_class else ())
    assert ("e-c1-u1" in state.enrollments) is on_class
    assert state.classes["c2"].studentIds == ("u1",)
    assert "u1" in state.users  # still a student of c2
    assert state.errors == []


def test_teacher_whose_only_roster_enrollment_ended_is_no_longer_a_roster_teacher() -> None:
    snap = snapshot(
        orgs=[org("s1")],
        classes=[klass("c1")],
        users=[user("t1", "teacher"), user("t2", "teacher")],
        enrollments=[enr("t1", "c1", "teacher", end=days(-1)), enr("t2", "c1", "teacher", end=days(0))],
    )

    state = compute(snap, import_admins=False)

    assert set(state.users) == {"t2"}
    assert state.classes["c1"].teacherIds == ("t2",)


# ---- emails ------------------------------------------------------------------------


@pytest.mark.parametrize("email", [None, ""])
def test_user_without_email_is_rejected_when_it_would_be_imported(email: str | None) -> None:
    snap = snapshot(
        orgs=[org("s1")],
        classes=[klass("c1")],
        users=[
            user("stu", email=email),
            user("roster-t", "teacher", email=email),
            user("free-t", "teacher", email=email),  # not on a roster, importAdmins off: not imported
            user("aide", "aide", email=email),
            user("par", "parent", email=email),
            user("ok"),
        ],
        enrollments=[enr("roster-t", "c1", "teacher"), enr("stu", "c1"), enr("ok", "c1")],
    )

    state = compute(snap, import_admins=False)

    assert set(state.users) == {"ok"}
    assert state.errors == [err("users", "roster-t", "no email"), err("users", "stu", "no email")]
    assert state.classes["c1"].teacherIds == ()
    assert state.classes["c1"].studentIds == ("ok",)
    assert set(state.enrollments) == {"e-c1-ok"}


def test_staff_without_email_is_rejected_with_import_admins_on() -> None:
    snap = snapshot(
        orgs=[org("s1")],
        users=[
            user("free-t", "teacher", email=None),
            user("aide", "aide", email=""),
            user("par", "parent", email=""),
        ],
    )

    state = compute(snap, import_admins=True)

    assert state.users == {}
    assert state.errors == [err("users", "aide", "no email"), err("users", "free-t", "no email")]


@pytest.mark.parametrize("email", ["no-at-sign", "a@localhost", "@x.org", "a b@x.org"])
def test_user_with_an_unusable_email_is_rejected(email: str) -> None:
    snap = snapshot(orgs=[org("s1")], users=[user("u1", email=email)])

    state = compute(snap)

    assert state.users == {}
    assert state.errors == [err("users", "u1", "invalid email")]


def test_duplicate_email_lowest_sourced_id_is_imported_the_other_rejected() -> None:
    snap = snapshot(
        orgs=[org("s1")],
        classes=[klass("c1")],
        users=[
            user("u-dup-b", email="pat.lee@LINCOLN.k12.us"),
            user("u-dup-a", email="Pat.Lee@lincoln.k12.us"),
        ],
        enrollments=[enr("u-dup-a", "c1"), enr("u-dup-b", "c1")],
    )

    state = compute(snap)

    assert state.users == {
        "u-dup-a": product_user("u-dup-a", email="pat.lee@lincoln.k12.us", username="pat.lee@lincoln.k12.us")
    }
    assert state.errors == [err("users", "u-dup-b", "duplicate email: sourcedId u-dup-a has it")]
    assert state.classes["c1"].studentIds == ("u-dup-a",)
    assert set(state.enrollments) == {"e-c1-u-dup-a"}


def test_duplicate_email_lowest_sourced_id_compares_numbers_as_numbers() -> None:
    snap = snapshot(
        orgs=[org("s1")],
        users=[
            user("10", email="Same@X.org"),
            user("9", email="same@x.org"),
            user("100", email="SAME@x.ORG"),
        ],
    )

    state = compute(snap)

    assert set(state.users) == {"9"}
    assert state.errors == [
        err("users", "10", "duplicate email: sourcedId 9 has it"),
        err("users", "100", "duplicate email: sourcedId 9 has it"),
    ]


def test_duplicate_email_of_a_user_not_imported_does_not_count() -> None:
    snap = snapshot(
        orgs=[org("s1")],
        users=[user("1", "parent", email="pat@x.org"), user("2", email="pat@x.org")],
    )

    state = compute(snap)

    assert set(state.users) == {"2"}
    assert state.errors == []


# ---- status ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enabled", "status"),
    [(True, "active"), (False, "inactive"), ("true", "active"), ("false", "inactive"), (None, "active")],
)
def test_enabled_user_false_is_imported_inactive(enabled: Any, status: str) -> None:
    snap = snapshot(orgs=[org("s1")], users=[user("u1", enabled=enabled)])

    assert compute(snap).users["u1"].status == status


# ---- deletions and unknown references --------------------------------------------------


def test_tobedeleted_records_are_ignored() -> None:
    snap = snapshot(
        orgs=[org("s1"), org("s-gone", status="tobedeleted")],
        terms=[term("fall", "Fall"), term("old", "Old", status="tobedeleted")],
        classes=[klass("c1", terms=("fall", "old")), {"sourcedId": "c-gone", "status": "tobedeleted"}],
        users=[user("u1", orgs=("s1", "s-gone")), {"sourcedId": "u-gone", "status": "inactive"}],
        enrollments=[enr("u1", "c1"), {"sourcedId": "e-gone", "status": "tobedeleted"}],
    )

    state = compute(snap)

    assert set(state.schools) == {"s1"}
    assert set(state.classes) == {"c1"}
    assert state.classes["c1"].termIds == ("fall", "old")
    assert state.classes["c1"].terms == ("Fall",)
    assert set(state.users) == {"u1"}
    assert state.users["u1"].schoolIds == ("s1",)
    assert set(state.enrollments) == {"e-c1-u1"}
    assert state.errors == []


def test_enrollment_to_unknown_class_or_user_is_rejected() -> None:
    snap = snapshot(
        orgs=[org("s1")],
        classes=[klass("c1"), {"sourcedId": "c-gone", "status": "tobedeleted"}],
        users=[user("u1"), {"sourcedId": "u-gone", "status": "tobedeleted"}],
        enrollments=[
            enr("u1", "c1"),
            enr("u1", "c-nope", sid="e1"),
            enr("u-nope", "c1", sid="e2"),
            enr("u1", "c-gone", sid="e3"),
            enr("u-gone", "c1", sid="e4"),
        ],
    )

    state = compute(snap)

    assert set(state.enrollments) == {"e-c1-u1"}
    assert state.errors == [
        err("enrollments", "e1", "unknown or rejected class 'c-nope'"),
        err("enrollments", "e2", "unknown user 'u-nope'"),
        err("enrollments", "e3", "unknown or rejected class 'c-gone'"),
        err("enrollments", "e4", "unknown user 'u-gone'"),
    ]


def test_class_of_an_unknown_school_is_rejected_with_auto_create_schools_on() -> None:
    snap = snapshot(
        orgs=[org("d", type_="district"), org("s1")],
        classes=[klass("c1", "s1"), klass("c2", "s-nope"), klass("c3", "d")],
        users=[user("u1")],
        enrollments=[enr("u1", "c1"), enr("u1", "c2", sid="e2")],
    )

    on = compute(snap, auto_create_schools=True)

    assert set(on.classes) == {"c1"}
    assert on.errors == [
        err("classes", "c2", "unknown school 's-nope'"),
        err("classes", "c3", "unknown school 'd'"),
        err("enrollments", "e2", "unknown or rejected class 'c2'"),
    ]

    off = compute(snap, auto_create_schools=False)

    assert set(off.classes) == {"c1", "c2", "c3"}
    assert {c.schoolId for c in off.classes.values()} == {"main"}
    assert off.errors == []


# ---- future classes ------------------------------------------------------------------


@pytest.mark.parametrize("lead", [0, 15, 30])
def test_future_class_is_hidden_until_lead_days_before_it_starts(lead: int) -> None:
    snap = snapshot(
        orgs=[org("s1")],
        terms=[term("spring", "Spring 2027", days(40)), term("fall", "Fall 2026", days(-60))],
        classes=[
            klass("by-enrollment", terms=("fall",)),
            klass("by-term", terms=("spring",)),
            klass("undated"),
            klass("two-terms", terms=("spring", "fall")),
        ],
        users=[user("t1", "teacher"), user("u1")],
        enrollments=[
            enr("t1", "by-enrollment", "teacher", begin=days(45)),
            enr("u1", "by-enrollment", begin=days(50)),
            enr("u1", "by-term"),
            enr("u1", "undated"),
        ],
    )

    state = compute(snap, future_class_lead_days=lead)

    def dates(cid: str) -> tuple[date | None, date | None]:
        return state.classes[cid].startDate, state.classes[cid].visibleFrom

    def at(n: int) -> date:
        return TODAY + timedelta(days=n)

    assert dates("by-enrollment") == (at(45), at(45 - lead))
    assert dates("by-term") == (at(40), at(40 - lead))
    assert dates("undated") == (None, None)
    assert dates("two-terms") == (at(-60), at(-60 - lead))


def test_ended_enrollment_does_not_set_the_class_start_date() -> None:
    snap = snapshot(
        orgs=[org("s1")],
        classes=[klass("c1")],
        users=[user("u1"), user("u2")],
        enrollments=[enr("u1", "c1", begin=days(-90), end=days(-1)), enr("u2", "c1", begin=days(20))],
    )

    cls = compute(snap).classes["c1"]

    assert cls.startDate == TODAY + timedelta(days=20)
    assert cls.visibleFrom == TODAY + timedelta(days=5)


# ---- names and usernames -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ((), "Algebra I"),
        (("period", "term"), "Algebra I - Period 3 - Fall 2026"),
        (("term", "period"), "Algebra I - Fall 2026 - Period 3"),
        (("classCode", "sourcedId"), "Algebra I - ALG1-3 - cls-alg1-p3"),
        (
            ("period", "term", "classCode", "sourcedId"),
            "Algebra I - Period 3 - Fall 2026 - ALG1-3 - cls-alg1-p3",
        ),
    ],
)
def test_class_name_fields_are_applied(fields: tuple[str, ...], expected: str) -> None:
    snap = snapshot(
        orgs=[org("s1")],
        terms=[term("fall", "Fall 2026")],
        classes=[klass("cls-alg1-p3", title="Algebra I", terms=("fall",), periods=("3",), code="ALG1-3")],
    )

    cls = compute(snap, class_name_fields=fields).classes["cls-alg1-p3"]

    assert cls.name == expected
    assert cls.title == "Algebra I"


def test_class_name_lists_several_periods_and_terms_and_skips_unknown_terms() -> None:
    snap = snapshot(
        orgs=[org("s1")],
        terms=[term("q1", "Q1"), term("q2", "Q2")],
        classes=[klass("c1", title="Art", terms=("q1", "q-unknown", "q2"), periods=("1", "2"))],
    )

    cls = compute(snap, class_name_fields=("period", "term")).classes["c1"]

    assert cls.name == "Art - Period 1, 2 - Q1, Q2"
    assert cls.terms == ("Q1", "Q2")
    assert cls.termIds == ("q1", "q-unknown", "q2")


def test_usernames_from_the_source_through_the_rules_with_conflicts_and_fallbacks() -> None:
    snap = snapshot(
        orgs=[org("s1")],
        users=[
            user("u-ucoll-1", email="mgarcia@lincoln.k12.us", username="MGarcia@Lincoln.K12.US"),
            user("u-ucoll-2", email="mgarcia@washington.k12.us", username="mgarcia@Washington.K12.US"),
            user("u-nouser", username=""),
        ],
    )
    rules = ({"op": "lowercase"}, {"op": "stripDomain"})

    state = compute(snap, username_source=True, username_rules=rules)

    assert {u.id: u.username for u in state.users.values()} == {
        "u-ucoll-1": "mgarcia",
        "u-ucoll-2": "mgarcia@washington.k12.us",
        "u-nouser": "u-nouser@x.org",
    }
    assert state.warnings == [
        err("users", "u-nouser", "empty source username: the email is the username"),
        err("users", "u-ucoll-2", "username conflict with sourcedId u-ucoll-1: the email is the username"),
    ]
    assert state.errors == []


def test_username_is_the_email_when_username_source_is_off() -> None:
    snap = snapshot(orgs=[org("s1")], users=[user("u1", email="A@X.org", username="alpha")])

    state = compute(snap, username_source=False, username_rules=({"op": "uppercase"},))

    assert state.users["u1"].username == "a@x.org"
    assert state.warnings == []


# ---- order of records --------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_result_does_not_depend_on_the_order_of_records(seed: int) -> None:
    snap = small_district()
    extra = snapshot(
        orgs=[org("s1")],
        classes=[klass("c9", "s-nope")],
        users=[user("d1", email="dup@x.org"), user("d2", email="DUP@x.org"), user("ne", email=None)],
        enrollments=[enr("ghost", "c1", sid="e-ghost")],
    )
    rng = random.Random(seed)

    def shuffled(*maps: Any) -> dict[str, Any]:
        items = [item for m in maps for item in m.items()]
        rng.shuffle(items)
        return dict(items)

    base = Snapshot(
        orgs={**snap.orgs, **extra.orgs},
        academic_sessions=dict(snap.academic_sessions),
        classes={**snap.classes, **extra.classes},
        users={**snap.users, **extra.users},
        enrollments={**snap.enrollments, **extra.enrollments},
    )
    mixed = Snapshot(
        orgs=shuffled(base.orgs),
        academic_sessions=shuffled(base.academic_sessions),
        classes=shuffled(base.classes),
        users=shuffled(base.users),
        enrollments=shuffled(base.enrollments),
    )

    expected, got = compute(base), compute(mixed)

    assert got.schools == expected.schools
    assert got.classes == expected.classes
    assert got.users == expected.users
    assert got.enrollments == expected.enrollments
    assert got.errors == expected.errors
    assert got.warnings == expected.warnings
    assert [e.sourcedId for e in expected.errors] == ["c9", "e-ghost", "d2", "ne"]
