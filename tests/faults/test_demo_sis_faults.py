"""The demo SIS's fault injection answers as a misbehaving SIS would, on the wire."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, generate_district
from rostersync.local.demo_sis import DemoSis


@pytest.fixture(scope="module")
def server() -> Iterator[DemoSis]:
    with DemoSis(generate_district(district_id="demo", students_per_school=10, periods=1)) as sis:
        yield sis


@pytest.fixture
def sis(server: DemoSis) -> Iterator[DemoSis]:
    yield server
    server.clear_faults()
    server.totals, server.links, server.past_end = True, True, "empty"


@pytest.fixture
def http(sis: DemoSis) -> requests.Session:
    token = requests.post(
        sis.token_url,
        data={"grant_type": "client_credentials"},
        auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
        timeout=5,
    ).json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def test_reset_sends_half_the_body_then_closes(sis: DemoSis, http: requests.Session) -> None:
    sis.fault("reset", path_contains="users")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.get(f"{sis.v1p1_url}/users", timeout=5)
    assert http.get(f"{sis.v1p1_url}/users", timeout=5).status_code == 200  # once only


def test_truncate_and_html_answer_200_with_a_body_that_is_not_json(
    sis: DemoSis, http: requests.Session
) -> None:
    sis.fault("truncate", path_contains="users")
    sis.fault("html", path_contains="classes")
    truncated = http.get(f"{sis.v1p1_url}/users", timeout=5)
    html = http.get(f"{sis.v1p1_url}/classes", timeout=5)
    assert truncated.status_code == html.status_code == 200
    assert html.headers["Content-Type"] == "text/html" and html.text.startswith("<!DOCTYPE html>")
    for answer in (truncated, html):
        with pytest.raises(ValueError):
            answer.json()


def test_delay_empty_and_min_offset(sis: DemoSis, http: requests.Session) -> None:
    sis.fault("empty", path_contains="users", min_offset=5)
    sis.fault("delay", path_contains="orgs", delay_s=0.3)
    first = http.get(f"{sis.v1p1_url}/users", params={"limit": 5, "offset": 0}, timeout=5)
    later = http.get(f"{sis.v1p1_url}/users", params={"limit": 5, "offset": 5}, timeout=5)
    assert len(first.json()["users"]) == 5 and later.json() == {"users": []}
    assert later.headers["X-Total-Count"] == first.headers["X-Total-Count"]  # the total still says more
    with pytest.raises(requests.Timeout):
        http.get(f"{sis.v1p1_url}/orgs", timeout=0.1)
    assert sis.pending_faults() == 0


def test_call_runs_before_the_answer(sis: DemoSis, http: requests.Session) -> None:
    removed = sis.district.records("users")[0]["sourcedId"]
    before = len(sis.district.records("users"))
    sis.fault("call", path_contains="users", action=lambda: sis.district.remove("users", removed))
    answer = http.get(f"{sis.v1p1_url}/users", params={"limit": 1000}, timeout=5)
    assert int(answer.headers["X-Total-Count"]) == before - 1
    sis.district.add("users", {"sourcedId": removed, "status": "active", "role": "parent"})


def test_no_totals_no_links_and_errors_past_the_end(sis: DemoSis, http: requests.Session) -> None:
    sis.totals, sis.links, sis.past_end = False, False, "404"
    page = http.get(f"{sis.v1p1_url}/orgs", params={"limit": 1}, timeout=5)
    assert "X-Total-Count" not in page.headers and "Link" not in page.headers
    past = http.get(f"{sis.v1p1_url}/orgs", params={"offset": 1000}, timeout=5)
    assert past.status_code == 404


def test_unknown_fault_kinds_are_refused(sis: DemoSis) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        sis.fault("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs an action"):
        sis.fault("call")
    started = time.monotonic()
    sis.fail_next(503, count=2)  # the old control still works, through fault()
    assert sis.pending_faults() == 2 and time.monotonic() - started < 1
