"""PowerSchool connector over PowerSchool's own REST API (`/ws/v1`).

It yields the same raw OneRoster 1.1 REST shapes as the OneRoster connector
(refs as `{"sourcedId"}`, dates `YYYY-MM-DD`), so normalization and every rule
after the fetch are shared. Each record carries `_source` ("PowerSchool
student 99") so that a rejection names the PowerSchool record, by id only.

Auth: PowerSchool plugin OAuth. `POST {base}/oauth/access_token` with HTTP
Basic `client_id:client_secret`, `grant_type=client_credentials` as a
`application/x-www-form-urlencoded;charset=UTF-8` body; the bearer token is
cached until shortly before it expires and renewed once on a 401
(`OAuth2ClientCredentials`, which PowerSchool's `expires_in` string suits).

Resources and what they become (sourcedIds are PowerSchool ids with a kind
prefix, because PowerSchool numbers each table on its own: student 12 and
staff 12 are two people):

- (no request): org `ps-district`, type district, parent of every school.
- `GET /ws/v1/district/school` (+ `/count`): orgs `ps-school-{id}`, type school.
- `GET /ws/v1/school/{id}/term`: academicSessions `ps-term-{school}-{id}`.
  PowerSchool keeps terms per school under the same ids (2600 at every
  school), so the school is part of the id. Portion 1 (full year) ->
  `schoolYear`; any other -> `term`, whose parent is its year (`id // 100 * 100`).
- `GET /ws/v1/school/{id}/course` (+ `/count`): no records; the name and
  number of each section's course.
- `GET /ws/v1/school/{id}/section` (+ `/count`): classes `ps-section-{id}`:
  title = course name, classCode = course number `-` section number, periods
  from `expression` (`parse_periods`), terms from `term_id`.
- `GET /ws/v1/school/{id}/student?expansions=contact_info,school_enrollment`
  (+ `/count`): users `ps-student-{id}`, role student, email from
  contact_info, username from student_username, org = enrolled school. Enroll
  status A -> active; I, P (inactive, pre-registered) -> enabledUser false;
  T, G, H (transferred out, graduated, historical) -> tobedeleted.
- `GET /ws/v1/school/{id}/staff?expansions=emails,school_affiliations`
  (+ `/count`): users `ps-staff-{id}`, once however many schools list them.
  A teacher or substitute affiliation -> teacher, else a "staff" one ->
  administrator; lunch staff are skipped. Orgs = schools of the active
  affiliations; none active -> enabledUser false.
- `GET /ws/v1/section/{id}/section_enrollment`: enrollments `ps-enr-{id}`,
  role student, beginDate = entry_date, endDate = exit_date - 1 day
  (PowerSchool's exit date is the first day *not* enrolled), `dropped` ->
  tobedeleted; plus `ps-enr-teacher-{section}-{staff}`, role teacher, for the
  section's `staff_id` (PowerSchool's lead teacher; /ws/v1 shows no others).

Paging: `page` (1-based) and `pagesize`. Where a `/count` endpoint exists the
total is read first (no page is asked of an empty school) and the remaining
pages are fetched by a bounded thread pool; the terms and section enrollments
have no count and are read until a short or empty page, or until a page
repeats the one before (the resource is not paged: its first answer was all). A server that caps
`pagesize` below what was asked is detected (a short first page with a larger
total, or a short page followed by a non-empty one) and asked for its own size
from then on, so that page numbers keep pointing at the same records. Section
enrollments, one request per section, are fetched `concurrency` sections at a
time within the rate limit.

Quirks read: a single item is not wrapped in a list (`{"students":
{"student": {...}}}`), an empty collection is `""`, `{}` or missing, ids and
numbers come as strings or ints, `@expansions`/`@extensions` keys are ignored.

Incremental runs: PowerSchool offers no `dateLastModified` filter on these
resources, so `since` is ignored and every fetch reads everything (the
transform's no-change-no-write keeps that cheap). The connector never raises
`FilterNotSupportedError`; instead it says, as a bundle source does, that each
fetch is a full, complete picture (`run_mode()` / `complete_entities()`), so
records PowerSchool no longer has are deleted like in any full run.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any, Literal, TypeVar

import requests
from aws_lambda_powertools import Logger
from requests.adapters import HTTPAdapter

from rostersync.errors import SourceError
from rostersync.sources.base import (
    ENTITIES,
    SOURCE_LOCATION_KEY,
    Entity,
    Position,
    SourcePage,
    resume_by_skipping,
)
from rostersync.sources.http import HttpClient, RateLimiter, Sleep, redact_url
from rostersync.sources.oauth import OAuth2ClientCredentials

logger = Logger(service="rostersync")

TOKEN_PATH = "/oauth/access_token"  # noqa: S105 - a route, not a secret
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"
DISTRICT_SOURCED_ID = "ps-district"
STUDENT_EXPANSIONS = "contact_info,school_enrollment"
STAFF_EXPANSIONS = "emails,school_affiliations"

# school_enrollment.enroll_status (letter) and enroll_status_code (number).
_ENROLL_CODES = {"0": "A", "1": "I", "-2": "I", "-1": "P", "2": "T", "3": "G", "4": "H"}
_ENABLED_STATUSES = frozenset({"A"})
_LEFT_STATUSES = frozenset({"T", "G", "H"})  # gone from the district: delete
# school_affiliation.type: 0 not assigned, 1 teacher, 2 staff, 3 lunch staff, 4 substitute.
_TEACHING_TYPES = frozenset({1, 4})
_ADMIN_TYPE = 2
_LUNCH_STAFF_TYPE = 3
_ACTIVE_AFFILIATION = 1
# A period range wider than this is a typo, not a timetable: kept as written.
_MAX_PERIOD_RANGE = 24

T = TypeVar("T")
R = TypeVar("R")


class PowerSchoolConnector:
    """A `Connector` (and full-picture source) over a PowerSchool SIS."""

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        page_size: int = 100,
        max_requests_per_minute: int | None = None,
        concurrency: int = 4,
        timeout_s: float = 30,
        max_retries: int = 5,
        session: requests.Session | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        if page_size < 1 or concurrency < 1:
            raise ValueError("page_size and concurrency must be at least 1")
        self._base_url = base_url.rstrip("/")
        self._concurrency = concurrency
        self._owns_session = session is None
        self._session = session or _new_session(concurrency)
        # API and token requests share one rate limit and one retry policy.
        limiter = RateLimiter(max_requests_per_minute, sleep=sleep)
        self._http = HttpClient(
            self._session, timeout_s=timeout_s, max_retries=max_retries, limiter=limiter, sleep=sleep
        )
        token_http = _PluginTokenHttp(
            self._session, timeout_s=timeout_s, max_retries=max_retries, limiter=limiter, sleep=sleep
        )
        self._auth = OAuth2ClientCredentials(
            token_http,
            token_url=self._base_url + TOKEN_PATH,
            client_id=client_id,
            client_secret=client_secret,
        )
        self._page_size = page_size
        self._paging = _PageSize(page_size)
        self._schools: list[dict[str, Any]] | None = None

    def __enter__(self) -> PowerSchoolConnector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    # -- the Connector interface -------------------------------------------

    def pages(
        self, entity: Entity, since: datetime | None = None, start: Position | None = None
    ) -> Iterator[SourcePage]:
        """Yield every page of `entity`; page 0 is yielded even when empty.

        `since` is ignored: PowerSchool cannot filter by modification date, so
        every fetch reads everything (see `run_mode`). From `start` (a fetch
        continued in a new invocation) the entity is read again from its start
        and the pages before `start["page"]` are dropped: pages are regrouped
        across schools and sections, so page N has no request of its own.
        """
        # Read one page ahead, so that the last page says it is the last.
        return resume_by_skipping(self._pages(entity), start)

    def _pages(self, entity: Entity) -> Iterator[SourcePage]:
        readers: dict[str, Callable[[], Iterator[dict[str, Any]]]] = {
            "orgs": self._orgs,
            "academicSessions": self._sessions,
            "classes": self._classes,
            "users": self._users,
            "enrollments": self._enrollments,
        }
        if entity not in readers:
            raise ValueError(f"unknown entity: {entity!r}")
        yield from batched_pages(entity, readers[entity](), self._page_size)

    def run_mode(self) -> Literal["full"]:
        """Every fetch reads all of PowerSchool, so every run is a full one."""
        return "full"

    def complete_entities(self) -> frozenset[Entity]:
        return frozenset(ENTITIES)

    # -- entities ------------------------------------------------------------

    def _orgs(self) -> Iterator[dict[str, Any]]:
        yield district_org()
        for school in self._school_list():
            yield school_org(school)

    def _sessions(self) -> Iterator[dict[str, Any]]:
        for school_id in self._school_ids():
            for term in self._collection(f"/ws/v1/school/{school_id}/term", "terms", "term"):
                yield term_session(term, school_id)

    def _classes(self) -> Iterator[dict[str, Any]]:
        for school_id in self._school_ids():
            courses = {
                ps_id(course.get("id")): course
                for course in self._collection(
                    f"/ws/v1/school/{school_id}/course", "courses", "course", counted=True
                )
            }
            for section in self._sections(school_id):
                yield section_class(section, courses.get(ps_id(section.get("course_id"))), school_id)

    def _users(self) -> Iterator[dict[str, Any]]:
        seen_staff: set[str] = set()
        for school_id in self._school_ids():
            students = self._collection(
                f"/ws/v1/school/{school_id}/student",
                "students",
                "student",
                counted=True,
                params={"expansions": STUDENT_EXPANSIONS},
            )
            for student in students:
                yield student_user(student, school_id)
            staff_members = self._collection(
                f"/ws/v1/school/{school_id}/staff",
                "staffs",
                "staff",
                counted=True,
                params={"expansions": STAFF_EXPANSIONS},
            )
            for staff in staff_members:
                # Staff at several schools are listed by each; one record is enough.
                staff_id = ps_id(staff.get("id"))
                if staff_id in seen_staff:
                    continue
                seen_staff.add(staff_id)
                record = staff_user(staff, school_id)
                if record is not None:
                    yield record

    def _enrollments(self) -> Iterator[dict[str, Any]]:
        for school_id in self._school_ids():
            sections = self._sections(school_id)
            for section, rows in self._ordered(self._with_enrollments, sections):
                yield from section_enrollments(section, rows, school_id)

    def _with_enrollments(self, section: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        section_id = ps_id(section.get("id"))
        if not section_id:
            return section, []  # the class is rejected for its missing id; nothing to ask
        path = f"/ws/v1/section/{section_id}/section_enrollment"
        return section, list(self._collection(path, "section_enrollments", "section_enrollment"))

    def _sections(self, school_id: str) -> Iterator[dict[str, Any]]:
        return self._collection(f"/ws/v1/school/{school_id}/section", "sections", "section", counted=True)

    def _school_list(self) -> list[dict[str, Any]]:
        # Every entity walks the schools; a district has few, so they are read once.
        if self._schools is None:
            schools = self._collection("/ws/v1/district/school", "schools", "school", counted=True)
            self._schools = list(schools)
        return self._schools

    def _school_ids(self) -> list[str]:
        return [school_id for school_id in (ps_id(s.get("id")) for s in self._school_list()) if school_id]

    # -- paging -------------------------------------------------------------

    def _collection(
        self,
        path: str,
        outer: str,
        inner: str,
        *,
        counted: bool = False,
        params: dict[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a PowerSchool collection, page by page, in order."""
        url = self._base_url + path
        query = params or {}
        if counted:
            yield from self._counted(url, outer, inner, query)
        else:
            yield from self._uncounted(url, outer, inner, query)

    def _counted(self, url: str, outer: str, inner: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        total = self._count(url + "/count")
        if total == 0:
            return
        size = self._paging.size
        first = self._page(url, outer, inner, query, 1, size)
        yield from first
        if not first or len(first) >= total:
            return
        if len(first) != size:
            # The server sizes pages itself: page numbers only line up at its size.
            size = len(first)
            self._paging.server_uses(size)
        numbers = range(2, -(-total // size) + 1)
        previous = first
        for page in self._ordered(lambda n: self._page(url, outer, inner, query, n, size), numbers):
            if not page:
                return  # the collection shrank while we read
            _check_progress(previous, page, url)
            yield from page
            previous = page

    def _uncounted(self, url: str, outer: str, inner: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        number, previous_asked = 1, 0
        previous: list[dict[str, Any]] = []
        while True:
            size = self._paging.size
            page = self._page(url, outer, inner, query, number, size)
            if not page or _same_page(previous, page):
                # Empty: past the end. The same page again: this resource is not paged
                # (PowerSchool answers small collections whole), so it was all of it.
                return
            if len(previous) < previous_asked:
                # A short page followed by more: the server caps pages at that size.
                size = self._paging.server_uses(len(previous))
            yield from page
            if len(page) < size and self._paging.confirmed:
                return
            # Unconfirmed, a short page is the last one or the server's cap: one more request tells.
            number, previous, previous_asked = number + 1, page, size

    def _count(self, url: str) -> int:
        body = self._get_json(url, None)
        resource = body.get("resource") if isinstance(body, dict) else None
        count = resource.get("count") if isinstance(resource, dict) else None
        try:
            total = int(str(count).strip())
        except ValueError:
            total = -1
        if total < 0:
            raise SourceError(f"GET {redact_url(url)}: response holds no count")
        return total

    def _page(
        self, url: str, outer: str, inner: str, query: dict[str, str], number: int, size: int
    ) -> list[dict[str, Any]]:
        params = {**query, "page": str(number), "pagesize": str(size)}
        records = unwrap(self._get_json(url, params), outer, inner, redact_url(url))
        self._paging.saw(asked=size, got=len(records))
        return records

    def _get_json(self, url: str, params: dict[str, str] | None) -> object:
        # Without Accept: application/json PowerSchool answers XML.
        response = self._http.request(
            "GET", url, params=params, headers={"Accept": "application/json"}, auth=self._auth
        )
        try:
            return json.loads(response.content)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            # The body itself is never quoted: it holds student records.
            raise SourceError(
                f"GET {redact_url(response.url)}: response is not valid JSON ({len(response.content)} bytes)"
            ) from exc

    def _ordered(self, work: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """`map(work, items)` with up to `concurrency` calls in flight, results in order."""
        if self._concurrency == 1:
            yield from map(work, items)
            return
        pending: deque[Future[R]] = deque()
        source = iter(items)
        exhausted = False
        pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="powerschool")
        try:
            while True:
                # Only `concurrency` ahead of the reader: memory stays bounded however
                # slowly the caller stages pages.
                while not exhausted and len(pending) < self._concurrency:
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                    else:
                        pending.append(pool.submit(work, item))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class _PageSize:
    """The `pagesize` to ask for, learned once for the whole fetch.

    `confirmed` turns true once the server returned a full page of the size
    asked (or revealed its own cap): from then on a short page is the last one.
    """

    def __init__(self, asked: int) -> None:
        self._lock = threading.Lock()
        self.size = asked
        self.confirmed = False

    def saw(self, *, asked: int, got: int) -> None:
        if got >= asked and asked == self.size:
            self.confirmed = True

    def server_uses(self, size: int) -> int:
        with self._lock:
            if size < self.size:
                logger.info("PowerSchool caps the page size", extra={"pagesize": size})
                self.size = size
            self.confirmed = True
            return self.size


class _PluginTokenHttp(HttpClient):
    """The token request as PowerSchool's plugin OAuth documents it: a form body
    declared `application/x-www-form-urlencoded;charset=UTF-8`."""

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: requests.auth.AuthBase | None = None,
    ) -> requests.Response:
        if data is not None:
            headers = {**(headers or {}), "Content-Type": FORM_CONTENT_TYPE}
        return super().request(method, url, params=params, data=data, headers=headers, auth=auth)


# -- envelopes and values ---------------------------------------------------------


def unwrap(body: object, outer: str, inner: str, shown_url: str) -> list[dict[str, Any]]:
    """The items of `{"students": {"student": [...]}}`, whatever PowerSchool did to it.

    A single item comes unwrapped (`{"student": {...}}`); an empty collection
    comes as `""`, `null`, `{}` or not at all.
    """
    if not isinstance(body, dict):
        raise SourceError(f"GET {shown_url}: response is not a JSON object")
    envelope = body.get(outer)
    if envelope in (None, "") or envelope == {} or envelope == []:
        return []
    if not isinstance(envelope, dict):
        raise SourceError(f"GET {shown_url}: {outer!r} is neither a collection nor empty")
    items = as_list(envelope.get(inner))
    if not all(isinstance(item, dict) for item in items):
        raise SourceError(f"GET {shown_url}: the {inner} list holds items that are not objects")
    return items


def as_list(value: Any) -> list[Any]:
    """PowerSchool's "one or many": a list, a lone item, or nothing (`None`, `""`)."""
    if value is None or value == "":
        return []
    return value if isinstance(value, list) else [value]


def ps_id(value: Any) -> str:
    """A PowerSchool id or number as text: `42`, `"42"` and `42.0` alike give "42"."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _int(value: Any) -> int | None:
    try:
        return int(ps_id(value))
    except ValueError:
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _object(value: Any) -> dict[str, Any]:
    # An expansion with nothing in it comes as "" rather than {}.
    return value if isinstance(value, dict) else {}


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return _text(value).lower() in ("true", "1", "yes")


def _ref(sourced_id: str) -> dict[str, str] | None:
    return {"sourcedId": sourced_id} if sourced_id else None


def sourced_id(kind: str, value: Any) -> str:
    """`ps-{kind}-{id}`, or "" when the PowerSchool record has no id (normalization rejects it)."""
    text = ps_id(value)
    return f"ps-{kind}-{text}" if text else ""


def _school_sourced_id(school_id: str) -> str:
    return sourced_id("school", school_id)


def _term_sourced_id(school_id: str, term_id: str) -> str:
    return f"ps-term-{school_id}-{term_id}" if school_id and term_id else ""


def last_day(exit_date: Any) -> str | None:
    """OneRoster endDate (last day enrolled) from PowerSchool's exit date (first day gone)."""
    text = _text(exit_date)
    if not text:
        return None
    try:
        return (date.fromisoformat(text[:10]) - timedelta(days=1)).isoformat()
    except ValueError:
        return text  # passed on as sent: normalization rejects it with a reason


def _grade(level: Any) -> str:
    number = _int(level)
    if number is None:
        return _text(level)
    if number < 0:
        return "PK"
    if number == 0:
        return "KG"
    return f"{number:02d}" if number <= 13 else "Other"


_PERIOD_GROUP = re.compile(r"([^\s()]+)\s*(?:\([^)]*\))?")


def parse_periods(expression: Any) -> list[str]:
    """Periods of a PowerSchool expression: "3(A)" -> ["3"], "1-2(A-B)" -> ["1", "2"],
    "1(A) 3(B)" -> ["1", "3"], "1,4(A)" -> ["1", "4"], "HR(A-E)" -> ["HR"].

    The part in parentheses is the days of the rotation, not periods.
    """
    periods: list[str] = []
    for match in _PERIOD_GROUP.finditer(_text(expression)):
        for item in match.group(1).split(","):
            for period in _expand_period_range(item.strip()):
                if period not in periods:
                    periods.append(period)
    return periods


def _expand_period_range(item: str) -> list[str]:
    start, dash, end = item.partition("-")
    if dash and start.isdigit() and end.isdigit():
        first, last = int(start), int(end)
        if first <= last and last - first < _MAX_PERIOD_RANGE:
            return [str(n) for n in range(first, last + 1)]
    return [item] if item else []


# -- PowerSchool record -> OneRoster 1.1 record --------------------------------------


def district_org() -> dict[str, Any]:
    # /ws/v1 names no district record; one synthetic org keeps the tree OneRoster-shaped.
    return {
        "sourcedId": DISTRICT_SOURCED_ID,
        "status": "active",
        "name": "PowerSchool district",
        "type": "district",
        "identifier": "",
        "parent": None,
        SOURCE_LOCATION_KEY: "PowerSchool district",
    }


def school_org(school: dict[str, Any]) -> dict[str, Any]:
    school_id = ps_id(school.get("id"))
    return {
        "sourcedId": _school_sourced_id(school_id),
        "status": "active",
        "name": _text(school.get("name")),
        "type": "school",
        "identifier": ps_id(school.get("school_number")),
        "parent": {"sourcedId": DISTRICT_SOURCED_ID},
        SOURCE_LOCATION_KEY: f"PowerSchool school {school_id}",
    }


def term_session(term: dict[str, Any], school_id: str) -> dict[str, Any]:
    term_id = ps_id(term.get("id"))
    school = ps_id(term.get("school_id")) or school_id
    number = _int(term_id)
    portion = _int(term.get("portion"))  # how many parts of the year: 1 is the full year
    is_year = portion == 1 if portion is not None else (number is not None and number % 100 == 0)
    # PowerSchool numbers a year's terms from its full-year term: 2601, 2602 belong to 2600.
    year = None if number is None else number // 100 * 100
    parent = None if is_year or year is None or year == number else _term_sourced_id(school, str(year))
    return {
        "sourcedId": _term_sourced_id(school, term_id),
        "status": "active",
        "title": _text(term.get("name")),
        "type": "schoolYear" if is_year else "term",
        "startDate": _text(term.get("start_date")) or None,
        "endDate": _text(term.get("end_date")) or None,
        "parent": _ref(parent or ""),
        SOURCE_LOCATION_KEY: f"PowerSchool term {term_id} (school {school})",
    }


def section_class(section: dict[str, Any], course: dict[str, Any] | None, school_id: str) -> dict[str, Any]:
    section_id = ps_id(section.get("id"))
    school = ps_id(section.get("school_id")) or school_id
    course = course or {}
    course_number = _text(course.get("course_number"))
    class_code = "-".join(part for part in (course_number, _text(section.get("section_number"))) if part)
    expression = section.get("expression") or section.get("external_expression")
    term = _term_sourced_id(school, ps_id(section.get("term_id")))
    return {
        "sourcedId": sourced_id("section", section_id),
        "status": "active",
        "title": _text(course.get("course_name")) or course_number,
        "classCode": class_code,
        "classType": "scheduled",
        "school": _ref(_school_sourced_id(school)),
        "terms": [{"sourcedId": term}] if term else [],
        "periods": parse_periods(expression),
        "course": _ref(sourced_id("course", section.get("course_id"))),
        SOURCE_LOCATION_KEY: f"PowerSchool section {section_id}",
    }


def student_state(school_enrollment: dict[str, Any]) -> tuple[str, bool]:
    """(status, enabledUser) from the school_enrollment expansion."""
    letter = _text(school_enrollment.get("enroll_status")).upper()
    if not letter:
        code = ps_id(school_enrollment.get("enroll_status_code"))
        letter = _ENROLL_CODES.get(code, "?" if code else "")
    if not letter or letter in _ENABLED_STATUSES:
        return "active", True  # no expansion at all: listed by the school, so enrolled
    if letter in _LEFT_STATUSES:
        return "tobedeleted", False
    # Inactive, pre-registered, or a status this code does not know: keep the
    # student but without access, the cautious choice for a child's account.
    return "active", False


def student_user(student: dict[str, Any], school_id: str) -> dict[str, Any]:
    student_id = ps_id(student.get("id"))
    enrollment = _object(student.get("school_enrollment"))
    name = _object(student.get("name"))
    status, enabled = student_state(enrollment)
    school = ps_id(enrollment.get("school_id")) or school_id
    grade = _grade(enrollment.get("grade_level"))
    return {
        "sourcedId": sourced_id("student", student_id),
        "status": status,
        "username": _text(student.get("student_username")),
        "enabledUser": "true" if enabled else "false",
        "givenName": _text(name.get("first_name")),
        "familyName": _text(name.get("last_name")),
        "middleName": _text(name.get("middle_name")),
        "role": "student",
        "identifier": ps_id(student.get("local_id")),
        "email": _text(_object(student.get("contact_info")).get("email")),
        "orgs": [{"sourcedId": _school_sourced_id(school)}],
        "grades": [grade] if grade else [],
        SOURCE_LOCATION_KEY: f"PowerSchool student {student_id}",
    }


def staff_role(types: Iterable[int | None]) -> str | None:
    """The OneRoster role of a staff member from its affiliation types; None: not a roster user."""
    seen = set(types)
    if seen & _TEACHING_TYPES:
        return "teacher"
    if _ADMIN_TYPE in seen:
        return "administrator"
    if seen == {_LUNCH_STAFF_TYPE}:
        return None
    return "teacher"  # not assigned, or affiliations not sent: may still lead a section


def staff_user(staff: dict[str, Any], school_id: str) -> dict[str, Any] | None:
    """The user of a staff record, or None for staff with no place on a roster (lunch staff)."""
    staff_id = ps_id(staff.get("id"))
    affiliations = [
        _object(a) for a in as_list(_object(staff.get("school_affiliations")).get("school_affiliation"))
    ]
    role = staff_role(_int(a.get("type")) for a in affiliations)
    if role is None:
        return None
    active = [a for a in affiliations if _int(a.get("status")) == _ACTIVE_AFFILIATION]
    schools = [ps_id(a.get("school_id")) for a in (active or affiliations)] or [school_id]
    name = _object(staff.get("name"))
    usernames = (staff.get("admin_username"), staff.get("teacher_username"))
    if role != "administrator":
        usernames = usernames[::-1]
    return {
        "sourcedId": sourced_id("staff", staff_id),
        "status": "active",
        "username": next((_text(u) for u in usernames if _text(u)), ""),
        "enabledUser": "true" if active or not affiliations else "false",
        "givenName": _text(name.get("first_name")),
        "familyName": _text(name.get("last_name")),
        "middleName": _text(name.get("middle_name")),
        "role": role,
        "identifier": ps_id(staff.get("local_id")),
        "email": _text(_object(staff.get("emails")).get("work_email")),
        "orgs": [{"sourcedId": _school_sourced_id(s)} for s in dict.fromkeys(schools) if s],
        SOURCE_LOCATION_KEY: f"PowerSchool staff {staff_id}",
    }


def section_enrollments(
    section: dict[str, Any], rows: Iterable[dict[str, Any]], school_id: str
) -> Iterator[dict[str, Any]]:
    """The section's teacher enrollment (from `staff_id`), then one per section_enrollment."""
    section_id = ps_id(section.get("id"))
    school = _ref(_school_sourced_id(ps_id(section.get("school_id")) or school_id))
    class_ref = _ref(sourced_id("section", section_id))
    staff_id = ps_id(section.get("staff_id"))
    if staff_id and staff_id != "0":  # 0: no teacher assigned yet
        yield {
            "sourcedId": f"ps-enr-teacher-{section_id}-{staff_id}",
            "status": "active",
            "user": _ref(sourced_id("staff", staff_id)),
            "class": class_ref,
            "school": school,
            "role": "teacher",
            "primary": "true",
            SOURCE_LOCATION_KEY: f"PowerSchool section {section_id} teacher",
        }
    for row in rows:
        enrollment_id = ps_id(row.get("id"))
        yield {
            "sourcedId": sourced_id("enr", enrollment_id),
            "status": "tobedeleted" if _flag(row.get("dropped")) else "active",
            "user": _ref(sourced_id("student", row.get("student_id"))),
            "class": _ref(sourced_id("section", ps_id(row.get("section_id")) or section_id)),
            "school": school,
            "role": "student",
            "primary": "false",
            "beginDate": _text(row.get("entry_date")) or None,
            "endDate": last_day(row.get("exit_date")),
            SOURCE_LOCATION_KEY: f"PowerSchool section_enrollment {enrollment_id}",
        }


def batched_pages(entity: Entity, records: Iterator[dict[str, Any]], size: int) -> Iterator[SourcePage]:
    """Records regrouped into pages of `size` (PowerSchool's come per school and per section)."""
    number, batch = 0, []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield SourcePage(entity=entity, number=number, records=batch)
            number, batch = number + 1, []
    if batch or number == 0:
        yield SourcePage(entity=entity, number=number, records=batch)


def _same_page(previous: list[dict[str, Any]], page: list[dict[str, Any]]) -> bool:
    first = ps_id(previous[0].get("id")) if previous else ""
    return bool(first) and bool(page) and first == ps_id(page[0].get("id"))


def _check_progress(previous: list[dict[str, Any]], page: list[dict[str, Any]], url: str) -> None:
    # A server that ignores `page` would otherwise be read forever.
    if _same_page(previous, page):
        raise SourceError(f"GET {redact_url(url)}: the source returned the same page twice (page ignored)")


def _new_session(concurrency: int) -> requests.Session:
    session = requests.Session()
    # Section pages and their enrollments run in two pools of `concurrency` each.
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(10, 2 * concurrency))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "rostersync"
    return session
