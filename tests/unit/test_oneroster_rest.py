"""OneRoster REST connector against a real HTTP server on 127.0.0.1.

Nothing in `requests` is mocked: a small fake SIS (`FakeSis`, a
ThreadingHTTPServer on port 0) serves pages, tokens and scripted failures, and
checks OAuth 1.0a signatures with its own, independent RFC 5849 code. Sleeps
are injected, so retries and rate limits cost no wall time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

import pytest
import requests

from rostersync.errors import FilterNotSupportedError, SettingsError, SourceError
from rostersync.sources.base import Connector, SourcePage
from rostersync.sources.http import HttpClient, RateLimiter, redact_url, retry_after_s
from rostersync.sources.oauth import (
    ONEROSTER_1P2_SCOPE,
    OAuth2ClientCredentials,
    hmac_signature,
    percent_encode,
    signature_base_string,
    signing_key,
)
from rostersync.sources.oneroster_rest import OneRosterRestConnector, since_filter

V1P1 = "/ims/oneroster/v1p1"
V1P2 = "/ims/oneroster/rostering/v1p2"
CLIENT_ID = "district-client"
CLIENT_SECRET = "s3cr3t/with+odd=chars&more"
ENTITY_KEYS = ("orgs", "academicSessions", "classes", "users", "enrollments")


# --------------------------------------------------------------------------
# The fake SIS
# --------------------------------------------------------------------------


@dataclass
class Scripted:
    """A canned answer for the next request to one entity, before auth and paging."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0
    truncate: bool = False  # announce more bytes than sent, then hang up


@dataclass
class Seen:
    method: str
    path: str
    raw_query: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeSis:
    """A OneRoster server with knobs for every paging and failure mode under test."""

    def __init__(self, prefix: str = V1P1, auth: str | None = "oauth2") -> None:
        self.prefix = prefix
        self.auth = auth
        self.data: dict[str, list[dict]] = {key: [] for key in ENTITY_KEYS}
        self.envelope: dict[str, str] = {}
        self.page_cap: int | None = None
        self.fixed_page_size: int | None = None  # ignores the client's limit
        self.send_total = True
        self.send_link = False
        self.ignore_offset = False
        self.reject_filter_status: int | None = None
        self.link_host: str | None = None  # absolute next links to this origin
        self.delay_s = 0.0
        self.after_page: Callable[[FakeSis, str, int], None] | None = None
        self.scripts: dict[str, deque[Scripted]] = {}
        self.seen: list[Seen] = []
        self.token_requests: list[dict[str, str]] = []
        self.valid_tokens: set[str] = set()
        self.accept_tokens = True
        self.token_expires_in: Any = 3600
        self.oauth1_nonces: list[str] = []
        self.oauth1_failures: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.sis = self  # type: ignore[attr-defined]
        # A short poll interval keeps shutdown (and so each test) fast.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    @property
    def origin(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def base_url(self) -> str:
        return self.origin + self.prefix

    @property
    def token_url(self) -> str:
        return self.origin + "/oauth/token"

    def start(self) -> FakeSis:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, entity: str, *answers: Scripted) -> None:
        self.scripts.setdefault(entity, deque()).extend(answers)

    def api_requests(self, entity: str | None = None) -> list[Seen]:
        return [
            s for s in self.seen if s.method == "GET" and (entity is None or s.path.endswith("/" + entity))
        ]

    # -- called by the handler, one thread per request --------------------

    def enter(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def next_script(self, entity: str) -> Scripted | None:
        with self._lock:
            queue = self.scripts.get(entity)
            return queue.popleft() if queue else None

    def issue_token(self, form: dict[str, str], authorization: str) -> tuple[int, dict]:
        with self._lock:
            self.token_requests.append({**form, "authorization": authorization})
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if authorization != expected or form.get("grant_type") != "client_credentials":
                return 401, {"error": "invalid_client"}
            token = f"token-{len(self.token_requests)}"
            self.valid_tokens.add(token)
            return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.token_expires_in}

    def revoke_tokens(self) -> None:
        with self._lock:
            self.valid_tokens.clear()

    def authorized(self, seen: Seen, host: str) -> bool:
        if self.auth == "oauth2":
            header = seen.headers.get("Authorization", "")
            return self.accept_tokens and header.removeprefix("Bearer ") in self.valid_tokens
        if self.auth == "oauth1":
            return self._verify_oauth1(seen, host)
        return True

    def _verify_oauth1(self, seen: Seen, host: str) -> bool:
        header = seen.headers.get("Authorization", "")
        params = {k: unquote(v) for k, v in re.findall(r'(\w+)="([^"]*)"', header)}
        problems = []
        if not header.startswith("OAuth "):
            problems.append("no OAuth header")
        if params.get("oauth_signature_method") != "HMAC-SHA256" or params.get("oauth_version") != "1.0":
            problems.append("method/version")
        if params.get("oauth_consumer_key") != CLIENT_ID:
            problems.append("consumer key")
        if abs(int(params.get("oauth_timestamp", "0")) - time.time()) > 300:
            problems.append("timestamp")
        with self._lock:
            if params.get("oauth_nonce") in self.oauth1_nonces:
                problems.append("nonce replayed")
            self.oauth1_nonces.append(params.get("oauth_nonce", ""))
        expected = independent_rfc5849_signature(seen.method, host, seen.path, seen.raw_query, params)
        if not hmac.compare_digest(expected, params.get("oauth_signature", "")):
            problems.append("signature")
        self.oauth1_failures.extend(problems)
        return not problems

    def page(self, entity: str, query: dict[str, str]) -> tuple[list[dict], int, dict[str, str]]:
        records = self.data[entity]
        wanted = query.get("filter")
        if wanted:
            match = re.fullmatch(r"dateLastModified>'([^']+)'", wanted)
            assert match, wanted
            records = [r for r in records if r.get("dateLastModified", "") > match.group(1)]
        limit = int(query.get("limit", "100"))
        if self.page_cap:
            limit = min(limit, self.page_cap)
        limit = self.fixed_page_size or limit
        if "page" in query:  # the Link-only scheme: page numbers, not offsets
            offset = int(query["page"]) * limit
        else:
            offset = 0 if self.ignore_offset else int(query.get("offset", "0"))
        chunk = records[offset : offset + limit]
        headers: dict[str, str] = {}
        if self.send_total:
            headers["X-Total-Count"] = str(len(records))
        if self.send_link and offset + len(chunk) < len(records):
            page_no = offset // limit + 1
            extra = f"&filter={requests.utils.quote(wanted, safe='')}" if wanted else ""
            target = f"{self.prefix}/{entity}?page={page_no}&limit={limit}{extra}"
            if self.link_host:
                target = self.link_host + target
            headers["Link"] = f'<{target}>; rel="next", <{self.prefix}/{entity}?page=0>; rel="first"'
        return chunk, len(records), headers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are written apart; avoid 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    @property
    def sis(self) -> FakeSis:
        return self.server.sis  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        if urlsplit(self.path).path != "/oauth/token":
            self._send(404, {"error": "not found"})
            return
        status, body = self.sis.issue_token(form, self.headers.get("Authorization", ""))
        self._send(status, body)

    def do_GET(self) -> None:
        path, _, raw_query = self.path.partition("?")
        seen = Seen("GET", path, raw_query, dict(parse_qsl(raw_query)), dict(self.headers.items()))
        self.sis.enter(seen)
        try:
            self._answer(seen)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (timeout tests)
        finally:
            self.sis.leave()

    def _answer(self, seen: Seen) -> None:
        sis = self.sis
        if sis.delay_s:
            time.sleep(sis.delay_s)
        if not seen.path.startswith(sis.prefix + "/"):
            self._send(404, {"error": "no such path"})
            return
        entity = seen.path[len(sis.prefix) + 1 :]
        scripted = sis.next_script(entity)
        if scripted is not None:
            self._send_scripted(scripted)
            return
        if not sis.authorized(seen, self.headers.get("Host", "")):
            self._send(401, {"error": "unauthorized"})
            return
        if "filter" in seen.query and sis.reject_filter_status:
            self._send(sis.reject_filter_status, {"imsx_description": "filter not supported"})
            return
        records, _, headers = sis.page(entity, seen.query)
        if sis.after_page:  # before answering, so the client cannot outrun the change
            sis.after_page(sis, entity, int(seen.query.get("offset", "0")))
        self._send(200, {sis.envelope.get(entity, entity): records}, headers)

    def _send_scripted(self, scripted: Scripted) -> None:
        if scripted.delay_s:
            time.sleep(scripted.delay_s)
        self.send_response(scripted.status)
        for name, value in scripted.headers.items():
            self.send_header(name, value)
        extra = 100 if scripted.truncate else 0
        self.send_header("Content-Length", str(len(scripted.body) + extra))
        if scripted.truncate:
            self.close_connection = True
        self.end_headers()
        self.wfile.write(scripted.body)

    def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _rfc3986(text: str) -> str:
    return "".join(ch if ch in _UNRESERVED else "".join(f"%{b:02X}" for b in ch.encode()) for ch in text)


def independent_rfc5849_signature(
    method: str, host: str, path: str, raw_query: str, oauth: dict[str, str]
) -> str:
    """RFC 5849 3.4 recomputed from the raw request line, sharing no code with the client."""
    pairs = []
    for item in filter(None, raw_query.split("&")):
        name, _, value = item.partition("=")
        pairs.append((unquote_plus(name), unquote_plus(value)))
    pairs += [(k, v) for k, v in oauth.items() if k not in ("oauth_signature", "realm")]
    normalized = "&".join(f"{k}={v}" for k, v in sorted((_rfc3986(k), _rfc3986(v)) for k, v in pairs))
    base = f"{method}&{_rfc3986('http://' + host.lower() + path)}&{_rfc3986(normalized)}"
    key = _rfc3986(CLIENT_SECRET) + "&"
    return base64.b64encode(hmac.new(key.encode(), base.encode(), hashlib.sha256).digest()).decode()


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


def users(count: int, modified: str = "2026-10-01T00:00:00Z") -> list[dict]:
    return [{"sourcedId": f"u{i:05d}", "dateLastModified": modified} for i in range(count)]


@pytest.fixture
def sis() -> Iterator[FakeSis]:
    server = FakeSis().start()
    yield server
    server.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_connector(server: FakeSis, sleeps: list[float], **overrides: Any) -> OneRosterRestConnector:
    options: dict[str, Any] = {
        "base_url": server.base_url,
        "version": "1.2" if server.prefix == V1P2 else "1.1",
        "auth": server.auth or "oauth2",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_url": server.token_url,
        "page_size": 10,
        "concurrency": 1,
        "timeout_s": 5,
        "max_retries": 3,
        "sleep": sleeps.append,
    }
    options.update(overrides)
    return OneRosterRestConnector(**options)


def read_all(connector: OneRosterRestConnector, entity: str = "users", **kwargs: Any) -> list[SourcePage]:
    with connector:
        return list(connector.pages(entity, **kwargs))  # type: ignore[arg-type]


def ids(pages: list[SourcePage]) -> list[str]:
    return [record["sourcedId"] for page in pages for record in page.records]


# --------------------------------------------------------------------------
# Paths, paging, envelopes
# --------------------------------------------------------------------------


def test_v1p1_pages_with_total_count(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(25)
    connector: Connector = make_connector(sis, sleeps)  # mypy checks the protocol

    pages = list(connector.pages("users"))
    connector.close()

    assert [p.number for p in pages] == [0, 1, 2]
    assert [len(p.records) for p in pages] == [10, 10, 5]
    assert {p.total for p in pages} == {25}
    assert ids(pages) == [u["sourcedId"] for u in sis.data["users"]]
    assert all(p.entity == "users" for p in pages)
    requested = sis.api_requests("users")
    assert [s.path for s in requested] == [V1P1 + "/users"] * 3
    assert [(s.query["limit"], s.query["offset"]) for s in requested] == [
        ("10", "0"),
        ("10", "10"),
        ("10", "20"),
    ]
    assert sleeps == []


def test_v1p2_paths_for_every_entity_and_roster_core_scope(sleeps: list[float]) -> None:
    server = FakeSis(prefix=V1P2).start()
    try:
        for key in ENTITY_KEYS:
            server.data[key] = [{"sourcedId": f"{key}-1"}]
        with make_connector(server, sleeps) as connector:
            got = {key: ids(list(connector.pages(key))) for key in ENTITY_KEYS}  # type: ignore[arg-type]
    finally:
        server.stop()

    assert got == {key: [f"{key}-1"] for key in ENTITY_KEYS}
    assert [s.path for s in server.api_requests()] == [f"{V1P2}/{key}" for key in ENTITY_KEYS]
    assert [t.get("scope") for t in server.token_requests] == [ONEROSTER_1P2_SCOPE]


def test_v1p1_oauth2_sends_no_scope(sis: FakeSis, sleeps: list[float]) -> None:
    read_all(make_connector(sis, sleeps))

    assert len(sis.token_requests) == 1
    assert "scope" not in sis.token_requests[0]


def test_empty_entity_yields_one_empty_page(sis: FakeSis, sleeps: list[float]) -> None:
    pages = read_all(make_connector(sis, sleeps), "classes")

    assert pages == [SourcePage(entity="classes", number=0, records=[], total=0)]


def test_link_next_is_followed_over_computed_offsets(sis: FakeSis, sleeps: list[float]) -> None:
    # Given a server that pages by ?page=N in its Link headers and sends no total
    sis.data["users"] = users(23)
    sis.send_link = True
    sis.send_total = False

    pages = read_all(make_connector(sis, sleeps, concurrency=4))

    assert ids(pages) == [u["sourcedId"] for u in sis.data["users"]]
    assert [p.number for p in pages] == [0, 1, 2]
    assert [s.query.get("page") for s in sis.api_requests()] == [None, "1", "2"]
    assert all("offset" not in s.query for s in sis.api_requests()[1:])


def test_link_next_wins_even_with_a_total(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(23)
    sis.send_link = True

    pages = read_all(make_connector(sis, sleeps, concurrency=4))

    assert ids(pages) == [u["sourcedId"] for u in sis.data["users"]]
    assert [s.query.get("page") for s in sis.api_requests()] == [None, "1", "2"]


def test_next_link_to_another_host_is_refused(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(23)
    sis.send_link = True
    sis.link_host = "http://evil.example"

    with pytest.raises(SourceError, match=r"another host \(http://evil\.example\)"):
        read_all(make_connector(sis, sleeps))
    assert len(sis.api_requests()) == 1


@pytest.mark.parametrize("concurrency", [1, 4])
def test_server_page_cap_below_limit_is_read_completely(
    sis: FakeSis, sleeps: list[float], concurrency: int
) -> None:
    sis.data["users"] = users(30)
    sis.page_cap = 7

    pages = read_all(make_connector(sis, sleeps, concurrency=concurrency))

    assert ids(pages) == [u["sourcedId"] for u in sis.data["users"]]
    assert [p.number for p in pages] == [0, 1, 2, 3, 4]
    offsets = sorted(
        ((s.query["limit"], s.query["offset"]) for s in sis.api_requests()), key=lambda q: int(q[1])
    )
    assert offsets == [("10", "0"), ("7", "7"), ("7", "14"), ("7", "21"), ("7", "28")]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_server_that_ignores_limit_is_read_once_each(
    sis: FakeSis, sleeps: list[float], concurrency: int
) -> None:
    sis.data["users"] = users(40)
    sis.fixed_page_size = 15

    pages = read_all(make_connector(sis, sleeps, concurrency=concurrency))

    assert ids(pages) == [u["sourcedId"] for u in sis.data["users"]]
    assert sorted(int(s.query["offset"]) for s in sis.api_requests()) == [0, 15, 30]


def test_page_cap_without_total_or_link_is_read_completely(sis: FakeSis, sleeps: list[float]) -> None:
    # A short first page without a total may be a cap, not the end: one extra request tells.
    sis.data["users"] = users(30)
    sis.page_cap = 7
    sis.send_total = False

    pages = read_all(make_connector(sis, sleeps, concurrency=4))

    assert ids(pages) == [u["sourcedId"] for u in sis.data["users"]]
    assert all(p.total is None for p in pages)


def test_without_total_a_short_page_ends_the_entity(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(25)
    sis.send_total = False

    pages = read_all(make_connector(sis, sleeps, concurrency=4))

    assert [len(p.records) for p in pages] == [10, 10, 5]
    assert len(sis.api_requests()) == 3


def test_without_total_a_short_first_page_costs_one_probe(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(4)
    sis.send_total = False

    pages = read_all(make_connector(sis, sleeps))

    assert ids(pages) == [u["sourcedId"] for u in sis.data["users"]]
    assert [(s.query["limit"], s.query["offset"]) for s in sis.api_requests()] == [("10", "0"), ("4", "4")]


def test_a_server_that_ignores_offset_fails_instead_of_looping(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(30)
    sis.send_total = False
    sis.ignore_offset = True

    with pytest.raises(SourceError, match="same page twice"):
        read_all(make_connector(sis, sleeps))
    assert len(sis.api_requests()) == 2


@pytest.mark.parametrize("concurrency", [1, 4])
def test_total_that_grows_during_paging_is_reread(
    sis: FakeSis, sleeps: list[float], concurrency: int
) -> None:
    sis.data["users"] = users(20)

    def grow_once(server: FakeSis, entity: str, offset: int) -> None:
        if offset == 0:
            server.data["users"] = users(35)

    sis.after_page = grow_once

    pages = read_all(make_connector(sis, sleeps, concurrency=concurrency))

    assert ids(pages) == [u["sourcedId"] for u in users(35)]
    assert [p.total for p in pages] == [20, 35, 35, 35]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_total_that_shrinks_during_paging_fails_the_read(
    sis: FakeSis, sleeps: list[float], concurrency: int
) -> None:
    # Records removed before the reader's offset move every later record up, so
    # an offset reader skips some: the read is not complete and must not pass
    # for one (a full run would delete what it skipped). tests/faults covers
    # the whole run.
    sis.data["users"] = users(50)

    def shrink_once(server: FakeSis, entity: str, offset: int) -> None:
        if offset == 0:
            server.data["users"] = users(15)

    sis.after_page = shrink_once

    with pytest.raises(SourceError, match=r"changed while it was being read|ended before its total"):
        read_all(make_connector(sis, sleeps, concurrency=concurrency))
    assert len(sis.api_requests()) <= 1 + concurrency + 1


@pytest.mark.parametrize(
    ("entity", "key"),
    [("users", "students"), ("users", "teachers"), ("academicSessions", "terms"), ("orgs", "schools")],
)
def test_envelope_variants(sis: FakeSis, sleeps: list[float], entity: str, key: str) -> None:
    sis.data[entity] = [{"sourcedId": "a"}, {"sourcedId": "b"}]
    sis.envelope[entity] = key

    pages = read_all(make_connector(sis, sleeps), entity)

    assert ids(pages) == ["a", "b"]


def test_envelope_with_a_single_unknown_list_is_taken(sis: FakeSis, sleeps: list[float]) -> None:
    sis.script("users", Scripted(body=b'{"data": [{"sourcedId": "x"}], "statusInfo": {"code": "ok"}}'))

    assert ids(read_all(make_connector(sis, sleeps))) == ["x"]


def test_envelope_without_a_record_list_is_an_error(sis: FakeSis, sleeps: list[float]) -> None:
    sis.script("users", Scripted(body=b'{"a": [], "b": []}'))

    with pytest.raises(
        SourceError, match=r"/users\?limit=10&offset=0: response holds no users list \(found: a, b\)"
    ):
        read_all(make_connector(sis, sleeps))


# --------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------


def test_concurrent_fetch_yields_every_page_in_order_and_overlaps(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(100)
    sis.delay_s = 0.05

    pages = read_all(make_connector(sis, sleeps, concurrency=4))

    assert [p.number for p in pages] == list(range(10))
    assert ids(pages) == [u["sourcedId"] for u in sis.data["users"]]
    assert {p.total for p in pages} == {100}
    assert 2 <= sis.max_in_flight <= 4
    assert sorted(int(s.query["offset"]) for s in sis.api_requests()) == list(range(0, 100, 10))


def test_concurrent_fetch_keeps_few_pages_in_flight(sis: FakeSis, sleeps: list[float]) -> None:
    # Given a slow reader that holds the second page and stops
    sis.data["users"] = users(200)
    with make_connector(sis, sleeps, concurrency=3) as connector:
        stream = connector.pages("users")
        next(stream)
        next(stream)
        time.sleep(0.2)
        # Then the connector has not raced ahead of it
        assert len(sis.api_requests()) <= 1 + 3 + 1
        stream.close()
    assert len(sis.api_requests()) <= 1 + 3 + 1


def test_concurrent_fetch_surfaces_a_failing_page(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(100)
    sis.after_page = lambda server, entity, offset: (
        server.script(entity, Scripted(status=404)) if offset else None
    )

    with pytest.raises(SourceError, match="HTTP 404"):
        read_all(make_connector(sis, sleeps, concurrency=4))


# --------------------------------------------------------------------------
# OAuth 2
# --------------------------------------------------------------------------


def test_oauth2_token_fetched_once_and_reused(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(35)
    sis.data["orgs"] = [{"sourcedId": "o1"}]

    with make_connector(sis, sleeps, concurrency=4) as connector:
        list(connector.pages("orgs"))
        list(connector.pages("users"))

    assert len(sis.token_requests) == 1
    token_request = sis.token_requests[0]
    assert token_request["grant_type"] == "client_credentials"
    assert all(s.headers["Authorization"] == "Bearer token-1" for s in sis.api_requests())


def test_oauth2_token_renewed_once_after_a_401(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(60)

    def revoke_after_first(server: FakeSis, entity: str, offset: int) -> None:
        if offset == 0:
            server.revoke_tokens()

    sis.after_page = revoke_after_first

    pages = read_all(make_connector(sis, sleeps, concurrency=4))

    assert ids(pages) == [u["sourcedId"] for u in sis.data["users"]]
    # Several workers saw the 401 at once; only one of them fetched a token.
    assert len(sis.token_requests) == 2
    assert sleeps == []


def test_oauth2_a_token_that_is_never_accepted_fails(sis: FakeSis, sleeps: list[float]) -> None:
    sis.accept_tokens = False

    with pytest.raises(SourceError) as failure:
        read_all(make_connector(sis, sleeps))

    assert str(failure.value).startswith(f"GET {sis.base_url}/users?limit=10&offset=0 failed: HTTP 401")
    assert len(sis.token_requests) == 2
    assert len(sis.api_requests()) == 2


def test_oauth2_rejected_client_credentials_fail_without_leaking_them(
    sis: FakeSis, sleeps: list[float]
) -> None:
    connector = make_connector(sis, sleeps, client_secret="wrong-secret-value")

    with pytest.raises(SourceError) as failure:
        read_all(connector)

    message = str(failure.value)
    assert message.startswith(f"POST {sis.token_url} failed: HTTP 401")
    assert "invalid_client" in message
    assert "wrong-secret-value" not in message
    assert sis.api_requests() == []


def test_oauth2_token_is_renewed_before_it_expires(sis: FakeSis, sleeps: list[float]) -> None:
    sis.token_expires_in = "300"  # some servers send a string
    now = [1000.0]
    http = HttpClient(requests.Session(), sleep=sleeps.append)
    auth = OAuth2ClientCredentials(
        http,
        token_url=sis.token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        clock=lambda: now[0],
        refresh_margin_s=60,
    )

    first = auth.access_token()
    now[0] += 239
    assert auth.access_token() == first
    now[0] += 2
    assert auth.access_token() != first
    assert len(sis.token_requests) == 2


def test_oauth2_requires_a_token_url() -> None:
    with pytest.raises(SettingsError, match="tokenUrl"):
        OneRosterRestConnector(
            base_url="http://127.0.0.1:9", version="1.2", auth="oauth2", client_id="a", client_secret="b"
        )


# --------------------------------------------------------------------------
# OAuth 1.0a
# --------------------------------------------------------------------------


def test_oauth1_signatures_verified_by_the_server(sleeps: list[float]) -> None:
    server = FakeSis(auth="oauth1").start()
    try:
        stale = [{"sourcedId": "old", "dateLastModified": "2026-01-01T00:00:00Z"}]
        server.data["users"] = stale + users(25, modified="2026-11-05T10:00:00Z")
        pages = read_all(
            make_connector(server, sleeps, auth="oauth1", token_url=None, concurrency=4),
            since=datetime(2026, 11, 1, tzinfo=UTC),
        )
    finally:
        server.stop()

    assert len(ids(pages)) == 25
    assert server.oauth1_failures == []
    assert len(server.oauth1_nonces) == len(set(server.oauth1_nonces)) == 3
    assert server.token_requests == []
    # The filter was in the signed query.
    assert all("filter=dateLastModified%3E" in s.raw_query for s in server.api_requests())


def test_oauth1_wrong_secret_fails_at_once(sleeps: list[float]) -> None:
    server = FakeSis(auth="oauth1").start()
    try:
        connector = make_connector(server, sleeps, auth="oauth1", client_secret="not-the-secret")
        with pytest.raises(SourceError, match="HTTP 401") as failure:
            read_all(connector)
    finally:
        server.stop()

    assert server.oauth1_failures == ["signature"]
    assert "not-the-secret" not in str(failure.value)
    assert sleeps == []


def test_rfc5849_base_string_known_answer() -> None:
    # RFC 5849 section 3.4.1.1, with its form body "c2&a3=2+q".
    oauth = [
        ("oauth_consumer_key", "9djdj82h48djs9d2"),
        ("oauth_token", "kkk9d7dh3k39sjv7"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "137131201"),
        ("oauth_nonce", "7d8f3e4a"),
    ]
    body = [("c2", ""), ("a3", "2 q")]

    base = signature_base_string(
        "post", "http://EXAMPLE.com:80/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b", oauth + body
    )

    assert base == (
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D"
        "%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a"
        "%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
    )


def test_rfc5849_signature_known_answer() -> None:
    # RFC 5849 section 1.2: the photos request, HMAC-SHA1, oauth_signature="MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D".
    oauth = [
        ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
        ("oauth_token", "nnch734d00sl2jdk"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "137131202"),
        ("oauth_nonce", "chapoH"),
    ]
    base = signature_base_string(
        "GET", "http://photos.example.net/photos?file=vacation.jpg&size=original", oauth
    )
    key = signing_key("kd94hf93k423kf44", "pfkkdhi9sl3r4s00")

    assert hmac_signature(base, key, hashlib.sha1) == "MdpQcU8iPSUjWoN/UDMsK2sui9I="


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("AZaz09-._~", "AZaz09-._~"),
        ("a b+c", "a%20b%2Bc"),
        ("/?&=%'", "%2F%3F%26%3D%25%27"),
        ("é☃", "%C3%A9%E2%98%83"),
    ],
)
def test_percent_encoding_is_rfc3986(raw: str, encoded: str) -> None:
    assert percent_encode(raw) == encoded == _rfc3986(raw)


# --------------------------------------------------------------------------
# Retries, failures and messages
# --------------------------------------------------------------------------


def test_429_retry_after_seconds_is_honoured(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(5)
    sis.script("users", Scripted(status=429, headers={"Retry-After": "7"}))

    assert len(ids(read_all(make_connector(sis, sleeps)))) == 5
    assert sleeps == [7.0]


def test_retry_after_http_date_and_cap() -> None:
    def answer(value: str) -> requests.Response:
        response = requests.Response()
        response.status_code = 429
        response.headers["Retry-After"] = value
        return response

    in_30s = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= (retry_after_s(answer(in_30s)) or 0) <= 30
    assert retry_after_s(answer("Wed, 21 Oct 2015 07:28:00 GMT")) == 0
    assert retry_after_s(answer("86400")) == 120
    assert retry_after_s(answer("soon")) is None


def test_503_burst_then_success_backs_off_exponentially(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(5)
    sis.script("users", *[Scripted(status=503)] * 3)

    assert len(ids(read_all(make_connector(sis, sleeps)))) == 5
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps, start=1):
        ceiling = 2 ** (attempt - 1)
        assert ceiling / 2 <= delay <= ceiling


def test_giving_up_names_method_url_status_and_attempts(sis: FakeSis, sleeps: list[float]) -> None:
    sis.script("users", *[Scripted(status=503)] * 10)

    with pytest.raises(SourceError) as failure:
        read_all(make_connector(sis, sleeps, max_retries=2))

    assert (
        str(failure.value) == f"GET {sis.base_url}/users?limit=10&offset=0 failed: HTTP 503 after 3 attempts"
    )
    assert CLIENT_SECRET not in str(failure.value)
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [403, 404])
def test_client_errors_fail_at_once_naming_only_error_codes(
    sis: FakeSis, sleeps: list[float], status: int
) -> None:
    # An error body may echo a student's record: only its code-like fields are kept.
    body = {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": "user kid@school.org (Ana Diaz) is not visible to this client",
    }
    sis.script("users", Scripted(status=status, body=json.dumps(body).encode()))

    with pytest.raises(SourceError) as failure:
        read_all(make_connector(sis, sleeps))

    message = str(failure.value)
    assert message == (
        f"GET {sis.base_url}/users?limit=10&offset=0 failed: HTTP {status}: "
        "imsx_codeMajor=failure imsx_severity=error"
    )
    assert "kid@school.org" not in message and "Ana" not in message
    assert len(sis.api_requests()) == 1
    assert sleeps == []


def test_a_plain_text_error_body_is_not_quoted(sis: FakeSis, sleeps: list[float]) -> None:
    sis.script("users", Scripted(status=403, body=b"denied for kid@school.org"))

    with pytest.raises(SourceError) as failure:
        read_all(make_connector(sis, sleeps))

    assert str(failure.value) == f"GET {sis.base_url}/users?limit=10&offset=0 failed: HTTP 403"


def test_invalid_json_names_the_url_and_not_the_records(sis: FakeSis, sleeps: list[float]) -> None:
    sis.script("users", Scripted(body=b'{"users": [{"sourcedId": "student-42", "email": "kid@school.org"'))

    with pytest.raises(SourceError) as failure:
        read_all(make_connector(sis, sleeps))

    message = str(failure.value)
    assert message.startswith(f"GET {sis.base_url}/users?limit=10&offset=0: response is not valid JSON")
    assert "kid@school.org" not in message
    assert len(sis.api_requests()) == 1


def test_body_cut_short_is_retried(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(5)
    sis.script("users", Scripted(body=b'{"users": [{"sourcedId"', truncate=True))

    assert len(ids(read_all(make_connector(sis, sleeps)))) == 5
    assert len(sleeps) == 1


def test_body_always_cut_short_gives_up_naming_the_url(sis: FakeSis, sleeps: list[float]) -> None:
    sis.script("users", *[Scripted(body=b'{"users": [', truncate=True)] * 5)

    with pytest.raises(
        SourceError, match=r"/users\?limit=10&offset=0 failed: connection broken mid-response"
    ):
        read_all(make_connector(sis, sleeps, max_retries=1))


def test_timeouts_are_retried(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(5)
    sis.script("users", Scripted(status=200, body=b'{"users": []}', delay_s=0.5))

    pages = read_all(make_connector(sis, sleeps, timeout_s=0.1))

    assert len(ids(pages)) == 5
    assert len(sleeps) == 1
    assert len(sis.api_requests()) == 2


def test_timeouts_give_up_naming_the_url(sis: FakeSis, sleeps: list[float]) -> None:
    sis.script("users", *[Scripted(delay_s=0.3)] * 3)

    with pytest.raises(SourceError, match=r"users\?limit=10&offset=0 failed: timed out after 2 attempts"):
        read_all(make_connector(sis, sleeps, timeout_s=0.1, max_retries=1))


def test_connection_refused_gives_up(sleeps: list[float]) -> None:
    server = FakeSis(auth=None).start()
    base_url = server.base_url
    server.stop()  # nothing listens on that port any more

    connector = make_connector(server, sleeps, base_url=base_url, auth="oauth1", max_retries=2)
    with pytest.raises(SourceError, match="connection failed after 3 attempts"):
        read_all(connector)
    assert len(sleeps) == 2


# --------------------------------------------------------------------------
# Incremental filter
# --------------------------------------------------------------------------


def test_filter_is_sent_url_encoded_and_applied(sis: FakeSis, sleeps: list[float]) -> None:
    changed = {"sourcedId": "changed", "dateLastModified": "2026-11-02T00:00:00Z"}
    sis.data["users"] = [*users(3, modified="2026-10-01T00:00:00Z"), changed]
    chicago = timezone(timedelta(hours=-6))

    pages = read_all(make_connector(sis, sleeps), since=datetime(2026, 10, 31, 18, 0, 0, 999, tzinfo=chicago))

    assert ids(pages) == ["changed"]
    seen = sis.api_requests()[0]
    assert "filter=dateLastModified%3E%272026-11-01T00%3A00%3A00Z%27" in seen.raw_query
    assert seen.query["filter"] == "dateLastModified>'2026-11-01T00:00:00Z'"


def test_since_filter_reads_naive_datetimes_as_utc() -> None:
    assert since_filter(datetime(2026, 11, 1, 0, 0, 0)) == "dateLastModified>'2026-11-01T00:00:00Z'"


@pytest.mark.parametrize("status", [400, 422, 501])
def test_refused_filter_raises_filter_not_supported(sis: FakeSis, sleeps: list[float], status: int) -> None:
    sis.reject_filter_status = status

    with pytest.raises(FilterNotSupportedError) as failure:
        read_all(make_connector(sis, sleeps), since=datetime(2026, 11, 1, tzinfo=UTC))

    assert str(failure.value) == (
        f"GET {sis.base_url}/users?limit=10&offset=0&filter=dateLastModified%3E%272026-11-01T00%3A00%3A00Z%27"
        f" refused the dateLastModified filter: HTTP {status}"
    )
    assert sleeps == []


def test_a_400_without_filter_is_a_plain_source_error(sis: FakeSis, sleeps: list[float]) -> None:
    sis.script("users", Scripted(status=400))

    with pytest.raises(SourceError) as failure:
        read_all(make_connector(sis, sleeps))
    assert not isinstance(failure.value, FilterNotSupportedError)


# --------------------------------------------------------------------------
# Rate limit and small helpers
# --------------------------------------------------------------------------


def test_rate_limiter_spaces_requests_evenly() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(120, sleep=sleep, clock=lambda: now[0])
    for _ in range(4):
        limiter.acquire()

    assert waits == [0.5, 0.5, 0.5]


def test_rate_limiter_shares_one_budget_across_threads() -> None:
    waits: list[float] = []
    lock = threading.Lock()

    def record(seconds: float) -> None:
        with lock:
            waits.append(round(seconds, 3))

    limiter = RateLimiter(60, sleep=record, clock=lambda: 100.0)
    threads = [threading.Thread(target=limiter.acquire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Eight distinct one-second slots, whatever the thread order.
    assert sorted(waits) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_connector_applies_the_rate_limit(sis: FakeSis, sleeps: list[float]) -> None:
    sis.data["users"] = users(40)

    read_all(make_connector(sis, sleeps, max_requests_per_minute=60, concurrency=4))

    # 1 token request + 4 pages, one start per second (the injected sleep does
    # not pass time, so each later request waits one slot longer).
    assert len(sleeps) == 4
    assert sorted(round(delay) for delay in sleeps) == [1, 2, 3, 4]


def test_redact_url_drops_user_info_and_secret_query_values() -> None:
    assert (
        redact_url("https://bob:pw@sis.example.org/x?access_token=abc&limit=5")
        == "https://sis.example.org/x?access_token=REDACTED&limit=5"
    )
    assert (
        redact_url("https://sis.example.org/x?limit=5&offset=10")
        == "https://sis.example.org/x?limit=5&offset=10"
    )


def test_unknown_entity_is_rejected(sis: FakeSis, sleeps: list[float]) -> None:
    with pytest.raises(ValueError, match="unknown OneRoster entity"):
        read_all(make_connector(sis, sleeps), "parents")
