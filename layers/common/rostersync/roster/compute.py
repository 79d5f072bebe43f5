"""From the district's source records to its product state: every rule of SPEC 4.

Pure: no I/O, no clock (today is passed in). The result depends only on the
set of records, never on the order they arrived in, which is what makes the
pipeline safe against reordered and duplicated pages.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from rostersync.roster.class_names import class_name
from rostersync.roster.models import AcademicSession, Enrollment, Org, RosterClass, User
from rostersync.roster.product import Issue, ProductClass, ProductEnrollment, ProductUser, School
from rostersync.roster.roles import product_role
from rostersync.roster.usernames import UsernameCandidate, resolve_usernames, sourced_id_order
from rostersync.roster.visibility import class_start_date, enrollment_in_force, visible_from

MAIN_LOCATION = School(id="main", name="Main Location")
DEFAULT_ROLE_MAPPING = {"teacher": "Teacher 1", "aide": "Teacher 2", "administrator": "School Admin"}


@dataclass(frozen=True)
class RosterOptions:
    """The sync-tab options the rules read (built from the district's settings)."""

    auto_create_schools: bool = True
    class_name_fields: tuple[str, ...] = ()
    username_source: bool = False
    username_rules: tuple[Any, ...] = ()
    import_admins: bool = False
    role_mapping: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ROLE_MAPPING))
    future_class_lead_days: int = 15


@dataclass
class Snapshot:
    """The district's source records by sourcedId (deleted ones are ignored)."""

    orgs: Mapping[str, Org] = field(default_factory=dict)
    academic_sessions: Mapping[str, AcademicSession] = field(default_factory=dict)
    classes: Mapping[str, RosterClass] = field(default_factory=dict)
    users: Mapping[str, User] = field(default_factory=dict)
    enrollments: Mapping[str, Enrollment] = field(default_factory=dict)


@dataclass
class ProductState:
    schools: dict[str, School] = field(default_factory=dict)
    classes: dict[str, ProductClass] = field(default_factory=dict)
    users: dict[str, ProductUser] = field(default_factory=dict)
    enrollments: dict[str, ProductEnrollment] = field(default_factory=dict)
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)


def _active(records: Mapping[str, Any]) -> dict[str, Any]:
    return {key: rec for key, rec in records.items() if not rec.deleted}


def _schools(orgs: Mapping[str, Org], options: RosterOptions) -> dict[str, School]:
    if not options.auto_create_schools:
        return {MAIN_LOCATION.id: MAIN_LOCATION}
    return {o.sourcedId: School(id=o.sourcedId, name=o.name) for o in orgs.values() if o.type == "school"}


# One `@`, no spaces or the characters RFC 5322 reserves for display forms
# ("Ann <a@b.org>", "a@b.org, c@d.org"), a dotted domain without empty labels.
# Deliverability is the district's business; these shapes can never be an address.
_EMAIL = re.compile(
    r"[^@\s<>()\[\],;:\"\\]{1,64}@(?!\.)(?!.*\.\.)[^@\s<>()\[\],;:\"\\]+\.[^@\s<>()\[\],;:\"\\.]+"
)


def valid_email(email: str) -> bool:
    return len(email) <= 254 and _EMAIL.fullmatch(email) is not None


def compute_product(snapshot: Snapshot, options: RosterOptions, today: date) -> ProductState:
    state = ProductState()
    orgs = _active(snapshot.orgs)
    terms = _active(snapshot.academic_sessions)
    state.schools = _schools(orgs, options)

    classes = _candidate_classes(_active(snapshot.classes), state, options)
    users = _active(snapshot.users)
    enrollments = _enrollments_in_force(_active(snapshot.enrollments), classes, users, state, today)

    roster_teachers = {e.userId for e in enrollments if e.role == "teacher"}
    state.users = _product_users(users, roster_teachers, orgs, state, options)

    by_class: dict[str, list[Enrollment]] = defaultdict(list)
    for enrollment in enrollments:
        by_class[enrollment.classId].append(enrollment)
    for cls in classes.values():
        state.classes[cls.sourcedId] = _product_class(cls, by_class[cls.sourcedId], terms, state, options)

    for enrollment in enrollments:
        if enrollment.userId in state.users:
            state.enrollments[enrollment.sourcedId] = ProductEnrollment(
                id=enrollment.sourcedId,
                classId=enrollment.classId,
                userId=enrollment.userId,
                role=enrollment.role,
            )
    state.errors.sort(key=lambda i: (i.entity, sourced_id_order(i.sourcedId)))
    state.warnings.sort(key=lambda i: (i.entity, sourced_id_order(i.sourcedId), i.reason))
    return state


def _candidate_classes(
    classes: Mapping[str, RosterClass], state: ProductState, options: RosterOptions
) -> dict[str, RosterClass]:
    kept: dict[str, RosterClass] = {}
    for cls in classes.values():
        if options.auto_create_schools and cls.schoolId not in state.schools:
            state.errors.append(
                Issue(entity="classes", sourcedId=cls.sourcedId, reason=f"unknown school {cls.schoolId!r}")
            )
            continue
        kept[cls.sourcedId] = cls
    return kept


def _enrollments_in_force(
    enrollments: Mapping[str, Enrollment],
    classes: Mapping[str, RosterClass],
    users: Mapping[str, User],
    state: ProductState,
    today: date,
) -> list[Enrollment]:
    kept = []
    for enrollment in enrollments.values():
        if enrollment.classId not in classes:
            reason = f"unknown or rejected class {enrollment.classId!r}"
        elif enrollment.userId not in users:
            reason = f"unknown user {enrollment.userId!r}"
        else:
            if enrollment_in_force(enrollment.endDate, today):
                kept.append(enrollment)
            continue
        state.errors.append(Issue(entity="enrollments", sourcedId=enrollment.sourcedId, reason=reason))
    return kept


def _product_users(
    users: Mapping[str, User],
    roster_teachers: set[str],
    orgs: Mapping[str, Org],
    state: ProductState,
    options: RosterOptions,
) -> dict[str, ProductUser]:
    roles: dict[str, str] = {}
    by_email: dict[str, list[User]] = defaultdict(list)
    for user in users.values():
        role = product_role(
            user.role,
            teaches_on_roster=user.sourcedId in roster_teachers,
            import_admins=options.import_admins,
            role_mapping=options.role_mapping,
        )
        if role is None:
            continue  # parents, unrostered staff with importAdmins off: not imported by design
        if not user.email:
            state.errors.append(Issue(entity="users", sourcedId=user.sourcedId, reason="no email"))
            continue
        if not valid_email(user.email):
            state.errors.append(Issue(entity="users", sourcedId=user.sourcedId, reason="invalid email"))
            continue
        roles[user.sourcedId] = role
        by_email[user.email].append(user)

    imported: list[User] = []
    for holders in by_email.values():
        holders.sort(key=lambda u: sourced_id_order(u.sourcedId))
        imported.append(holders[0])
        for other in holders[1:]:
            state.errors.append(
                Issue(
                    entity="users",
                    sourcedId=other.sourcedId,
                    reason=f"duplicate email: sourcedId {holders[0].sourcedId} has it",
                )
            )

    usernames, issues = resolve_usernames(
        (UsernameCandidate(u.sourcedId, u.email, u.username) for u in imported),
        use_source=options.username_source,
        rules=options.username_rules,
    )
    state.warnings.extend(Issue(entity="users", sourcedId=i.sourced_id, reason=i.reason) for i in issues)

    result = {}
    for user in imported:
        result[user.sourcedId] = ProductUser(
            id=user.sourcedId,
            sourcedId=user.sourcedId,
            email=user.email,
            username=usernames[user.sourcedId],
            givenName=user.givenName,
            familyName=user.familyName,
            role=roles[user.sourcedId],
            status="active" if user.enabledUser else "inactive",
            schoolIds=_user_locations(user, state, options),
        )
    return result


def _user_locations(user: User, state: ProductState, options: RosterOptions) -> tuple[str, ...]:
    if not options.auto_create_schools:
        return (MAIN_LOCATION.id,)
    return tuple(sorted({org for org in user.orgIds if org in state.schools}))


def _product_class(
    cls: RosterClass,
    enrollments: Sequence[Enrollment],
    terms: Mapping[str, AcademicSession],
    state: ProductState,
    options: RosterOptions,
) -> ProductClass:
    class_terms = [terms[t] for t in cls.termIds if t in terms]
    imported = [e for e in enrollments if e.userId in state.users]
    return product_class(
        cls,
        term_titles=tuple(t.title for t in class_terms),
        start=class_start_date((e.beginDate for e in enrollments), (t.startDate for t in class_terms)),
        teacher_ids={e.userId for e in imported if e.role != "student"},
        student_ids={e.userId for e in imported if e.role == "student"},
        options=options,
    )


def product_class(
    cls: RosterClass,
    *,
    term_titles: tuple[str, ...],
    start: date | None,
    teacher_ids: set[str],
    student_ids: set[str],
    options: RosterOptions,
) -> ProductClass:
    """A class as the product shows it: its name (SPEC 4's fields appended), school, terms,
    rosters of imported users in sourcedId order, start date and the day it becomes visible.
    (Both engines build classes here: compute_product and roster/working_set.py.)"""
    return ProductClass(
        id=cls.sourcedId,
        sourcedId=cls.sourcedId,
        name=class_name(
            title=cls.title,
            fields=options.class_name_fields,
            periods=cls.periods,
            term_titles=term_titles,
            class_code=cls.classCode,
            sourced_id=cls.sourcedId,
        ),
        title=cls.title,
        schoolId=cls.schoolId if options.auto_create_schools else MAIN_LOCATION.id,
        classCode=cls.classCode,
        periods=cls.periods,
        terms=term_titles,
        termIds=cls.termIds,
        teacherIds=tuple(sorted(teacher_ids, key=sourced_id_order)),
        studentIds=tuple(sorted(student_ids, key=sourced_id_order)),
        startDate=start,
        visibleFrom=visible_from(start, options.future_class_lead_days),
    )
