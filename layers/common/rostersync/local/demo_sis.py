"""The built-in demo SIS: a real OneRoster REST server over a `DemoDistrict`.

It serves both version roots from the same data, on loopback, with the
behaviour a connector meets in the field:

* `POST /oauth/token`: OAuth 2 client credentials (HTTP Basic or form fields);
  tokens last an hour, or until `expire_tokens()`.
* `{root}/orgs|schools|academicSessions|terms|classes|users|students|teachers|
  enrollments` and `{root}/{collection}/{sourcedId}`, for root
  `/ims/oneroster/v1p1` (1.1 shapes, as stored) and
  `/ims/oneroster/rostering/v1p2` (1.2 shapes, converted per response).
* Paging by `limit` (default 100, capped at `page_cap`) and `offset`, with
  `X-Total-Count` and a `Link` header (`rel="next"` while more remain,
  `rel="last"` always).
* `filter=` per the OneRoster filter syntax: `field op 'value'` predicates
  joined by one kind of ` AND ` / ` OR `; ops `= != > >= < <= ~`;
  `dateLastModified` compares as a datetime, the string fields in
  `FILTERABLE_FIELDS` as strings. Anything else answers 400 with an
  `invalid_filter_field` status body, as does every filter when the server is
  built with `filters=False` (a source that cannot filter).
* Envelopes: collections answer `{"orgs"|"academicSessions"|"classes"|
  "users"|"enrollments": [...]}` as the specification says, also for
  `/schools`, `/terms`, `/students` and `/teachers`. With
  `vendor_envelopes=True` the variant endpoints use their own name instead
  (`/students` -> `students`, `/teachers` -> `teachers`, `/terms` -> `terms`,
  `/schools` -> `schools`), as some vendors do. Single records answer
  `{"org"|"academicSession"|"class"|"user"|"enrollment": {...}}`.
* `fail_next(status, count, retry_after)` makes the next OneRoster requests
  (not the token endpoint) answer `status`, with `Retry-After` when given;
  faults come before the token check, as a gateway's would.
* `fault(kind, ...)` injects the other ways a SIS misbehaves, on the next
  `count` OneRoster requests whose path contains `path_contains` and whose
  offset is at least `min_offset`: `"status"` (as `fail_next`), `"delay"`
  (answer after `delay_s`: a timeout for a client that waits less),
  `"reset"` (headers and half the body, then the connection is closed),
  `"truncate"` (a complete 200 whose JSON is cut in half), `"html"` (a 200
  HTML error page), `"empty"` (a 200 page with no records) and `"call"`
  (run `action()` first, e.g. to change the district mid-paging).
* `totals=False` leaves out `X-Total-Count`, `links=False` the `Link`
  header; `past_end="404"|"400"` answers a page past the end with that
  status instead of an empty page.
* `requests` logs every request as `(method, path, query)`; `latency_s`
  (changeable while running) sleeps that long in each request.

Records are served in the district's order; filtered views are cached until
the district changes (`DemoDistrict.touch`/`add` bump its version), so paging
a filtered 350,000-record collection stays linear. Hrefs in the data are
paths under the 1.1 root; 1.2 responses rewrite them under the 1.2 root.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, V1P1_ROOT, DemoDistrict
from rostersync.local.loopback import LoopbackServer

_log = logging.getLogger(__name__)

V1P2_ROOT = "/ims/oneroster/rostering/v1p2"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a route, not a secret
TOKEN_LIFETIME_S = 3600
DEFAULT_LIMIT = 100

FILTERABLE_FIELDS = frozenset(
    {
        "sourcedId",
        "status",
        "role",
        "type",
        "title",
        "name",
        "identifier",
        "username",
        "email",
        "givenName",
        "familyName",
        "classCode",
        "classType",
        "schoolYear",
    }
)
_DATE_FIELD = "dateLastModified"


@dataclass(frozen=True)
class _Collection:
    entity: str  # the DemoDistrict entity behind it
    envelope: str  # the key the specification gives the list
    single: str  # the key of one record
    field: str | None = None  # a variant endpoint selects records where field == value
    value: str | None = None

    def selects(self, record: dict) -> bool:
        return self.field is None or record.get(self.field) == self.value


_COLLECTIONS = {
    "orgs": _Collection("orgs", "orgs", "org"),
    "schools": _Collection("orgs", "orgs", "org", "type", "school"),
    "academicSessions": _Collection("academicSessions", "academicSessions", "academicSession"),
    "terms": _Collection("academicSessions", "academicSessions", "academicSession", "type", "term"),
    "classes": _Collection("classes", "classes", "class"),
    "users": _Collection("users", "users", "user"),
    "students": _Collection("users", "users", "user", "role", "student"),
    "teachers": _Collection("users", "users", "user", "role", "teacher"),
    "enrollments": _Collection("enrollments", "enrollments", "enrollment"),
}
_VENDOR_ENVELOPES = {"students": "students", "teachers": "teachers", "terms": "terms", "schools": "schools"}
_CODE_MINOR = {
    400: "invalid_selection_field",
    401: "unauthorisedrequest",
    403: "forbidden",
    404: "unknownobject",
    429: "server_busy",
}


class LoggedRequest(NamedTuple):
    method: str
    path: str
    query: dict[str, str]  # first value of each parameter, decoded


class RequestLog:
    """Every request the server answered, in arrival order; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[LoggedRequest] = []

    def append(self, item: LoggedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def snapshot(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __iter__(self) -> Iterator[LoggedRequest]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass
class Reply:
    """One HTTP answer: status, JSON body (None for none) and extra headers.

    `raw` replaces the JSON body with these bytes (sent as `content_type`);
    `cut_at` sends only that many body bytes, under the full Content-Length,
    and then closes the connection.
    """

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"
    cut_at: int | None = None

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return b"" if self.body is None else json.dumps(self.body, separators=(",", ":")).encode()


FaultKind = Literal["status", "delay", "reset", "truncate", "html", "empty", "call"]
FAULT_KINDS: tuple[str, ...] = ("status", "delay", "reset", "truncate", "html", "empty", "call")
_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head>"
    b"<body><h1>The SIS is down for maintenance</h1></body></html>"
)


@dataclass
class _Fault:
    status: int
    remaining: int
    retry_after: float | None
    path_contains: str | None = None
    kind: str = "status"
    delay_s: float = 0.0
    min_offset: int = 0
    action: Callable[[], object] | None = None

    def matches(self, path: str, query: dict[str, str]) -> bool:
        if self.path_contains is not None and self.path_contains not in path:
            return False
        if self.min_offset:
            try:
                return int(query.get("offset") or 0) >= self.min_offset
            except ValueError:
                return False
        return True


class FilterError(ValueError):
    """A filter this server does not understand; answered 400."""


# -- filters ------------------------------------------------------------------

_PREDICATE = re.compile(r"\s*(\w+)\s*(!=|>=|<=|=|>|<|~)\s*'([^']*)'\s*")
_LOGICAL = re.compile(r"(AND|OR)\s+")


@dataclass(frozen=True)
class _Predicate:
    name: str
    op: str
    value: str | datetime

    def holds(self, record: dict) -> bool:
        actual = record.get(self.name)
        if actual is None:
            return False
        if isinstance(self.value, datetime):
            return _compare(_parse_datetime(actual), self.op, self.value)
        return _compare(str(actual), self.op, self.value)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "~":
        return str(expected).lower() in str(actual).lower()
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
    }
    return comparisons[op](actual, expected)


def _parse_datetime(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise FilterError(f"dateLastModified needs a time zone, as in 2026-01-01T00:00:00Z: {text!r}")
    return moment


def parse_filter(text: str) -> tuple[str, list[_Predicate]]:
    """Parse `field op 'value' [AND|OR field op 'value' ...]` into (logic, predicates)."""
    predicates: list[_Predicate] = []
    logic = "AND"
    logics: set[str] = set()
    position = 0
    while True:
        match = _PREDICATE.match(text, position)
        if match is None:
            raise FilterError(f"cannot parse filter at {text[position:]!r}")
        predicates.append(_predicate(*match.groups()))
        position = match.end()
        if position == len(text):
            break
        joiner = _LOGICAL.match(text, position)
        if joiner is None:
            raise FilterError(f"expected AND or OR at {text[position:]!r}")
        logics.add(joiner.group(1))
        position = joiner.end()
    if len(logics) > 1:
        raise FilterError("a filter may join its predicates with AND or with OR, not both")
    if logics:
        logic = logics.pop()
    return logic, predicates


def _predicate(name: str, op: str, value: str) -> _Predicate:
    if name == _DATE_FIELD:
        if op == "~":
            raise FilterError("dateLastModified does not support ~")
        try:
            return _Predicate(name, op, _parse_datetime(value))
        except ValueError as error:
            raise FilterError(f"bad dateLastModified value {value!r}: {error}") from error
    if name not in FILTERABLE_FIELDS:
        raise FilterError(f"cannot filter on field {name!r}")
    return _Predicate(name, op, value)


def _filter_matcher(text: str) -> Callable[[dict], bool]:
    logic, predicates = parse_filter(text)
    if logic == "OR":
        return lambda record: any(predicate.holds(record) for predicate in predicates)
    return lambda record: all(predicate.holds(record) for predicate in predicates)


# -- 1.2 shapes ---------------------------------------------------------------


# The fields that hold refs, per entity: the only values 1.2 must rewrite.
_REF_FIELDS = {
    "orgs": ("parent", "children"),
    "academicSessions": ("parent", "children"),
    "classes": ("course", "school", "terms"),
    "users": ("agents", "orgs"),
    "enrollments": ("user", "class", "school"),
}
_V1P1_PREFIX_LENGTH = len(V1P1_ROOT)


def _rehref(value: Any) -> Any:
    """Copy a ref (or list of refs) with its href moved under the 1.2 root."""
    if isinstance(value, list):
        return [_rehref(item) for item in value]
    if isinstance(value, dict):
        href = value.get("href")
        if isinstance(href, str) and href.startswith(V1P1_ROOT):
            return {**value, "href": V1P2_ROOT + href[_V1P1_PREFIX_LENGTH:]}
    return value


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def to_v12(entity: str, record: dict, district: DemoDistrict) -> dict:
    """The 1.2 form of a stored 1.1 record; the stored record is not changed."""
    converted = dict(record)
    for name in _REF_FIELDS.get(entity, ()):
        if name in converted:
            converted[name] = _rehref(converted[name])
    if entity == "users":
        return _user_v12(converted, district)
    if entity == "enrollments":
        converted["primary"] = _bool(converted.get("primary"))
    elif entity == "academicSessions":
        converted["org"] = _district_org_ref(district)
    return converted


def _user_v12(user: dict, district: DemoDistrict) -> dict:
    role = user.pop("role", "")
    orgs = user.pop("orgs", []) or []
    user["enabledUser"] = _bool(user.get("enabledUser"))
    roles = []
    for position, org in enumerate(orgs):
        roles.append(
            {
                "roleType": "primary" if position == 0 else "secondary",
                "role": _role_v12(user["sourcedId"], role, org, district),
                "org": org,
            }
        )
    user["roles"] = roles
    user["primaryOrg"] = orgs[0] if orgs else None
    return user


def _role_v12(sourced_id: str, role: str, org: dict, district: DemoDistrict) -> str:
    """1.2 splits `administrator` by where the administrator works."""
    if role != "administrator":
        return role
    if sourced_id in district.admin_roles_v12:
        return district.admin_roles_v12[sourced_id]
    try:
        org_type = district.find("orgs", org["sourcedId"]).get("type")
    except KeyError:
        org_type = None
    return "districtAdministrator" if org_type == "district" else "siteAdministrator"


def _district_org_ref(district: DemoDistrict) -> dict | None:
    for org in district.orgs:
        if org.get("type") == "district":
            return {
                "href": f"{V1P2_ROOT}/orgs/{org['sourcedId']}",
                "sourcedId": org["sourcedId"],
                "type": "org",
            }
    return None


# -- responses ----------------------------------------------------------------


def _status_body(status: int, description: str, code_minor: str | None = None) -> dict:
    """The imsx status-info body that OneRoster servers send with an error."""
    return {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": description,
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [
                {
                    "imsx_codeMinorFieldName": "TargetEndSystem",
                    "imsx_codeMinorFieldValue": code_minor
                    or _CODE_MINOR.get(status, "internal_server_error" if status >= 500 else "bad_request"),
                }
            ]
        },
    }


def _error(
    status: int, description: str, code_minor: str | None = None, headers: dict[str, str] | None = None
) -> Reply:
    return Reply(status, _status_body(status, description, code_minor), headers or {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sis: DemoSis) -> None:
        self.sis = sis
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # Keep-alive lets a connector reuse its connection, as against a real SIS.
    protocol_version = "HTTP/1.1"
    # Keep-alive answers otherwise wait ~40 ms for a delayed ACK (Nagle).
    disable_nagle_algorithm = True
    # An idle keep-alive connection is closed after this, so stop() leaves no reader behind for long.
    timeout = 30

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            response = self.server.sis.answer(self.command, self.path, dict(self.headers.items()), body)
        except Exception:  # a bug here must answer 500, not hang the client
            _log.exception("demo SIS failed on %s %s", self.command, self.path)
            response = _error(500, "internal error in the demo SIS")
        self._write(response)

    def _write(self, response: Reply) -> None:
        payload = response.payload()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.cut_at is None:
            self.wfile.write(payload)
            return
        # A connection that drops mid-response: part of the body, then nothing.
        self.wfile.write(payload[: response.cut_at])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes every request to stderr; a demo and its tests want quiet.
        _log.debug("demo SIS: " + format, *args)


class DemoSis(LoopbackServer):
    """A OneRoster 1.1 + 1.2 REST server for a `DemoDistrict`, in a daemon thread."""

    label = "demo SIS"
    thread_name = "demo-sis"

    def __init__(
        self,
        district: DemoDistrict,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        page_cap: int = 1000,
        latency_s: float = 0.0,
        filters: bool = True,
        vendor_envelopes: bool = False,
        totals: bool = True,
        links: bool = True,
        past_end: Literal["empty", "404", "400"] = "empty",
    ) -> None:
        self.district = district
        super().__init__(host, port)
        self.client_id, self.client_secret = client_id, client_secret
        self.page_cap = page_cap
        self.latency_s = latency_s
        self.filters = filters
        self.vendor_envelopes = vendor_envelopes
        self.totals = totals
        self.links = links
        self.past_end = past_end
        self.requests = RequestLog()
        self._tokens: dict[str, float] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._views: dict[tuple[str, str], list[dict]] = {}
        self._views_of: tuple[DemoDistrict, int] | None = None

    # -- lifecycle -------------------------------------------------------

    def _http_server(self) -> ThreadingHTTPServer:
        return _Server((self.host, self.port), self)

    @property
    def v1p1_url(self) -> str:
        return self.url + V1P1_ROOT

    @property
    def v1p2_url(self) -> str:
        return self.url + V1P2_ROOT

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    # -- test controls ---------------------------------------------------

    def fail_next(
        self, status: int, count: int = 1, retry_after: float | None = None, path_contains: str | None = None
    ) -> None:
        """Answer the next `count` OneRoster requests with `status` (token requests are spared);
        with `path_contains`, only requests whose path contains it (e.g. "/enrollments")."""
        self.fault("status", count=count, status=status, retry_after=retry_after, path_contains=path_contains)

    def fault(
        self,
        kind: FaultKind,
        *,
        count: int = 1,
        path_contains: str | None = None,
        min_offset: int = 0,
        status: int = 503,
        retry_after: float | None = None,
        delay_s: float = 0.0,
        action: Callable[[], object] | None = None,
    ) -> None:
        """Misbehave on the next `count` matching OneRoster requests (see the module doc)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if kind == "call" and action is None:
            raise ValueError("a 'call' fault needs an action")
        with self._lock:
            self._faults.append(
                _Fault(status, count, retry_after, path_contains, kind, delay_s, min_offset, action)
            )

    def clear_faults(self) -> None:
        """Drop every fault not yet used up."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> int:
        """How many injected answers are still to come."""
        with self._lock:
            return sum(fault.remaining for fault in self._faults)

    def expire_tokens(self) -> None:
        """Forget every issued token, as when they expire mid-run."""
        with self._lock:
            self._tokens.clear()

    # -- request handling ------------------------------------------------

    def answer(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Reply:
        """The response to one request (called from the handler threads)."""
        parts = urlsplit(raw_path)
        path = unquote(parts.path).rstrip("/") or "/"
        query = {name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
        self.requests.append(LoggedRequest(method, path, query))
        if self.latency_s:
            time.sleep(self.latency_s)
        if path == TOKEN_PATH:
            return self._token(method, headers, body)
        for root, version in ((V1P1_ROOT, "1.1"), (V1P2_ROOT, "1.2")):
            if path.startswith(root + "/"):
                return self._oneroster(method, version, path[len(root) + 1 :], query, headers)
        return _error(404, f"no route {path}", "unknownobject")

    def _token(self, method: str, headers: dict[str, str], body: bytes) -> Reply:
        if method != "POST":
            return Reply(405, {"error": "invalid_request"}, {"Allow": "POST"})
        form = {name: values[0] for name, values in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        client_id, client_secret = _client_credentials(headers, form)
        if not (
            hmac.compare_digest(client_id, self.client_id)
            and hmac.compare_digest(client_secret, self.client_secret)
        ):
            return Reply(401, {"error": "invalid_client"}, {"WWW-Authenticate": 'Basic realm="demo-sis"'})
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + TOKEN_LIFETIME_S
        answer = {"access_token": token, "token_type": "bearer", "expires_in": TOKEN_LIFETIME_S}
        if form.get("scope"):
            answer["scope"] = form["scope"]
        return Reply(200, answer, {"Cache-Control": "no-store"})

    def _take_fault(self, path: str, query: dict[str, str]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path, query):
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

    def _oneroster(
        self, method: str, version: str, rest: str, query: dict[str, str], headers: dict[str, str]
    ) -> Reply:
        fault = self._take_fault(rest, query)
        if fault is not None and fault.kind == "status":
            extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            return _error(fault.status, f"injected failure {fault.status}", headers=extra)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay_s)
        if fault is not None and fault.kind == "call" and fault.action is not None:
            fault.action()
        reply = self._serve_oneroster(method, version, rest, query, headers)
        if fault is None or reply.status != 200:
            return reply
        if fault.kind == "reset":
            reply.cut_at = len(reply.payload()) // 2
        elif fault.kind == "truncate":
            reply.raw = reply.payload()[: len(reply.payload()) // 2]
        elif fault.kind == "html":
            reply.raw, reply.content_type = _HTML_ERROR_PAGE, "text/html"
        elif fault.kind == "empty" and isinstance(reply.body, dict):
            reply.body = {key: [] for key in reply.body}
        return reply

    def _serve_oneroster(
        self, method: str, version: str, rest: str, query: dict[str, str], headers: dict[str, str]
    ) -> Reply:
        if not self._authorized(headers):
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            return _error(401, "missing or invalid bearer token", headers=challenge)
        if method != "GET":
            return _error(405, f"{method} is not supported", "bad_request", {"Allow": "GET"})
        name, _, sourced_id = rest.partition("/")
        collection = _COLLECTIONS.get(name)
        if collection is None or "/" in sourced_id:
            return _error(404, f"unknown endpoint {rest!r}", "unknownobject")
        if sourced_id:
            return self._single(version, collection, sourced_id)
        return self._page(version, name, collection, query)

    def _single(self, version: str, collection: _Collection, sourced_id: str) -> Reply:
        district = self.district
        try:
            record = district.find(collection.entity, sourced_id)
        except KeyError:
            record = None
        if record is None or not collection.selects(record):
            return _error(404, f"no {collection.single} {sourced_id!r}", "unknownobject")
        return Reply(200, {collection.single: self._shape(version, collection.entity, record, district)})

    def _page(self, version: str, name: str, collection: _Collection, query: dict[str, str]) -> Reply:
        try:
            limit = min(_int_param(query, "limit", DEFAULT_LIMIT, minimum=1), self.page_cap)
            offset = _int_param(query, "offset", 0, minimum=0)
        except ValueError as error:
            return _error(400, str(error), "invalid_selection_field")
        filter_text = query.get("filter", "").strip()
        if filter_text and not self.filters:
            return _error(400, "this server does not support filter", "invalid_filter_field")
        district = self.district
        try:
            selected = self._view(district, name, collection, filter_text)
        except FilterError as error:
            return _error(400, str(error), "invalid_filter_field")
        if offset and offset >= len(selected) and self.past_end != "empty":
            status = int(self.past_end)
            return _error(status, f"offset {offset} is past the end ({len(selected)} records)")
        page = selected[offset : offset + limit]
        envelope = (
            _VENDOR_ENVELOPES.get(name, collection.envelope) if self.vendor_envelopes else collection.envelope
        )
        body = {envelope: [self._shape(version, collection.entity, record, district) for record in page]}
        headers = {}
        if self.totals:
            headers["X-Total-Count"] = str(len(selected))
        if self.links:
            headers["Link"] = self._link_header(version, name, query, limit, offset, len(selected))
        return Reply(200, body, headers)

    def _view(
        self, district: DemoDistrict, name: str, collection: _Collection, filter_text: str
    ) -> list[dict]:
        """The records an endpoint selects, computed once per district version."""
        records = district.records(collection.entity)
        if collection.field is None and not filter_text:
            return records  # the live list: paging slices it without a copy
        key = (name, filter_text)
        with self._lock:
            if not self._views_are_of(district):
                self._views, self._views_of = {}, (district, district.version)
            cached = self._views.get(key)
        if cached is not None:
            return cached
        matches = _filter_matcher(filter_text) if filter_text else None
        view = [
            record
            for record in records
            if collection.selects(record) and (matches is None or matches(record))
        ]
        with self._lock:
            if self._views_are_of(district):
                self._views[key] = view
        return view

    def _views_are_of(self, district: DemoDistrict) -> bool:
        # Identity, not ==: comparing two districts would compare every record.
        return (
            self._views_of is not None
            and self._views_of[0] is district
            and self._views_of[1] == district.version
        )

    def _shape(self, version: str, entity: str, record: dict, district: DemoDistrict) -> dict:
        return record if version == "1.1" else to_v12(entity, record, district)

    def _link_header(
        self, version: str, name: str, query: dict[str, str], limit: int, offset: int, total: int
    ) -> str:
        root = V1P1_ROOT if version == "1.1" else V1P2_ROOT
        base = f"{self.url}{root}/{name}"

        def link(page_offset: int, rel: str) -> str:
            params = {**query, "limit": str(limit), "offset": str(page_offset)}
            return f'<{base}?{urlencode(params, quote_via=quote)}>; rel="{rel}"'

        links = []
        if offset + limit < total:
            links.append(link(offset + limit, "next"))
        last_offset = max(0, (total - 1) // limit * limit)
        links.append(link(last_offset, "last"))
        return ", ".join(links)


def _header(headers: dict[str, str], name: str) -> str:
    """A header by case-insensitive name ("" when absent)."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), "")


def _client_credentials(headers: dict[str, str], form: dict[str, str]) -> tuple[str, str]:
    """Client id and secret from HTTP Basic (RFC 6749 2.3.1) or else the form body."""
    scheme, _, encoded = _header(headers, "Authorization").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        client_id, _, client_secret = decoded.partition(":")
        # RFC 6749 form-encodes both parts before Basic encoding.
        return unquote(client_id.replace("+", " ")), unquote(client_secret.replace("+", " "))
    return form.get("client_id", ""), form.get("client_secret", "")


def _int_param(query: dict[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value
