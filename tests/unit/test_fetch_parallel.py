"""Bounded parallel fetch (SPEC 8): `maxConcurrency` pages in flight where the
source tells its total, and a server's Retry-After holding every thread off.

Against the demo SIS over real HTTP; the connectors' sleep is recorded (and
really slept) to see who waited how long.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest

from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DemoDistrict, generate_district
from rostersync.local.demo_sis import DemoSis
from rostersync.pipeline.queues import RunMessage
from rostersync.settings.model import parse_settings
from rostersync.sources.factory import build_connector
from rostersync.sources.http import RateLimiter
from rostersync.sources.oneroster_rest import OneRosterRestConnector

TODAY = date(2026, 9, 1)


@pytest.fixture(scope="module")
def district() -> DemoDistrict:
    return generate_district(today=TODAY, schools=2, students_per_school=20)


def _rest(
    server: DemoSis, *, concurrency: int = 8, page_size: int = 2, sleep: Callable[[float], None] = time.sleep
):
    def make() -> OneRosterRestConnector:
        return OneRosterRestConnector(
            base_url=server.url + "/ims/oneroster/v1p1",
            version="1.1",
            auth="oauth2",
            token_url=server.url + "/oauth/token",
            client_id=DEMO_CLIENT_ID,
            client_secret=DEMO_CLIENT_SECRET,
            page_size=page_size,
            concurrency=concurrency,
            sleep=sleep,
        )

    return make


class _closing:
    def __init__(self, connector: Any) -> None:
        self.connector = connector

    def __enter__(self) -> Any:
        return self.connector

    def __exit__(self, *exc_info: object) -> None:
        self.connector.close()


def test_parallel_fetch_keeps_max_concurrency_requests_in_flight(district: DemoDistrict) -> None:
    # Given a slow SIS that tells its total, and maxConcurrency 8
    with DemoSis(district, latency_s=0.1) as server:
        make = _rest(server, concurrency=8, page_size=2)
        with _closing(make()) as connector:
            started = datetime.now(UTC)
            pages = list(connector.pages("users"))
            seconds = (datetime.now(UTC) - started).total_seconds()
    # Then the pages after the first come 8 at a time, not one by one: 32 pages
    # take 1 + 4 rounds of 0.1 s (and the token's 0.1 s), not 3.2 s
    assert len(pages) >= 30
    assert seconds < 0.1 * len(pages) / 3, (len(pages), seconds)


# ---- maxConcurrency ---------------------------------------------------------------------


def _settings(**source: Any) -> dict[str, Any]:
    base = {
        "type": "oneroster",
        "baseUrl": "https://sis.example.org/ims/oneroster/v1p1",
        "version": "1.1",
        "auth": "oauth2",
        "tokenUrl": "https://sis.example.org/oauth/token",
        "credentialsParameter": "/rostersync/districts/lincoln/credentials",
    }
    return {"source": {**base, **source}}


def test_max_concurrency_defaults_to_8_and_is_bounded() -> None:
    from rostersync.errors import SettingsError

    doc = parse_settings(json.dumps(_settings())).model_dump(by_alias=True, mode="json")
    assert doc["source"]["maxConcurrency"] == 8
    assert parse_settings(json.dumps(_settings(maxConcurrency=32))).source.max_concurrency == 32
    for bad in (0, 33):
        with pytest.raises(SettingsError, match="maxConcurrency"):
            parse_settings(json.dumps(_settings(maxConcurrency=bad)))


def test_max_concurrency_reaches_the_connector() -> None:
    doc = parse_settings(json.dumps(_settings(maxConcurrency=3))).model_dump(by_alias=True, mode="json")
    credentials = {"clientId": "id", "clientSecret": "secret"}
    message = RunMessage(districtId="lincoln")
    connector = build_connector(doc["source"], credentials, district_id="lincoln", message=message)
    try:
        assert connector._concurrency == 3  # type: ignore[attr-defined]
    finally:
        connector.close()


def test_sequential_when_max_concurrency_is_1(district: DemoDistrict) -> None:
    with DemoSis(district, latency_s=0.05) as server, _closing(_rest(server, concurrency=1)()) as connector:
        started = time.monotonic()
        pages = list(connector.pages("users"))
        seconds = time.monotonic() - started
    assert seconds >= 0.05 * len(pages)


def test_retry_after_holds_every_thread_off(district: DemoSis) -> None:
    # Given a connector whose threads share one HTTP client, and a SIS that
    # answers a users request 429 with Retry-After: 1
    slept: list[tuple[str, float]] = []
    held = threading.Event()

    def sleep(seconds: float) -> None:
        slept.append((threading.current_thread().name, seconds))
        if seconds == 1.0:
            held.set()
        time.sleep(seconds)

    with DemoSis(district) as server, _closing(_rest(server, sleep=sleep)()) as connector:
        server.fail_next(429, count=1, retry_after=1, path_contains="users")
        users: list[Any] = []
        reader = threading.Thread(target=lambda: users.extend(connector.pages("users")), name="answered")
        reader.start()
        assert held.wait(10)
        # When another thread asks for a page during that second
        started = time.monotonic()
        orgs = list(connector.pages("orgs"))
        waited = time.monotonic() - started
        reader.join()
    # Then it waited for the second to pass, and both reads are complete
    assert users and orgs
    assert waited >= 0.8
    assert [s for name, s in slept if name == "MainThread"] and all(
        0 < s <= 1.0 for name, s in slept if name == "MainThread"
    )
    assert [s for name, s in slept if name == "answered"] == [1.0]


def test_hold_off_delays_other_threads_until_the_answered_thread_retries() -> None:
    now = [100.0]
    waits: dict[str, list[float]] = {}

    def sleep(seconds: float) -> None:
        waits.setdefault(threading.current_thread().name, []).append(seconds)

    limiter = RateLimiter(None, sleep=sleep, clock=lambda: now[0])

    def acquire_in(name: str) -> None:
        thread = threading.Thread(target=limiter.acquire, name=name)
        thread.start()
        thread.join()

    # Given a thread answered Retry-After: 5 (it sleeps that itself, in HttpClient)
    limiter.hold_off(5)
    # Then another thread starting a request waits for the rest of it
    now[0] += 2
    acquire_in("other")
    # and once the answered thread retries, nobody waits any more
    limiter.acquire()
    acquire_in("later")
    assert waits == {"other": [3.0]}
