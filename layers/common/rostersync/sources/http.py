"""The HTTP layer that every REST connector shares.

One `HttpClient` wraps a `requests.Session` with what a SIS on the public
internet needs: a timeout on every request, retries with exponential backoff
and jitter on 429, 5xx, timeouts and dropped connections, `Retry-After`
honoured, and a rate limit shared by all threads of a fetch. When it gives up
it raises `SourceError` whose message names the method, the URL (never a
credential) and the last failure, because that message ends up in the run
record that a district's IT administrator reads.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from aws_lambda_powertools import Logger

from rostersync.errors import SourceError

logger = Logger(service="rostersync")

Sleep = Callable[[float], None]
Clock = Callable[[], float]

# Retry-After beyond this is not honoured in full: a fetch must finish within
# its Lambda invocation, and a server asking for more is better retried early.
RETRY_AFTER_CAP_S = 120.0
BODY_EXCERPT_CHARS = 200

# 501 and 505 say "never", not "later": retrying them only delays the failure
# (and 501 is how some servers refuse the dateLastModified filter).
_NOT_TRANSIENT_5XX = frozenset({501, 505})
# Timeouts, refused or reset connections, and bodies cut short.
_TRANSPORT_ERRORS = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
_SENSITIVE_QUERY_KEYS = frozenset(
    {"access_token", "client_secret", "password", "token", "oauth_signature", "api_key", "apikey"}
)


class HttpStatusError(SourceError):
    """The source answered with a status that retrying will not change."""

    def __init__(self, method: str, url: str, status: int, excerpt: str) -> None:
        detail = f": {excerpt}" if excerpt else ""
        super().__init__(f"{method} {url} failed: HTTP {status}{detail}")
        self.method = method
        self.url = url
        self.status = status


@runtime_checkable
class RefreshableAuth(Protocol):
    """An auth that can renew its credential after the server answers 401."""

    def refresh(self, rejected: requests.PreparedRequest) -> bool:
        """Drop the credential `rejected` carried; True when a retry may succeed."""
        ...


class RateLimiter:
    """Spaces requests evenly so that at most `max_per_minute` start per minute.

    Thread-safe: each caller reserves the next free slot under the lock and
    sleeps outside it, so concurrent page fetches share one budget. Even
    spacing (no burst allowance) is deliberate: SIS rate limits are usually
    enforced over short windows.
    """

    def __init__(
        self, max_per_minute: int | None, *, sleep: Sleep = time.sleep, clock: Clock = time.monotonic
    ) -> None:
        if max_per_minute is not None and max_per_minute <= 0:
            raise ValueError("max_per_minute must be positive")
        self._interval = 60.0 / max_per_minute if max_per_minute else 0.0
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._next_slot = 0.0
        # A server's Retry-After holds every thread off, not only the one it answered.
        self._paused_until = 0.0
        self._pauser: threading.Thread | None = None

    def hold_off(self, seconds: float) -> None:
        """No request may start for `seconds` (the server said Retry-After).

        The thread that was answered sleeps the time itself (its retry delay);
        every other thread waits in `acquire` until it has passed, or until
        that thread's retry starts (the server's wait is then over).
        """
        with self._lock:
            until = self._clock() + seconds
            if until > self._paused_until:
                self._paused_until, self._pauser = until, threading.current_thread()

    def acquire(self) -> None:
        if not self._interval and not self._paused_until:
            return
        with self._lock:
            now = self._clock()
            if self._pauser is threading.current_thread():
                self._paused_until, self._pauser = 0.0, None  # its retry: the wait is over
            slot = max(now, self._next_slot, self._paused_until)
            if self._interval:
                self._next_slot = slot + self._interval
        if slot > now:
            self._sleep(slot - now)


class HttpClient:
    """Sends requests with timeouts, retries and the shared rate limit.

    `max_retries` counts retries after the first attempt, so a request is
    tried at most `max_retries + 1` times.
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        timeout_s: float = 30.0,
        max_retries: int = 5,
        limiter: RateLimiter | None = None,
        sleep: Sleep = time.sleep,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.session = session
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._limiter = limiter or RateLimiter(None)
        self._sleep = sleep
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._rng = rng or random.Random()

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
        """Return the first 2xx response, or raise `SourceError`."""
        display = display_url(method, url, params)
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            server_asked = False  # a Retry-After to honour on every thread
            self._limiter.acquire()
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=headers,
                    auth=auth,
                    timeout=self._timeout_s,
                )
            except _TRANSPORT_ERRORS as exc:
                failure = _describe_transport_error(exc)
                delay = self._backoff(attempt)
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return response
                if status == 401 and not refreshed and _can_refresh(auth, response):
                    # A token can expire or be revoked between two pages: renew it
                    # once, without spending a retry or waiting.
                    refreshed = True
                    attempt -= 1
                    continue
                if not is_retryable_status(status):
                    raise HttpStatusError(method, display, status, body_excerpt(response))
                failure = f"HTTP {status}"
                asked = retry_after_s(response)
                server_asked = asked is not None
                delay = asked if asked is not None else self._backoff(attempt)
            if attempt > self._max_retries:
                raise SourceError(f"{method} {display} failed: {failure} after {attempt} attempts")
            logger.warning(
                "retrying source request",
                extra={
                    "method": method,
                    "url": display,
                    "failure": failure,
                    "attempt": attempt,
                    "delay_s": delay,
                },
            )
            if server_asked:
                self._limiter.hold_off(delay)  # parallel requests wait as well, until this retry
            self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": half the exponential delay is kept so retries never
        # collapse to zero, the other half is random so parallel workers spread.
        ceiling = min(self._backoff_cap_s, self._backoff_base_s * 2 ** (attempt - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or (500 <= status < 600 and status not in _NOT_TRANSIENT_5XX)


def retry_after_s(response: requests.Response, *, cap_s: float = RETRY_AFTER_CAP_S) -> float | None:
    """Seconds the server asked us to wait (delta-seconds or HTTP-date), capped."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # HTTP-dates are GMT by definition
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap_s)


_ERROR_CODE_KEYS = ("imsx_codeMajor", "imsx_severity", "imsx_CodeMinor", "codeMajor", "codeMinor", "error")
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def body_excerpt(response: requests.Response, limit: int = BODY_EXCERPT_CHARS) -> str:
    """The machine-readable error codes of an error body, and nothing else.

    An error body may echo the record it refused, names and emails included;
    only short code-like values (OneRoster's imsx codes, OAuth's `error`) are
    kept, so the message can go into logs and the run record.
    """
    try:
        body = response.json()
    except ValueError:
        return ""
    codes: list[str] = []

    def collect(node: Any, depth: int = 0) -> None:
        if depth > 4 or len(codes) >= 4:
            return
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _ERROR_CODE_KEYS and isinstance(value, str) and _ERROR_CODE.match(value):
                    codes.append(f"{key}={value}")
                elif (
                    isinstance(value, dict | list) or key == "imsx_CodeMinor" or key == "imsx_codeMinorField"
                ):
                    collect(value, depth + 1)
        elif isinstance(node, list):
            for item in node[:4]:
                collect(item, depth + 1)

    collect(body)
    return " ".join(codes)[:limit]


def display_url(method: str, url: str, params: Mapping[str, Any] | None = None) -> str:
    """The URL as sent, without user-info or secret-looking query values."""
    prepared = requests.Request(method, url, params=params).prepare().url or url
    return redact_url(prepared)


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() in _SENSITIVE_QUERY_KEYS for key, _ in pairs):
        query = urlencode(
            [(key, "REDACTED" if key.lower() in _SENSITIVE_QUERY_KEYS else value) for key, value in pairs]
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _can_refresh(auth: object, response: requests.Response) -> bool:
    return isinstance(auth, RefreshableAuth) and auth.refresh(response.request)


def _describe_transport_error(exc: requests.RequestException) -> str:
    # The exception text repeats host and path and can be long; the run record
    # only needs the kind of failure next to the URL.
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken mid-response"
    return "connection failed"
