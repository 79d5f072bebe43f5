"""A PowerSchool SIS on loopback, serving a `DemoDistrict` in PowerSchool's shapes.

The same district the demo OneRoster server serves, converted to what
PowerSchool's `/ws/v1` API answers, so that one district can be synced both
ways and the product states compared. Served, with the behaviour a connector
meets at a real PowerSchool:

* `POST /oauth/access_token`: plugin OAuth, client credentials in HTTP Basic
  only, a form body (`application/x-www-form-urlencoded`) with
  `grant_type=client_credentials`; `expires_in` is a string, as PowerSchool
  sends it. Tokens last an hour, or until `expire_tokens()`.
* `GET /ws/v1/district/school`, `/ws/v1/school/{id}/term|course|section|
  student|staff` and `/ws/v1/section/{id}/section_enrollment`, with `/count`
  (`{"resource": {"count": N}}`) for school, course, section, student and
  staff (terms and section enrollments have none). 401 without a valid bearer
  token; 406 without `Accept: application/json` (PowerSchool answers XML then).
* Paging by `page` (1-based) and `pagesize` (default and cap: `page_cap`);
  resources named in `unpaged` ignore both and answer everything.
* Expansions: `contact_info`, `school_enrollment` (students) and `emails`,
  `school_affiliations` (staff) only when asked for in `expansions=`.
* Quirks: a single item is not wrapped in a list (`{"students": {"student":
  {...}}}`); an empty collection is `""` (`{"students": ""}`), except section
  enrollments, whose envelope then has no item key at all; section ids and
  references come as strings, other numbers as ints; an empty contact_info or
  emails expansion is `""`.
* `fail_next(status, count, retry_after, path_contains)` answers the next API
  requests (not the token endpoint) with `status`, before the token check, as
  a gateway would; `requests` logs every request as `(method, path, query)`,
  and `token_content_types` the Content-Type of every token request.

The conversion keeps the product the same wherever PowerSchool can say it:

* ids are PowerSchool-like integers; `demo_id()` / `to_demo_ids()` map the
  connector's sourcedIds (`ps-student-10001`) back to the demo's. Ids are
  handed out in the order of the demo sourcedIds ("lowest sourcedId wins"
  rules then pick the same users) with one digit count per kind, and stay
  fixed while the district changes. Students and staff are numbered
  separately, so the same number is a student and a staff member, as in
  PowerSchool.
* school orgs -> schools; the district org -> the connector's `ps-district`.
* every academic session -> a term at every school (PowerSchool keeps terms
  per school): the school year gets `(start year - 1990) * 100` (PowerSchool's
  year id scheme), the others the next numbers in that year.
* classes -> sections, with a course per (course number, title): classCode
  "ALG1-P1" is course number ALG1 + section number P1; periods ["3"] ->
  expression "3(A)"; the first term; `staff_id` = the class's first active
  teacher enrollment.
* students -> students at their first school; enabledUser false -> enroll
  status I, status tobedeleted -> T (transferred out).
* teachers and aides -> staff of type teacher, administrators -> type staff,
  one active (or, for a disabled user, inactive) affiliation per school org.
* student enrollments -> section enrollments, exit_date = endDate + 1 day,
  tobedeleted -> dropped.

What PowerSchool's `/ws/v1` cannot express, and is therefore left out or
changed (`INEXPRESSIBLE` says it for tests and the lead's cross-source test):

* parents, guardians, relatives (contacts, not users): left out; never imported anyway.
* users without a school org (the demo's district administrator): left out.
* aides: served as teachers (the product differs only with importAdmins on).
* a student at two schools: enrolled at the first only (schoolIds differ).
* co-teachers and teacher enrollment dates: one lead teacher per section,
  without dates (class start dates come from the students' entry dates).
* deleted (tobedeleted) orgs, sessions, classes and staff: left out, which a
  full run treats the same way.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from rostersync.local.demo_data import DemoDistrict
from rostersync.local.demo_sis import LoggedRequest, Reply, RequestLog
from rostersync.local.loopback import LoopbackServer
from rostersync.roster.usernames import sourced_id_order

_log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/access_token"  # noqa: S105 - a route, not a secret
TOKEN_LIFETIME_S = 3600
PS_CLIENT_ID = "powerschool-plugin-client"
PS_CLIENT_SECRET = "powerschool-plugin-secret"  # noqa: S105 - a public demo credential
# PowerSchool numbers school years from 1990: 2026-2027 is year 36, its full-year term 3600.
_YEAR_ID_EPOCH = 1990

INEXPRESSIBLE = {
    "parents": "parents, guardians and relatives are contacts in PowerSchool, not users: left out",
    "district_staff": "users whose only org is the district (no school) are not served",
    "aides": "aides are served as staff of type teacher: same product unless importAdmins is on",
    "two_schools": "a student belongs to one school: a student with two school orgs keeps the first",
    "co_teachers": "a section has one lead teacher (staff_id) and no teacher enrollment dates",
}

_STAFF_ROLES = frozenset({"teacher", "aide", "administrator"})


@dataclass(frozen=True)
class _Resource:
    outer: str
    inner: str
    counted: bool
    expansions: frozenset[str] = frozenset()
    # How an empty collection is answered: `""` (most), or an envelope without its item key.
    empty_without_items: bool = False


_SCHOOL_RESOURCES = {
    "term": _Resource("terms", "term", counted=False),
    "course": _Resource("courses", "course", counted=True),
    "section": _Resource("sections", "section", counted=True),
    "student": _Resource(
        "students", "student", counted=True, expansions=frozenset({"contact_info", "school_enrollment"})
    ),
    "staff": _Resource(
        "staffs", "staff", counted=True, expansions=frozenset({"emails", "school_affiliations"})
    ),
}
_SCHOOLS = _Resource("schools", "school", counted=True)
_SECTION_ENROLLMENTS = _Resource(
    "section_enrollments", "section_enrollment", counted=False, empty_without_items=True
)
_AVAILABLE_EXPANSIONS = {
    "students": "demographics, addresses, alerts, phones, school_enrollment, ethnicity_race, contact, "
    "contact_info, initial_enrollment, schedule_setup, fees, lunch",
    "staffs": "addresses, emails, phones, school_affiliations",
}
_SCHOOL_PATH = re.compile(r"^/ws/v1/school/([^/]+)/(term|course|section|student|staff)(/count)?$")
_SECTION_PATH = re.compile(r"^/ws/v1/section/([^/]+)/section_enrollment(/count)?$")
_DISTRICT_SCHOOLS_PATH = re.compile(r"^/ws/v1/district/school(/count)?$")


@dataclass
class _Fault:
    status: int
    remaining: int
    retry_after: float | None
    path_contains: str | None = None


# -- the conversion -------------------------------------------------------------


class _Ids:
    """PowerSchool-like integer ids for demo sourcedIds, fixed once handed out."""

    def __init__(self) -> None:
        self._ids: dict[str, dict[str, int]] = {}
        self._last: dict[str, int] = {}

    def assign(self, kind: str, keys: Iterable[str], *, count_hint: int) -> None:
        """Number the keys not yet numbered, in sourcedId order, after those that are.

        The first call fixes the kind's base at one more digit than `count_hint`
        needs, so ids keep one width (and "ps-student-…" sorts like the demo ids).
        """
        table = self._ids.setdefault(kind, {})
        last = self._last.get(kind, 10 ** (len(str(max(count_hint, 1))) + 1))
        for key in sorted({k for k in keys if k not in table}, key=sourced_id_order):
            last += 1
            table[key] = last
        self._last[kind] = last

    def of(self, kind: str, key: str) -> int:
        return self._ids[kind][key]


@dataclass
class _Tables:
    """The district as PowerSchool holds it, plus the way back to demo sourcedIds."""

    schools: list[dict] = field(default_factory=list)
    by_school: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (school, resource)
    enrollments: dict[str, list[dict]] = field(default_factory=dict)  # section id -> rows
    demo_ids: dict[str, str] = field(default_factory=dict)

    def add(self, school: int, resource: str, item: dict) -> None:
        self.by_school.setdefault((str(school), resource), []).append(item)


def _active(record: dict) -> bool:
    return str(record.get("status") or "active").lower() == "active"


def _ref_id(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("sourcedId")
    return "" if value is None else str(value)


def _day(text: Any) -> date | None:
    try:
        return date.fromisoformat(str(text)[:10]) if text else None
    except ValueError:
        return None


def _grade_level(grades: Any) -> int | None:
    first = str(grades[0]) if isinstance(grades, list) and grades else ""
    if first.isdigit():
        return int(first)
    return {"KG": 0, "PK": -1, "IT": -2, "PR": -2}.get(first.upper())


def _names(user: dict) -> dict[str, str]:
    # PowerSchool leaves empty fields out rather than sending "".
    names = {
        "first_name": user.get("givenName") or "",
        "middle_name": user.get("middleName") or "",
        "last_name": user.get("familyName") or "",
    }
    return {key: value for key, value in names.items() if value}


def _local_id(user: dict, number: int) -> int:
    """The student or teacher number: the demo's numeric identifier when it has one."""
    identifier = str(user.get("identifier") or "")
    return int(identifier) if identifier.isdigit() else number


def _single_or_list(items: list[dict]) -> dict | list[dict]:
    # PowerSchool's JSON comes from XML: one child element is not an array.
    return items[0] if len(items) == 1 else items


class _Converter:
    """Builds `_Tables` from a `DemoDistrict` with ids from a shared `_Ids`."""

    def __init__(self, district: DemoDistrict, ids: _Ids) -> None:
        self.district = district
        self.ids = ids
        self.tables = _Tables()
        self.school_of_org: dict[str, int] = {}
        self.student_ids: dict[str, int] = {}
        self.staff_ids: dict[str, int] = {}
        self.section_of_class: dict[str, int] = {}
        self.year: tuple[date, date] | None = None

    def convert(self) -> _Tables:
        self._schools()
        terms = self._terms()
        self._users()
        self._sections(terms)
        self._enrollments()
        return self.tables

    def _schools(self) -> None:
        orgs = [org for org in self.district.orgs if _active(org)]
        schools = [org for org in orgs if org.get("type") == "school"]
        self.ids.assign("school", (org["sourcedId"] for org in schools), count_hint=0)
        for org in schools:
            number = self.ids.of("school", org["sourcedId"])
            self.school_of_org[org["sourcedId"]] = number
            self.tables.schools.append(
                {"id": number, "name": org.get("name", ""), "school_number": number * 100}
            )
            self.tables.demo_ids[f"ps-school-{number}"] = org["sourcedId"]
        district_org = next((org for org in orgs if org.get("type") == "district"), None)
        if district_org is not None:
            self.tables.demo_ids["ps-district"] = district_org["sourcedId"]

    def _terms(self) -> dict[str, int]:
        sessions = [s for s in self.district.academic_sessions if _active(s)]
        term_ids = _term_ids(sessions)
        years = [s for s in sessions if s.get("type") == "schoolYear"]
        if years:
            self.year = (
                _day(years[0].get("startDate")) or date.min,
                _day(years[0].get("endDate")) or date.max,
            )
        for school in self.school_of_org.values():
            for session in sessions:
                term_id = term_ids[session["sourcedId"]]
                start = _day(session.get("startDate"))
                self.tables.add(
                    school,
                    "term",
                    {
                        "id": term_id,
                        "school_id": school,
                        "name": session.get("title", ""),
                        "abbreviation": (session.get("title") or "")[:8],
                        "start_date": session.get("startDate"),
                        "end_date": session.get("endDate"),
                        "start_year": start.year if start else None,
                        "portion": _portion(session.get("type")),
                    },
                )
                self.tables.demo_ids[f"ps-term-{school}-{term_id}"] = session["sourcedId"]
        return term_ids

    def _users(self) -> None:
        users = self.district.users
        hint = len(users)
        students = [u for u in users if u.get("role") == "student"]
        staff = [u for u in users if u.get("role") in _STAFF_ROLES and _active(u)]
        self.ids.assign("student", (u["sourcedId"] for u in students), count_hint=hint)
        self.ids.assign("staff", (u["sourcedId"] for u in staff), count_hint=hint)
        for user in students:
            self._student(user)
        for user in staff:
            self._staff(user)

    def _schools_of(self, user: dict) -> list[int]:
        orgs = (_ref_id(org) for org in user.get("orgs") or [])
        return list(dict.fromkeys(self.school_of_org[o] for o in orgs if o in self.school_of_org))

    def _student(self, user: dict) -> None:
        schools = self._schools_of(user)
        if not schools:
            return
        number = self.ids.of("student", user["sourcedId"])
        school = schools[0]
        if not _active(user):
            letter, code, description = "T", 2, "Transferred Out"
        elif str(user.get("enabledUser")).lower() == "false":
            letter, code, description = "I", 1, "Inactive"
        else:
            letter, code, description = "A", 0, "Active"
        enrollment: dict[str, Any] = {
            "enroll_status": letter,
            "enroll_status_description": description,
            "enroll_status_code": code,
            "grade_level": _grade_level(user.get("grades")),
            "school_id": school,
            "school_number": school * 100,
        }
        if self.year is not None:
            enrollment["entry_date"] = self.year[0].isoformat()
            enrollment["exit_date"] = (self.year[1] + timedelta(days=1)).isoformat()
        self.tables.add(
            school,
            "student",
            {
                "id": number,
                "local_id": _local_id(user, number),
                "student_username": user.get("username") or "",
                "name": _names(user),
                "contact_info": {"email": user["email"]} if user.get("email") else "",
                "school_enrollment": {k: v for k, v in enrollment.items() if v is not None},
            },
        )
        self.student_ids[user["sourcedId"]] = number
        self.tables.demo_ids[f"ps-student-{number}"] = user["sourcedId"]

    def _staff(self, user: dict) -> None:
        schools = self._schools_of(user)
        if not schools:
            return  # district-office staff: no school lists them
        number = self.ids.of("staff", user["sourcedId"])
        admin = user.get("role") == "administrator"
        enabled = str(user.get("enabledUser")).lower() != "false"
        affiliations = [
            {"school_id": school, "type": 2 if admin else 1, "status": 1 if enabled else 2}
            for school in schools
        ]
        record = {
            "id": number,
            "local_id": _local_id(user, number),
            ("admin_username" if admin else "teacher_username"): user.get("username") or "",
            "name": _names(user),
            "emails": {"work_email": user["email"]} if user.get("email") else "",
            "school_affiliations": {"school_affiliation": _single_or_list(affiliations)},
        }
        for school in schools:
            self.tables.add(school, "staff", record)
        self.staff_ids[user["sourcedId"]] = number
        self.tables.demo_ids[f"ps-staff-{number}"] = user["sourcedId"]

    def _sections(self, term_ids: dict[str, int]) -> None:
        classes = [
            c for c in self.district.classes if _active(c) and _ref_id(c.get("school")) in self.school_of_org
        ]
        teachers = self._lead_teachers()
        courses: dict[tuple[str, str], int] = {}
        self.ids.assign("section", (c["sourcedId"] for c in classes), count_hint=len(classes))
        for cls in classes:
            school = self.school_of_org[_ref_id(cls["school"])]
            course_number, _, section_number = str(cls.get("classCode") or "").partition("-")
            course = self._course(courses, school, course_number, cls.get("title") or "")
            number = self.ids.of("section", cls["sourcedId"])
            terms = [term_ids[t] for t in map(_ref_id, cls.get("terms") or []) if t in term_ids]
            periods = [str(p) for p in cls.get("periods") or []]
            expression = " ".join(f"{period}(A)" for period in periods)
            teacher = teachers.get(cls["sourcedId"])
            staff = self.staff_ids.get(teacher[0], 0) if teacher else 0
            section = {
                "id": str(number),
                "school_id": str(school),
                "course_id": str(course),
                "section_number": section_number,
                "expression": expression,
                "external_expression": expression,
                "staff_id": str(staff),
                "gradebooktype": "2",
            }
            if terms:
                section["term_id"] = str(terms[0])
            self.tables.add(school, "section", section)
            self.tables.enrollments[str(number)] = []
            self.section_of_class[cls["sourcedId"]] = number
            self.tables.demo_ids[f"ps-section-{number}"] = cls["sourcedId"]
            if teacher and staff:
                self.tables.demo_ids[f"ps-enr-teacher-{number}-{staff}"] = teacher[1]

    def _course(
        self, courses: dict[tuple[str, str], int], school: int, course_number: str, title: str
    ) -> int:
        key = (course_number, title)
        if key not in courses:
            courses[key] = 100 + len(courses) + 1
        course = courses[key]
        listed = self.tables.by_school.setdefault((str(school), "course"), [])
        if not any(item["id"] == course for item in listed):
            listed.append({"id": course, "course_number": course_number, "course_name": title})
        return course

    def _lead_teachers(self) -> dict[str, tuple[str, str]]:
        """class sourcedId -> (teacher sourcedId, enrollment sourcedId) of its first active teacher."""
        leads: dict[str, tuple[str, str]] = {}
        for enrollment in self.district.enrollments:
            if enrollment.get("role") == "teacher" and _active(enrollment):
                leads.setdefault(
                    _ref_id(enrollment.get("class")),
                    (_ref_id(enrollment.get("user")), enrollment["sourcedId"]),
                )
        return leads

    def _enrollments(self) -> None:
        rows = [
            e
            for e in self.district.enrollments
            if e.get("role") == "student"
            and _ref_id(e.get("class")) in self.section_of_class
            and _ref_id(e.get("user")) in self.student_ids
        ]
        self.ids.assign("enr", (e["sourcedId"] for e in rows), count_hint=len(rows))
        for enrollment in rows:
            number = self.ids.of("enr", enrollment["sourcedId"])
            section = self.section_of_class[_ref_id(enrollment["class"])]
            row: dict[str, Any] = {
                "id": number,
                "section_id": section,
                "student_id": self.student_ids[_ref_id(enrollment["user"])],
                "dropped": not _active(enrollment),
            }
            begin, end = _day(enrollment.get("beginDate")), _day(enrollment.get("endDate"))
            if begin:
                row["entry_date"] = begin.isoformat()
            if end:
                # PowerSchool's exit date is the first day no longer enrolled.
                row["exit_date"] = (end + timedelta(days=1)).isoformat()
            self.tables.enrollments[str(section)].append(row)
            self.tables.demo_ids[f"ps-enr-{number}"] = enrollment["sourcedId"]


def _portion(session_type: Any) -> int:
    return {"schoolYear": 1, "semester": 2, "term": 2, "gradingPeriod": 4}.get(str(session_type), 2)


def _term_ids(sessions: list[dict]) -> dict[str, int]:
    """PowerSchool term ids: the year `(start year - 1990) * 100`, its terms the next numbers."""
    by_id = {s["sourcedId"]: s for s in sessions}
    ids: dict[str, int] = {}
    taken: set[int] = set()
    for session in sessions:
        if session.get("type") == "schoolYear":
            start = _day(session.get("startDate")) or date(2000, 1, 1)
            year_id = (start.year - _YEAR_ID_EPOCH) * 100
            while year_id in taken:
                year_id += 100
            ids[session["sourcedId"]] = year_id
            taken.add(year_id)
    for session in sessions:
        if session["sourcedId"] in ids:
            continue
        year = _year_of(session, by_id)
        if year is not None and year in ids:
            base = ids[year]
        else:
            base = ((_day(session.get("startDate")) or date(2000, 1, 1)).year - _YEAR_ID_EPOCH) * 100
        term_id = base + 1
        while term_id in taken:
            term_id += 1
        ids[session["sourcedId"]] = term_id
        taken.add(term_id)
    return ids


def _year_of(session: dict, by_id: dict[str, dict]) -> str | None:
    seen: set[str] = set()
    current: dict | None = session
    while current is not None and current["sourcedId"] not in seen:
        if current.get("type") == "schoolYear":
            return str(current["sourcedId"])
        seen.add(current["sourcedId"])
        current = by_id.get(_ref_id(current.get("parent")))
    return None


# -- the server -------------------------------------------------------------------


def _message(status: int, text: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"message": text}, headers or {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sis: PowerSchoolSis) -> None:
        self.sis = sis
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as a connector meets it in the field
    timeout = 30
    # Headers and body leave in two writes: without TCP_NODELAY every answer on a
    # kept-alive connection waits for the client's delayed ACK (40 ms on Linux).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            reply = self.server.sis.answer(self.command, self.path, dict(self.headers.items()), body)
        except Exception:  # a bug here must answer 500, not hang the client
            _log.exception("PowerSchool test server failed on %s", self.command)
            reply = _message(500, "internal error in the PowerSchool test server")
        payload = b"" if reply.body is None else json.dumps(reply.body, separators=(",", ":")).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("PowerSchool test server: " + format, *args)


class PowerSchoolSis(LoopbackServer):
    """A PowerSchool `/ws/v1` server for a `DemoDistrict`, in a daemon thread."""

    label = "PowerSchool test server"
    thread_name = "powerschool-sis"

    def __init__(
        self,
        district: DemoDistrict,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = PS_CLIENT_ID,
        client_secret: str = PS_CLIENT_SECRET,
        page_cap: int = 100,
        unpaged: Iterable[str] = (),
    ) -> None:
        self.district = district
        # Resources (e.g. "section_enrollment") that answer everything whatever
        # `page` says, as some PowerSchool versions do for small collections.
        self.unpaged = frozenset(unpaged)
        super().__init__(host, port)
        self.client_id, self.client_secret = client_id, client_secret
        self.page_cap = page_cap
        self.requests = RequestLog()
        self.token_content_types: list[str] = []
        self._ids = _Ids()
        self._tables: _Tables | None = None
        self._tables_version: int | None = None
        self._tokens: dict[str, float] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------

    def _http_server(self) -> ThreadingHTTPServer:
        return _Server((self.host, self.port), self)

    # -- test controls ---------------------------------------------------

    def fail_next(
        self, status: int, count: int = 1, retry_after: float | None = None, path_contains: str | None = None
    ) -> None:
        """Answer the next `count` API requests (not token requests) with `status`;
        with `path_contains`, only requests whose path contains it (e.g. "/student")."""
        with self._lock:
            self._faults.append(_Fault(status, count, retry_after, path_contains))

    def expire_tokens(self) -> None:
        """Forget every issued token, as when they expire mid-run."""
        with self._lock:
            self._tokens.clear()

    # -- the way back to the demo ------------------------------------------

    def demo_id(self, sourced_id: str) -> str:
        """The demo sourcedId behind a sourcedId the PowerSchool connector made."""
        return self.tables().demo_ids[sourced_id]

    def to_demo_ids(self, value: Any) -> Any:
        """`value` (JSON-like: dicts, lists, tuples, strings) with every connector
        sourcedId replaced by the demo's, also inside texts such as rejection
        reasons; everything else is kept."""
        demo_ids = self.tables().demo_ids
        return _translate(value, demo_ids)

    def tables(self) -> _Tables:
        """The district in PowerSchool's shapes, rebuilt when the district changed."""
        with self._lock:
            if self._tables is None or self._tables_version != self.district.version:
                self._tables = _Converter(self.district, self._ids).convert()
                self._tables_version = self.district.version
            return self._tables

    # -- request handling ------------------------------------------------

    def answer(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Reply:
        """The response to one request (called from the handler threads)."""
        parts = urlsplit(raw_path)
        path = unquote(parts.path).rstrip("/") or "/"
        query = {name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
        self.requests.append(LoggedRequest(method, path, query))
        if path == TOKEN_PATH:
            return self._token(method, headers, body)
        fault = self._take_fault(path)
        if fault is not None:
            extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            return _message(fault.status, f"injected failure {fault.status}", extra)
        if not self._authorized(headers):
            return _message(401, "Invalid or missing access token", {"WWW-Authenticate": "Bearer"})
        if method != "GET":
            return _message(405, f"{method} is not supported here", {"Allow": "GET"})
        if "json" not in _header(headers, "Accept").lower():
            return _message(406, "ask for application/json: this server does not speak XML")
        return self._route(path, query)

    def _token(self, method: str, headers: dict[str, str], body: bytes) -> Reply:
        if method != "POST":
            return Reply(405, {"error": "invalid_request"}, {"Allow": "POST"})
        content_type = _header(headers, "Content-Type")
        with self._lock:
            self.token_content_types.append(content_type)
        if not content_type.lower().startswith("application/x-www-form-urlencoded"):
            return Reply(400, {"error": "invalid_request"})
        form = {name: values[0] for name, values in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        client_id, client_secret = _basic_credentials(headers)
        if not (
            hmac.compare_digest(client_id, self.client_id)
            and hmac.compare_digest(client_secret, self.client_secret)
        ):
            return Reply(401, {"error": "invalid_client"}, {"WWW-Authenticate": 'Basic realm="PowerSchool"'})
        token = secrets.token_hex(16)
        with self._lock:
            self._tokens[token] = time.monotonic() + TOKEN_LIFETIME_S
        # PowerSchool sends expires_in as a string.
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": str(TOKEN_LIFETIME_S)}
        return Reply(200, answer, {"Cache-Control": "no-store"})

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path_contains is None or fault.path_contains in path:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
            return None

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, token = _header(headers, "Authorization").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        with self._lock:
            expires = self._tokens.get(token.strip())
        return expires is not None and expires > time.monotonic()

    def _route(self, path: str, query: dict[str, str]) -> Reply:
        tables = self.tables()
        if match := _DISTRICT_SCHOOLS_PATH.match(path):
            return self._collection(_SCHOOLS, tables.schools, query, count=bool(match.group(1)))
        if match := _SCHOOL_PATH.match(path):
            school, name, count = match.groups()
            if not any(str(s["id"]) == school for s in tables.schools):
                return _message(404, "no such school")
            resource = _SCHOOL_RESOURCES[name]
            if count and not resource.counted:
                return _message(404, f"no count for {name}")
            items = tables.by_school.get((school, name), [])
            return self._collection(resource, items, query, count=bool(count))
        if match := _SECTION_PATH.match(path):
            section, count = match.groups()
            if count:
                return _message(404, "no count for section_enrollment")
            if section not in tables.enrollments:
                return _message(404, "no such section")
            return self._collection(_SECTION_ENROLLMENTS, tables.enrollments[section], query, count=False)
        return _message(404, "no such resource")

    def _collection(
        self, resource: _Resource, items: list[dict], query: dict[str, str], *, count: bool
    ) -> Reply:
        if count:
            return Reply(200, {"resource": {"count": len(items)}})
        try:
            page = _int_param(query, "page", 1)
            size = min(_int_param(query, "pagesize", self.page_cap), self.page_cap)
        except ValueError as error:
            return _message(400, str(error))
        selected = items if resource.inner in self.unpaged else items[(page - 1) * size : page * size]
        wanted = {name.strip() for name in query.get("expansions", "").split(",") if name.strip()}
        shown = [_without_unasked(item, resource.expansions - wanted) for item in selected]
        envelope: Any
        if shown:
            envelope = {**_envelope_extras(resource), resource.inner: _single_or_list(shown)}
        elif resource.empty_without_items:
            envelope = _envelope_extras(resource)
        else:
            envelope = ""
        return Reply(200, {resource.outer: envelope})


def _envelope_extras(resource: _Resource) -> dict[str, str]:
    available = _AVAILABLE_EXPANSIONS.get(resource.outer)
    return {"@expansions": available, "@extensions": ""} if available else {"@extensions": ""}


def _without_unasked(item: dict, unasked: frozenset[str] | set[str]) -> dict:
    return {key: value for key, value in item.items() if key not in unasked} if unasked else item


# A connector sourcedId inside a longer text ("duplicate email: sourcedId ps-student-10043 has it").
_CONNECTOR_ID = re.compile(r"\bps-(?:district|enr-teacher-\d+-\d+|term-\d+-\d+|[a-z]+-\d+)\b")


def _translate(value: Any, demo_ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        if value in demo_ids:
            return demo_ids[value]
        return _CONNECTOR_ID.sub(lambda match: demo_ids.get(match.group(0), match.group(0)), value)
    if isinstance(value, dict):
        return {_translate(k, demo_ids): _translate(v, demo_ids) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_translate(item, demo_ids) for item in value)
    return value


def _header(headers: dict[str, str], name: str) -> str:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), "")


def _basic_credentials(headers: dict[str, str]) -> tuple[str, str]:
    """Client id and secret from HTTP Basic, the only way PowerSchool takes them."""
    scheme, _, encoded = _header(headers, "Authorization").partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value
