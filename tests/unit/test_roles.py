"""Who is imported and with which product role (SPEC 3 `importAdmins`/`roleMapping`, SPEC 4)."""

from __future__ import annotations

import pytest

from rostersync.roster.roles import PRODUCT_ROLES, product_role, role_group

DEFAULT_MAPPING = {"teacher": "Teacher 1", "aide": "Teacher 2", "administrator": "School Admin"}
CUSTOM_MAPPING = {"teacher": "Teacher 3", "aide": "Teacher 2", "administrator": "District Admin"}

ADMINISTRATOR_ROLES = (
    "administrator",
    "districtAdministrator",
    "siteAdministrator",
    "systemAdministrator",
    "principal",
)
NEVER = ("parent", "guardian", "relative", "proctor", "counselor")
STAFF = ("teacher", "aide", *ADMINISTRATOR_ROLES)
ALL_ROLES = ("student", *STAFF, *NEVER)


def role(
    source_role: str, *, on_roster: bool, import_admins: bool, mapping: dict | None = None
) -> str | None:
    return product_role(
        source_role,
        teaches_on_roster=on_roster,
        import_admins=import_admins,
        role_mapping=mapping or DEFAULT_MAPPING,
    )


def expected_role(source_role: str, on_roster: bool, import_admins: bool, mapping: dict) -> str | None:
    """SPEC 4, written out independently of the code under test."""
    if source_role in NEVER:
        return None
    if import_admins and source_role in STAFF:
        group = "administrator" if source_role in ADMINISTRATOR_ROLES else source_role
        return mapping[group]
    if on_roster:
        return "Teacher 1"
    if source_role == "student":
        return "Student"
    return None


@pytest.mark.parametrize("mapping", [DEFAULT_MAPPING, CUSTOM_MAPPING], ids=["default", "custom"])
@pytest.mark.parametrize("import_admins", [False, True], ids=["admins-off", "admins-on"])
@pytest.mark.parametrize("on_roster", [False, True], ids=["unrostered", "roster-teacher"])
@pytest.mark.parametrize("source_role", ALL_ROLES)
def test_every_role_by_roster_and_import_admins(
    source_role: str, on_roster: bool, import_admins: bool, mapping: dict
) -> None:
    got = role(source_role, on_roster=on_roster, import_admins=import_admins, mapping=mapping)

    assert got == expected_role(source_role, on_roster, import_admins, mapping)
    assert got is None or got in PRODUCT_ROLES


@pytest.mark.parametrize("import_admins", [False, True])
def test_students_are_students(import_admins: bool) -> None:
    assert role("student", on_roster=False, import_admins=import_admins) == "Student"


@pytest.mark.parametrize("source_role", ["student", "teacher", "aide", *ADMINISTRATOR_ROLES, "", "other"])
def test_roster_teacher_is_teacher_1_whatever_its_own_role_with_admins_off(source_role: str) -> None:
    assert role(source_role, on_roster=True, import_admins=False) == "Teacher 1"


def test_student_enrolled_as_teacher_is_teacher_1_even_with_admins_on() -> None:
    assert role("student", on_roster=True, import_admins=True) == "Teacher 1"


def test_aide_enrolled_as_teacher_is_teacher_1_with_admins_off_and_mapped_with_admins_on() -> None:
    assert role("aide", on_roster=True, import_admins=False) == "Teacher 1"
    assert role("aide", on_roster=True, import_admins=True) == "Teacher 2"


@pytest.mark.parametrize("on_roster", [False, True])
@pytest.mark.parametrize(
    ("source_role", "expected"),
    [
        ("teacher", "Teacher 3"),
        ("aide", "Teacher 2"),
        *((r, "District Admin") for r in ADMINISTRATOR_ROLES),
    ],
)
def test_import_admins_on_uses_role_mapping(source_role: str, expected: str, on_roster: bool) -> None:
    assert role(source_role, on_roster=on_roster, import_admins=True, mapping=CUSTOM_MAPPING) == expected


@pytest.mark.parametrize("source_role", STAFF)
def test_unrostered_staff_with_admins_off_is_not_imported(source_role: str) -> None:
    assert role(source_role, on_roster=False, import_admins=False) is None


@pytest.mark.parametrize("import_admins", [False, True])
@pytest.mark.parametrize("on_roster", [False, True])
@pytest.mark.parametrize("source_role", NEVER)
def test_parents_and_their_like_are_never_imported(
    source_role: str, on_roster: bool, import_admins: bool
) -> None:
    assert role(source_role, on_roster=on_roster, import_admins=import_admins) is None


@pytest.mark.parametrize(
    ("source_role", "group"),
    [
        ("teacher", "teacher"),
        ("aide", "aide"),
        *((r, "administrator") for r in ADMINISTRATOR_ROLES),
        ("student", ""),
        *((r, "") for r in NEVER),
        ("", ""),
        ("Teacher", ""),
    ],
)
def test_role_group(source_role: str, group: str) -> None:
    assert role_group(source_role) == group


@pytest.mark.parametrize("source_role", ["", "unknown", "Student"])
def test_unknown_role_is_not_imported_unless_on_a_roster(source_role: str) -> None:
    assert role(source_role, on_roster=False, import_admins=True) is None
    assert role(source_role, on_roster=True, import_admins=True) == "Teacher 1"
