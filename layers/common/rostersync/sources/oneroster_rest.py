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
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from rostersync.errors import FilterNotSupportedError, SettingsError, SourceError
from rostersync.sources.base import Entity, Position, SourcePage
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
        backoff_base_s: float = 1.0,
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
            backoff_base_s=backoff_base_s,
        )
        self._auth = self._build_auth(auth, version, client_id, client_secret, token_url)

    def __enter__(self) -> OneRosterRestConnector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def pages(
        self, entity: Entity, since: datetime | None = None, start: Position | None = None
    ) -> Generator[SourcePage, None, None]:
        """Yield every page of `entity` in order; page 0 is yielded even when empty.

        With `start` (a page's `next_position()`), paging resumes exactly there:
        at its Link next URL, or at its offset and limit. Every page carries
        its own resume position.

        A caller that stops early (say, to checkpoint before its Lambda times out)
        should `close()` the generator: queued page requests are then cancelled
        and the ones already on the wire are awaited, so no thread outlives it.
        """
        if entity not in ENVELOPE_KEYS:
            raise ValueError(f"unknown OneRoster entity: {entity!r}")
        url = f"{self._base_url}/{entity}"
        query: dict[str, Any] = {"filter": since_filter(since)} if since is not None else {}
        if start is None:
            first = self._fetch_first(
                entity, url, _page_params(query, 0, self._page_size), filtered=bool(query)
            )
            cursor = _Cursor(number=0, offset=0, limit=self._page_size)
        else:
            if start.get("end"):
                return
            cursor = _Cursor(
                number=int(start["page"]),
                offset=int(start.get("offset", 0)),
                limit=int(start.get("limit", self._page_size)),
            )
            if start.get("next"):
                first = self._fetch(entity, self._checked_link(str(start["next"])), None)
            else:
                first = self._fetch(entity, url, _page_params(query, cursor.offset, cursor.limit))
            if not first.records:
                return  # nothing was left after the checkpoint
        number = cursor.number
        cursor.number += 1
        cursor.offset += len(first.records)
        if not first.records:
            yield SourcePage(entity=entity, number=0, records=[], total=first.total, resume=_end(1))
            return
        parallel = self._can_fetch_in_parallel(url, query, first, cursor)
        if parallel:
            # The server may size pages itself (a cap below `limit`, or a fixed size
            # that ignores it): plan the offsets with the size it actually uses.
            cursor.limit = len(first.records)
            resume = _offset_position(cursor, first.total)
        else:
            resume = _position(cursor, _plan_next(url, query, first, cursor))
        yield SourcePage(
            entity=entity, number=number, records=first.records, total=first.total, resume=resume
        )
        if parallel:
            yield from self._parallel(entity, url, query, first, cursor)
        else:
            yield from self._sequential(entity, url, query, first, cursor)

    # -- paging -----------------------------------------------------------

    def _can_fetch_in_parallel(
        self, url: str, query: Mapping[str, Any], first: _Page, cursor: _Cursor
    ) -> bool:
        return (
            self._concurrency > 1
            and first.total is not None
            and cursor.offset < first.total
            and (
                first.next_url is None
                or _is_offset_link(first.next_url, url, query, cursor.offset, len(first.records))
            )
        )

    def _sequential(
        self, entity: Entity, url: str, query: Mapping[str, Any], page: _Page, cursor: _Cursor
    ) -> Iterator[SourcePage]:
        """Pages after `page`, one request at a time; `cursor` points just past `page`."""
        planned = _plan_next(url, query, page, cursor)
        while planned is not None:
            next_url, params = planned
            previous, page = page, self._fetch(entity, next_url, params)
            _check_total(previous, page, cursor.offset, next_url)
            if not page.records:
                return
            _check_progress(previous, page, next_url)
            number = cursor.number
            cursor.number += 1
            cursor.offset += len(page.records)
            planned = _plan_next(url, query, page, cursor)
            yield SourcePage(
                entity=entity,
                number=number,
                records=page.records,
                total=page.total,
                resume=_position(cursor, planned),
            )

    def _parallel(
        self, entity: Entity, url: str, query: Mapping[str, Any], first: _Page, cursor: _Cursor
    ) -> Iterator[SourcePage]:
        """Fetch offset pages with at most `concurrency` in flight; yield them in order."""
        total = first.total or 0
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
                _check_total(previous, page, offset, url)
                if not page.records:
                    return  # the server stopped telling its total; an empty page ends the list
                _check_progress(previous, page, url)
                number = cursor.number
                cursor.number += 1
                cursor.offset = offset + len(page.records)
                total = page.total if page.total is not None else total
                page_size_changed = len(page.records) != cursor.limit and cursor.offset < total
                off_plan = page_size_changed or (
                    page.next_url is not None
                    and not _is_offset_link(page.next_url, url, query, cursor.offset, cursor.limit)
                )
                if off_plan:
                    # The server stopped paging the way we planned (its page size changed,
                    # or its Link headers lead elsewhere): drop what is in flight and go
                    # on one page at a time from exactly where the records end.
                    resume = _position(cursor, _plan_next(url, query, page, cursor))
                else:
                    resume = _offset_position(cursor, total)
                yield SourcePage(
                    entity=entity, number=number, records=page.records, total=page.total, resume=resume
                )
                if off_plan:
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
        return self._checked_link(urljoin(response.url, link), shown)

    def _checked_link(self, absolute: str, shown: str | None = None) -> str:
        # A bearer token must never travel to a host the district did not configure
        # (a checkpointed link is checked again: the settings may have changed).
        if _origin(absolute) != _origin(self._base_url):
            where = f"GET {shown}: next link" if shown else "the checkpointed next link"
            raise SourceError(f"{where} leads to another host ({_origin(absolute)}); not followed")
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


def _end(page: int) -> Position:
    return {"page": page, "end": True}


def _position(cursor: _Cursor, planned: tuple[str, dict[str, Any] | None] | None) -> Position:
    """The resume position of the page `cursor` points at, given how it would be requested."""
    if planned is None:
        return _end(cursor.number)
    next_url, params = planned
    if params is None:
        # Offset and limit too: a Link-paged page without a next link falls back on them.
        return {"page": cursor.number, "next": next_url, "offset": cursor.offset, "limit": cursor.limit}
    return {"page": cursor.number, "offset": params["offset"], "limit": params["limit"]}


def _offset_position(cursor: _Cursor, total: int | None) -> Position:
    if total is not None and cursor.offset >= total:
        return _end(cursor.number)
    return {"page": cursor.number, "offset": cursor.offset, "limit": cursor.limit}


def _is_offset_link(link: str, url: str, query: Mapping[str, Any], offset: int, limit: int) -> bool:
    """True when a Link next URL asks for exactly the offset page we would compute.

    Servers such as the demo SIS send both `X-Total-Count` and offset-shaped
    Links: those pages may then be fetched in parallel, which a Link of any
    other shape (a `page=` or an opaque cursor) forbids.
    """
    parts, base = urlsplit(link), urlsplit(url)
    if (parts.scheme, parts.netloc, parts.path.rstrip("/")) != (
        base.scheme,
        base.netloc,
        base.path.rstrip("/"),
    ):
        return False
    params = parse_qs(parts.query, keep_blank_values=True)
    expected = {key: [str(value)] for key, value in _page_params(query, offset, limit).items()}
    return params == expected


def _check_progress(previous: _Page, page: _Page, url: str) -> None:
    # A server that ignores offset (or links a page to itself) would otherwise
    # be read forever.
    before, now = _first_sourced_id(previous), _first_sourced_id(page)
    if before is not None and before == now:
        raise SourceError(
            f"GET {redact_url(url)}: the source returned the same page twice (offset or next link ignored)"
        )


def _check_total(previous: _Page, page: _Page, offset: int, url: str) -> None:
    """A list read by offset must not shrink under the reader, nor end before its total.

    When records before the reader's offset go, every later record moves up and
    as many are skipped; on a full run they would then be deleted as absent.
    A read that cannot be trusted to be complete fails (SPEC 5), and the next
    run reads the list again.
    """
    if previous.total is not None and page.total is not None and page.total < previous.total:
        raise SourceError(
            f"GET {redact_url(url)}: the source's list changed while it was being read "
            f"(X-Total-Count went from {previous.total} to {page.total}), so records may have been skipped"
        )
    if not page.records and page.total is not None and offset < page.total:
        raise SourceError(
            f"GET {redact_url(url)}: an empty page at offset {offset} of {page.total} records "
            "(the source's list ended before its total)"
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
