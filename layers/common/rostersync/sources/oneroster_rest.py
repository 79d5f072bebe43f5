"""OneRoster REST connector, versions 1.1 and 1.2.

Reads `/orgs`, `/academicSessions`, `/classes`, `/users` and `/enrollments`
under the version root (e.g. `https://sis/ims/oneroster/v1p1` or
`https://sis/ims/oneroster/rostering/v1p2`) and yields the raw records page by
page, envelope removed.

Paging, in order of precedence:
1. `Link: <...>; rel="next"` when the server sends one: followed as given.
2. `limit`/`offset` with `X-Total-Count`: when the first page tells the total
   (and has no Link), the remaining pages are fetched by a bounded thread pool
   and yielded in order.
3. `limit`/`offset` without a total: until an empty or short page.

A server may cap the page size below `limit` (or ignore it): the connector
then advances by what it actually received and asks for the server's size from
then on, so no record is skipped or read twice. A total that changes while paging is re-read on every page;
an empty page always ends the entity, so neither can loop forever.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from rostersync.errors import FilterNotSupportedError, SettingsError, SourceError
from rostersync.sources.base import Entity, SourcePage
from rostersync.sources.http import HttpClient, HttpStatusError, RateLimiter, Sleep, redact_url
from rostersync.sources.oauth import ONEROSTER_1P2_SCOPE, OAuth1Signer, OAuth2ClientCredentials

# Canonical envelope key first, then the variants servers are known to send.
ENVELOPE_KEYS: dict[str, tuple[str, ...]] = {
    "orgs": ("orgs", "schools"),
    "academicSessions": ("academicSessions", "terms", "gradingPeriods"),
    "classes": ("classes",),
    "users": ("users", "students", "teachers"),
    "enrollments": ("enrollments",),
}

# How servers say "I do not support this filter" for the first filtered page.
_FILTER_REFUSED_STATUSES = frozenset({400, 422, 501})


@dataclass(frozen=True)
class _Page:
    records: list[dict]
    total: int | None
    next_url: str | None


@dataclass
class _Cursor:
    """Where paging of one entity stands: the next page's number and offset."""

    number: int
    offset: int
    limit: int


class OneRosterRestConnector:
    """A `Connector` over a OneRoster 1.1 or 1.2 REST API."""

    def __init__(
        self,
        *,
        base_url: str,
        version: Literal["1.1", "1.2"],
        auth: Literal["oauth2", "oauth1"],
        client_id: str,
        client_secret: str,
        token_url: str | None = None,
        page_size: int = 100,
        max_requests_per_minute: int | None = None,
        concurrency: int = 4,
        timeout_s: float = 30,
        max_retries: int = 5,
        session: requests.Session | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        if version not in ("1.1", "1.2"):
            raise ValueError(f"unsupported OneRoster version: {version!r}")
        if page_size < 1 or concurrency < 1:
            raise ValueError("page_size and concurrency must be at least 1")
        self._base_url = base_url.rstrip("/")
        self._page_size = page_size
        self._concurrency = concurrency
        self._owns_session = session is None
        self._session = session or _new_session(concurrency)
        self._http = HttpClient(
            self._session,
            timeout_s=timeout_s,
            max_retries=max_retries,
            limiter=RateLimiter(max_requests_per_minute, sleep=sleep),
            sleep=sleep,
        )
        self._auth = self._build_auth(auth, version, client_id, client_secret, token_url)

    def __enter__(self) -> OneRosterRestConnector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def pages(self, entity: Entity, since: datetime | None = None) -> Generator[SourcePage, None, None]:
        """Yield every page of `entity` in order; page 0 is yielded even when empty.

        A caller that stops early (say, to checkpoint before its Lambda times out)
        should `close()` the generator: queued page requests are then cancelled
        and the ones already on the wire are awaited, so no thread outlives it.
        """
        if entity not in ENVELOPE_KEYS:
            raise ValueError(f"unknown OneRoster entity: {entity!r}")
        url = f"{self._base_url}/{entity}"
        query: dict[str, Any] = {"filter": since_filter(since)} if since is not None else {}
        first = self._fetch_first(entity, url, _page_params(query, 0, self._page_size), filtered=bool(query))
        yield SourcePage(entity=entity, number=0, records=first.records, total=first.total)
        if not first.records:
            return
        cursor = _Cursor(number=1, offset=len(first.records), limit=self._page_size)
        if self._can_fetch_in_parallel(first, cursor):
            yield from self._parallel(entity, url, query, first, cursor)
        else:
            yield from self._sequential(entity, url, query, first, cursor)

    # -- paging -----------------------------------------------------------

    def _can_fetch_in_parallel(self, first: _Page, cursor: _Cursor) -> bool:
        return (
            self._concurrency > 1
            and first.next_url is None
            and first.total is not None
            and cursor.offset < first.total
        )

    def _sequential(
        self, entity: Entity, url: str, query: Mapping[str, Any], page: _Page, cursor: _Cursor
    ) -> Iterator[SourcePage]:
        while True:
            planned = _plan_next(url, query, page, cursor)
            if planned is None:
                return
            next_url, params = planned
            previous, page = page, self._fetch(entity, next_url, params)
            if not page.records:
                return
            _check_progress(previous, page, next_url)
            yield SourcePage(entity=entity, number=cursor.number, records=page.records, total=page.total)
            cursor.number += 1
            cursor.offset += len(page.records)

    def _parallel(
        self, entity: Entity, url: str, query: Mapping[str, Any], first: _Page, cursor: _Cursor
    ) -> Iterator[SourcePage]:
        """Fetch offset pages with at most `concurrency` in flight; yield them in order."""
        total = first.total or 0
        # The server may size pages itself (a cap below `limit`, or a fixed size that
        # ignores it): plan the offsets with the size it actually uses.
        cursor.limit = len(first.records)
        pending: deque[tuple[int, Future[_Page]]] = deque()
        next_offset = cursor.offset
        pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix=f"oneroster-{entity}")
        try:
            previous = first
            while True:
                # Top up to `concurrency` requests ahead of the reader: memory stays
                # bounded however slowly the caller stages pages.
                while len(pending) < self._concurrency and next_offset < total:
                    params = _page_params(query, next_offset, cursor.limit)
                    pending.append((next_offset, pool.submit(self._fetch, entity, url, params)))
                    next_offset += cursor.limit
                if not pending:
                    return
                offset, future = pending.popleft()
                page = future.result()
                if not page.records:
                    return  # the total shrank while we read
                _check_progress(previous, page, url)
                yield SourcePage(entity=entity, number=cursor.number, records=page.records, total=page.total)
                cursor.number += 1
                cursor.offset = offset + len(page.records)
                total = page.total if page.total is not None else total
                if page.next_url or (len(page.records) != cursor.limit and cursor.offset < total):
                    # The server stopped paging the way we planned (its page size changed,
                    # or it started sending Link headers): drop what is in flight and go
                    # on one page at a time from exactly where the records end.
                    pool.shutdown(wait=False, cancel_futures=True)
                    yield from self._sequential(entity, url, query, page, cursor)
                    return
                previous = page
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- one page -----------------------------------------------------------

    def _fetch_first(self, entity: Entity, url: str, params: dict[str, Any], *, filtered: bool) -> _Page:
        try:
            return self._fetch(entity, url, params)
        except HttpStatusError as exc:
            if filtered and exc.status in _FILTER_REFUSED_STATUSES:
                raise FilterNotSupportedError(
                    f"GET {exc.url} refused the dateLastModified filter: HTTP {exc.status}"
                ) from exc
            raise

    def _fetch(self, entity: Entity, url: str, params: Mapping[str, Any] | None) -> _Page:
        response = self._http.request(
            "GET", url, params=params, headers={"Accept": "application/json"}, auth=self._auth
        )
        shown = redact_url(response.url)
        if response.status_code == 204:  # some servers answer an empty page with No Content
            records: list[dict] = []
        else:
            records = unwrap_records(_decode_json(response, shown), entity, shown)
        return _Page(records=records, total=_total_count(response), next_url=self._next_link(response, shown))

    def _next_link(self, response: requests.Response, shown: str) -> str | None:
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        absolute = urljoin(response.url, link)
        # A bearer token must never travel to a host the district did not configure.
        if _origin(absolute) != _origin(self._base_url):
            raise SourceError(
                f"GET {shown}: next link leads to another host ({_origin(absolute)}); not followed"
            )
        return absolute

    # -- set-up -------------------------------------------------------------

    def _build_auth(
        self, auth: str, version: str, client_id: str, client_secret: str, token_url: str | None
    ) -> requests.auth.AuthBase:
        if auth == "oauth1":
            return OAuth1Signer(client_id, client_secret)
        if auth == "oauth2":
            if not token_url:
                raise SettingsError("source.tokenUrl is required when source.auth is oauth2")
            scope = ONEROSTER_1P2_SCOPE if version == "1.2" else None
            return OAuth2ClientCredentials(
                self._http, token_url=token_url, client_id=client_id, client_secret=client_secret, scope=scope
            )
        raise ValueError(f"unsupported auth: {auth!r}")


def since_filter(since: datetime) -> str:
    """The OneRoster filter for records changed after `since` (naive means UTC).

    Sub-seconds are dropped, which moves the bound earlier: a record is never
    missed, at worst one is read twice.
    """
    moment = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    return f"dateLastModified>'{moment:%Y-%m-%dT%H:%M:%SZ}'"


def unwrap_records(body: object, entity: str, shown_url: str) -> list[dict]:
    """The record list out of a OneRoster envelope such as `{"users": [...]}`."""
    records = _find_record_list(body, entity)
    if records is None:
        keys = ", ".join(sorted(body)[:10]) if isinstance(body, dict) else type(body).__name__
        raise SourceError(f"GET {shown_url}: response holds no {entity} list (found: {keys or 'nothing'})")
    if not all(isinstance(record, dict) for record in records):
        raise SourceError(f"GET {shown_url}: the {entity} list holds items that are not objects")
    return records


def _find_record_list(body: object, entity: str) -> list | None:
    if isinstance(body, list):
        return body
    if not isinstance(body, dict):
        return None
    for key in ENVELOPE_KEYS[entity]:
        if isinstance(body.get(key), list):
            return body[key]
    lists = [value for value in body.values() if isinstance(value, list)]
    return lists[0] if len(lists) == 1 else None


def _plan_next(
    url: str, query: Mapping[str, Any], page: _Page, cursor: _Cursor
) -> tuple[str, dict[str, Any] | None] | None:
    """The request for the page after `page`, or None when `page` was the last."""
    if page.next_url:
        return page.next_url, None
    returned = len(page.records)
    short = returned < cursor.limit
    if page.total is not None:
        if cursor.offset >= page.total:
            return None
    elif short and cursor.number > 1:
        return None  # no total, no Link: a short page is the last one
    if returned != cursor.limit:
        # More records remain (or, after a short first page without a total, may
        # remain: one extra request tells), yet the server sent another number than
        # asked: it sizes pages itself. Ask for its size so offsets stay aligned.
        cursor.limit = returned
    return url, _page_params(query, cursor.offset, cursor.limit)


def _check_progress(previous: _Page, page: _Page, url: str) -> None:
    # A server that ignores offset (or links a page to itself) would otherwise
    # be read forever.
    before, now = _first_sourced_id(previous), _first_sourced_id(page)
    if before is not None and before == now:
        raise SourceError(
            f"GET {redact_url(url)}: the source returned the same page twice (offset or next link ignored)"
        )


def _first_sourced_id(page: _Page) -> object:
    return page.records[0].get("sourcedId") if page.records else None


def _page_params(query: Mapping[str, Any], offset: int, limit: int) -> dict[str, Any]:
    return {"limit": limit, "offset": offset, **query}


def _decode_json(response: requests.Response, shown_url: str) -> object:
    try:
        return json.loads(response.content)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        # The body itself is not quoted: it holds student records.
        detail = f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise SourceError(
            f"GET {shown_url}: response is not valid JSON ({detail}; {len(response.content)} bytes)"
        ) from exc


def _total_count(response: requests.Response) -> int | None:
    try:
        total = int(response.headers.get("X-Total-Count", "").strip())
    except ValueError:
        return None
    return total if total >= 0 else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.rpartition('@')[2].lower()}"


def _new_session(concurrency: int) -> requests.Session:
    session = requests.Session()
    # One pooled connection per worker, so parallel pages reuse connections
    # instead of opening and discarding them.
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(10, concurrency))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "rostersync"
    return session
