"""Every connector resumes an entity where a checkpoint left it (SPEC 8).

For each connector and paging style, the entity is read once whole; then,
for every page, read up to that page, its `next_position()` taken through
JSON (as a checkpoint travels), and a *new* connector resumes from it. The
pages read before and after must be exactly the whole read: same numbers, same
records, nothing skipped, nothing twice. Real HTTP servers (the demo SIS, the
PowerSchool demo server) and real CSV bundles; no mocks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from rostersync.local.demo_csv import write_bundle
from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DemoDistrict, generate_district
from rostersync.local.demo_sis import DemoSis
from rostersync.local.powerschool_sis import PowerSchoolSis
from rostersync.pipeline.fetch import FetchBudget
from rostersync.sources.base import ENTITIES, Connector, SourcePage, resume_by_skipping
from rostersync.sources.oneroster_csv import OneRosterCsvBundle
from rostersync.sources.oneroster_rest import OneRosterRestConnector
from rostersync.sources.powerschool import PowerSchoolConnector

TODAY = date(2026, 9, 1)


@pytest.fixture(scope="module")
def district() -> DemoDistrict:
    return generate_district(today=TODAY, schools=2, students_per_school=20)


def _shape(pages: list[SourcePage]) -> list[tuple[int, list[dict[str, Any]]]]:
    return [(page.number, page.records) for page in pages]


def assert_resumes_everywhere(
    make: Callable[[], Connector],
    entity: str,
    since: datetime | None = None,
    *,
    knows_end: bool = True,
    sample: bool = False,
) -> int:
    """Resume after every page of `entity`; returns how many pages it has.

    `knows_end`: the connector can tell its last page (not a REST server
    without a total, where one more request tells). `sample`: only after the
    first, a middle and the last page (a source that re-reads to resume).
    """
    with _closing(make()) as connector:
        whole = list(connector.pages(entity, since))  # type: ignore[arg-type]
    assert len(whole) >= 3, "too few pages to test resuming"
    if knows_end:
        assert whole[-1].next_position().get("end") is True
    cuts = sorted({1, len(whole) // 2, len(whole)}) if sample else range(1, len(whole) + 1)
    for cut in cuts:
        with _closing(make()) as connector:
            stream = connector.pages(entity, since)  # type: ignore[arg-type]
            head = [next(stream) for _ in range(cut)]
            stream.close()  # type: ignore[attr-defined]
        position = json.loads(json.dumps(head[-1].next_position()))
        with _closing(make()) as connector:
            rest = list(connector.pages(entity, since, position))  # type: ignore[arg-type]
        assert _shape(head + rest) == _shape(whole), f"resuming after page {cut - 1} at {position}"
    return len(whole)


class _closing:
    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    def __enter__(self) -> Connector:
        return self.connector

    def __exit__(self, *exc_info: object) -> None:
        self.connector.close()


# ---- OneRoster REST ----------------------------------------------------------------


def _rest(
    server: DemoSis, version: str = "1.1", concurrency: int = 8, page_size: int = 7
) -> Callable[[], Connector]:
    root = "/ims/oneroster/v1p1" if version == "1.1" else "/ims/oneroster/rostering/v1p2"

    def make() -> Connector:
        return OneRosterRestConnector(
            base_url=server.url + root,
            version=version,  # type: ignore[arg-type]
            auth="oauth2",
            token_url=server.url + "/oauth/token",
            client_id=DEMO_CLIENT_ID,
            client_secret=DEMO_CLIENT_SECRET,
            page_size=page_size,
            concurrency=concurrency,
        )

    return make


@pytest.mark.parametrize(
    ("totals", "links", "concurrency"),
    [
        (True, True, 8),  # offset-shaped Link and a total: parallel offsets
        (True, False, 8),  # a total, no Link: parallel offsets
        (False, True, 8),  # Link only: followed one page at a time
        (False, False, 8),  # neither: offsets until a short page
        (True, True, 1),  # sequential by setting
    ],
)
def test_oneroster_rest_resumes_at_offset_or_link(district: DemoDistrict, totals, links, concurrency) -> None:
    with DemoSis(district, totals=totals, links=links) as server:
        make = _rest(server, concurrency=concurrency)
        assert assert_resumes_everywhere(make, "users", knows_end=totals) > 3


def test_oneroster_rest_resume_of_an_incremental_read_keeps_its_filter(district: DemoDistrict) -> None:
    with DemoSis(district) as server:
        since = datetime(2000, 1, 1, tzinfo=UTC)
        assert_resumes_everywhere(_rest(server, version="1.2"), "classes", since)
        filtered = [r for r in server.requests if "classes" in r[1]]
        assert filtered and all("filter" in str(r[2]) for r in filtered)


def test_oneroster_rest_resume_with_a_server_page_cap(district: DemoDistrict) -> None:
    # The server sends 5 a page whatever the limit: the resumed read asks for its size
    with DemoSis(district, page_cap=5, totals=False, links=False) as server:
        assert_resumes_everywhere(_rest(server), "classes", knows_end=False)


def test_oneroster_rest_refuses_a_checkpointed_link_to_another_host(district: DemoDistrict) -> None:
    from rostersync.errors import SourceError

    with (
        DemoSis(district) as server,
        _closing(_rest(server)()) as connector,
        pytest.raises(SourceError, match="another host"),
    ):
        list(connector.pages("users", None, {"page": 3, "next": "http://evil.example/users?offset=21"}))


# ---- PowerSchool --------------------------------------------------------------------


def test_powerschool_resumes_by_page(district: DemoDistrict) -> None:
    with PowerSchoolSis(district, client_id="c", client_secret="s") as server:

        def make() -> Connector:
            return PowerSchoolConnector(base_url=server.url, client_id="c", client_secret="s", page_size=6)

        assert assert_resumes_everywhere(make, "users", sample=True) > 3
        assert_resumes_everywhere(make, "enrollments", sample=True)


# ---- OneRoster CSV --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_csv_bundle_resumes_by_page(district: DemoDistrict, tmp_path: Path, version: str) -> None:
    bundle = write_bundle(district, tmp_path / "bundle.zip", version=version)  # type: ignore[arg-type]
    assert assert_resumes_everywhere(lambda: OneRosterCsvBundle(bundle, page_size=9), "users") > 3


# ---- the generic helper and the budget --------------------------------------------------


def _numbered(count: int) -> Iterator[SourcePage]:
    for number in range(count):
        yield SourcePage(entity="users", number=number, records=[{"sourcedId": str(number)}])


def test_resume_by_skipping_marks_the_last_page_and_skips_to_the_position() -> None:
    pages = list(resume_by_skipping(_numbered(4), None))
    assert [p.next_position() for p in pages] == [
        {"page": 1},
        {"page": 2},
        {"page": 3},
        {"page": 4, "end": True},
    ]
    assert [p.number for p in resume_by_skipping(_numbered(4), {"page": 2})] == [2, 3]
    assert list(resume_by_skipping(_numbered(4), {"page": 4, "end": True})) == []


def test_budget_keeps_a_reserve_and_honours_the_configured_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from rostersync.config import get_config

    # A 15-minute invocation keeps 60 s; a 2-second one a quarter
    assert 839 < FetchBudget.for_invocation(900_000).seconds <= 840
    assert FetchBudget.for_invocation(2_000).seconds == pytest.approx(1.5)
    assert FetchBudget.for_invocation(0).seconds == 0
    monkeypatch.setenv("FETCH_TIME_BUDGET_S", "5")
    get_config.cache_clear()
    try:
        assert FetchBudget.for_invocation(900_000).seconds == 5
    finally:
        monkeypatch.delenv("FETCH_TIME_BUDGET_S")
        get_config.cache_clear()


class _Clock:
    """Time that moves only when a page is read (no wall clock: the machine is noisy)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _TimedConnector:
    """Every entity has `per_entity` pages; reading one takes `page_s` of the fake clock."""

    def __init__(self, clock: _Clock, page_s: float, per_entity: int = 5) -> None:
        self.clock, self.page_s, self.per_entity = clock, page_s, per_entity
        self.started: list[tuple[str, int, float]] = []  # (entity, page, clock when its read began)

    def pages(self, entity, since=None, start=None):  # type: ignore[no-untyped-def]
        for number in range(int((start or {}).get("page", 0)), self.per_entity):
            self.started.append((entity, number, self.clock.now))
            self.clock.now += self.page_s
            yield SourcePage(entity=entity, number=number, records=[{"sourcedId": f"{entity}{number}"}])

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("budget_s", "page_s"), [(1.0, 0.3), (0.6, 0.05), (10.0, 0.7), (0.0, 0.2)])
def test_stage_starts_no_page_it_cannot_finish_within_the_budget(
    monkeypatch: pytest.MonkeyPatch, budget_s: float, page_s: float
) -> None:
    from rostersync.pipeline import fetch

    monkeypatch.setattr(fetch, "put_json", lambda key, body: None)  # S3 is not what is tested here
    clock = _Clock()
    connector = _TimedConnector(clock, page_s)
    budget = FetchBudget(seconds=budget_s, lease_until=datetime.now(UTC), clock=clock)
    state = fetch.FetchState(seq=0, mode="full", since=None)

    finished = fetch._stage(connector, "d", "r", state, budget)  # type: ignore[arg-type]

    assert not finished
    # At least one page per invocation (a fetch always advances) ...
    assert len(connector.started) >= 1
    # ... and past the first, a page starts only while the time left covers the slowest page seen
    assert all(began + page_s <= budget_s + 1e-9 for _, _, began in connector.started[1:])
    assert clock.now <= max(budget_s, page_s) + 1e-9
    # Nothing later was given up: the next page is the checkpoint's
    pages_read = len(connector.started)
    assert (ENTITIES.index(state.entity) * 5 + int((state.position or {}).get("page", 0))) == pages_read
