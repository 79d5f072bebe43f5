"""Who is imported, and with which product role (SPEC 3 `importAdmins`, SPEC 4)."""

from __future__ import annotations

from collections.abc import Mapping

from rostersync.roster.models import ADMIN_ROLES, NEVER_IMPORTED_ROLES

PRODUCT_ROLES = ("Student", "Teacher 1", "Teacher 2", "Teacher 3", "School Admin", "District Admin")
STAFF_ROLE_GROUPS = ("teacher", "aide", "administrator")


def role_group(source_role: str) -> str:
    """The roleMapping key a source role falls under ('' when none)."""
    if source_role in ADMIN_ROLES:
        return "administrator"
    if source_role in ("teacher", "aide"):
        return source_role
    return ""


def product_role(
    source_role: str,
    *,
    teaches_on_roster: bool,
    import_admins: bool,
    role_mapping: Mapping[str, str],
) -> str | None:
    """The product role of a user, or None when the user is not imported.

    A teacher found on a class roster is `Teacher 1` whatever its own role; with
    `importAdmins` on, a user whose own role is teacher, aide or administrator
    takes the mapped role instead. Parents and their like are never imported.
    """
    if source_role in NEVER_IMPORTED_ROLES:
        return None
    group = role_group(source_role)
    if import_admins and group:
        return role_mapping[group]
    if teaches_on_roster:
        return "Teacher 1"
    if source_role == "student":
        return "Student"
    return None
