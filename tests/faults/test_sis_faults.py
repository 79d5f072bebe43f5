"""Faults of the SIS, met by a real fetch over HTTP (docs/faults.md lists them).

Each test: a clean first sync (the baseline), then the SIS changes (so a run
has something to apply, and a full run something to deactivate), then the
fault. The faulted run must end in the right status with a message an
administrator can act on (no stack trace, no student data); a failed run must
leave the product exactly as the baseline (SPEC 5: a failed or partial fetch
deletes nothing); and a rerun without the fault must converge to the state a
clean sync of the same SIS gives a fresh district.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from fault_harness import DISTRICT, PAGE_SIZE, SOURCE_TIMEOUT_S, Pipeline, assert_no_leak, product, run_text

from rostersync.local.demo_sis import DemoSis
from rostersync.store import runs

RENAMED = "stu-1-00002"  # a student the SIS renames between the baseline and the faulted run
REMOVED = "stu-1-00003"  # a student the SIS drops outright: a full run deactivates it


def _change_the_sis(sis: DemoSis) -> None:
    sis.district.touch("users", RENAMED, givenName="Renamed")
    sis.district.remove("users", REMOVED)


def _baseline(pipe: Pipeline, connect: Any, sis: DemoSis) -> dict[str, Any]:
    connect()
    first = pipe.sync(DISTRICT)
    assert first["status"] == "succeeded", first
    _change_the_sis(sis)
    return product(DISTRICT)


def assert_failed_safely(run: dict[str, Any], baseline: dict[str, Any], sis: DemoSis, *expected: str) -> None:
    """Failed, says why (naming what it could not read), and changed nothing."""
    assert run["status"] == "failed", run
    message = run.get("message", "")
    for part in expected:
        assert part in message, message
    assert_no_leak(run_text(run), sis.district)
    assert product(DISTRICT) == baseline  # nothing applied, nothing deleted
    assert runs.active_run_id(DISTRICT) is None  # the district can sync again


def assert_converges(
    pipe: Pipeline, sis: DemoSis, reference: Any, *, rerun: bool = True, dropped: tuple[str, ...] = (REMOVED,)
) -> dict[str, Any]:
    """A rerun (without the fault) gives what a clean sync of the same SIS gives a new
    district; the students the SIS dropped are kept, inactive."""
    sis.clear_faults()
    if rerun:
        again = pipe.sync(DISTRICT)
        assert again["status"] == "succeeded", again
    mine = product(DISTRICT)
    for sid in dropped:
        assert mine["users"].pop(sid)["status"] == "inactive", sid
    assert mine == reference()
    assert mine["users"][RENAMED]["givenName"] == "Renamed"
    return mine


# ---- faults that retrying absorbs ---------------------------------------------------

# (fault kind, DemoSis.fault arguments): each hits the users pages.
TRANSIENT = {
    "429": ("status", {"status": 429, "count": 3}),
    "429-retry-after": ("status", {"status": 429, "retry_after": 0.05, "count": 3}),
    "503": ("status", {"status": 503, "count": 3}),
    "500-retry-after": ("status", {"status": 500, "retry_after": 0.05, "count": 3}),
    "timeout-once": ("delay", {"delay_s": SOURCE_TIMEOUT_S * 2, "min_offset": PAGE_SIZE}),
    "connection-closed-mid-page": ("reset", {"count": 2, "min_offset": PAGE_SIZE}),
}


@pytest.mark.parametrize("case", list(TRANSIENT))
def test_transient_faults_are_retried(pipe, connect, sis, reference, case):
    connect()
    kind, arguments = TRANSIENT[case]
    # At most three in a row on one request: a request is tried up to six times.
    sis.fault(kind, path_contains="users", **arguments)
    started = time.monotonic()

    run = pipe.sync(DISTRICT)

    assert run["status"] == "succeeded", run
    assert sis.pending_faults() == 0  # every injected fault was met, and retried
    if "retry_after" in arguments:
        assert time.monotonic() - started >= arguments["retry_after"]  # Retry-After honoured
    assert product(DISTRICT) == reference()  # nothing lost


# ---- faults that fail the run -------------------------------------------------------

# (fault kind, DemoSis.fault arguments, what the run's message must say)
PERSISTENT = {
    "429-longer-than-the-retry-budget": (
        "status",
        {"status": 429, "count": 50, "path_contains": "enrollments"},
        ("fetch failed", "HTTP 429", "/enrollments", "after 6 attempts"),
    ),
    "503-longer-than-the-retry-budget": (
        "status",
        {"status": 503, "count": 50, "path_contains": "enrollments"},
        ("fetch failed", "HTTP 503", "/enrollments", "after 6 attempts"),
    ),
    # classes fit one page: the six timeouts all fall on one request
    "keeps-timing-out": (
        "delay",
        {"delay_s": SOURCE_TIMEOUT_S * 1.5, "count": 6, "path_contains": "classes"},
        ("/classes", "timed out after 6 attempts"),
    ),
    # two users pages in flight share twelve resets: one of them meets six
    "keeps-closing-mid-page": (
        "reset",
        {"count": 12, "path_contains": "users", "min_offset": PAGE_SIZE},
        ("/users", "connection broken mid-response after 6 attempts"),
    ),
    "truncated-json": (
        "truncate",
        {"path_contains": "users", "min_offset": PAGE_SIZE},
        ("/users", "response is not valid JSON"),
    ),
    "html-error-page-with-200": (
        "html",
        {"path_contains": "users", "min_offset": PAGE_SIZE},
        ("/users", "response is not valid JSON"),
    ),
    "empty-page-before-the-total": (
        "empty",
        {"path_contains": "users", "min_offset": PAGE_SIZE},
        ("/users", "ended before its total"),
    ),
}


@pytest.mark.parametrize("case", list(PERSISTENT))
def test_persistent_faults_fail_the_run_and_delete_nothing(pipe, connect, sis, reference, case):
    baseline = _baseline(pipe, connect, sis)
    kind, arguments, said = PERSISTENT[case]
    sis.fault(kind, **arguments)

    run = pipe.sync(DISTRICT)

    assert_failed_safely(run, baseline, sis, *said)
    assert_converges(pipe, sis, reference)


# ---- a list that changes, or ends, under the reader -----------------------------------


def test_records_added_while_paging_are_not_lost(pipe, connect, sis, reference):
    _baseline(pipe, connect, sis)
    template = dict(sis.district.find("users", "stu-1-00004"))

    def add_students() -> None:
        for n in range(3):
            sis.district.add(
                "users",
                {
                    **template,
                    "sourcedId": f"stu-new-{n}",
                    "email": f"new{n}@example.org",
                    "username": f"new{n}",
                },
            )

    sis.fault("call", action=add_students, path_contains="users", min_offset=PAGE_SIZE)

    run = pipe.sync(DISTRICT)

    # Appended records are read on later pages or by the next run; nothing is skipped.
    assert run["status"] == "succeeded", run
    assert_converges(pipe, sis, reference)
    assert {"stu-new-0", "stu-new-1", "stu-new-2"} <= set(product(DISTRICT)["users"])


def test_records_removed_while_paging_do_not_deactivate_others(pipe, connect, sis, reference):
    baseline = _baseline(pipe, connect, sis)
    early = [
        u["sourcedId"]
        for u in sis.district.records("users")[:PAGE_SIZE]
        if u["role"] == "student" and u["sourcedId"] in baseline["users"]
    ][:2]

    def remove_early_records() -> None:
        # Records before the reader's offset: every later record moves up, so an
        # offset reader would skip as many records as were removed.
        for sid in early:
            sis.district.remove("users", sid)

    sis.fault("call", action=remove_early_records, path_contains="users", min_offset=PAGE_SIZE)

    run = pipe.sync(DISTRICT)

    assert_failed_safely(run, baseline, sis, "/users")
    # The SIS really dropped them: the rerun deactivates exactly those.
    assert_converges(pipe, sis, reference, dropped=(REMOVED, *early))


@pytest.mark.parametrize(
    ("past_end", "totals", "ends"),
    [
        ("empty", False, "succeeded"),
        ("404", True, "succeeded"),
        ("400", True, "succeeded"),
        ("404", False, "failed"),
    ],
    ids=["empty-no-total", "404-with-total", "400-with-total", "404-no-total"],
)
def test_a_page_past_the_end(pipe, connect, sis, reference, past_end, totals, ends):
    """With a total the reader never asks past it; without one it reads until a
    short page, and when the last page is full it asks for one more: an empty
    answer ends the list, an error fails the run (it could be any error)."""
    baseline = _baseline(pipe, connect, sis) if ends == "failed" else None
    if baseline is None:
        connect()
    parents = [u for u in sis.district.records("users") if u["role"] == "parent"]
    n = 0
    while len(sis.district.records("users")) % PAGE_SIZE:  # parents are never imported
        sis.district.add("users", {**parents[0], "sourcedId": f"par-pad-{n}", "email": f"pad{n}@example.org"})
        n += 1
    sis.totals, sis.links, sis.past_end = totals, False, past_end
    sis.requests.clear()

    run = pipe.sync(DISTRICT)

    if baseline is not None:
        # Every entity shorter than a page is probed past its end too (the server
        # might cap its pages): the first such probe fails the run, URL named.
        assert_failed_safely(run, baseline, sis, "HTTP 404", "offset=")
        sis.past_end = "empty"
        assert_converges(pipe, sis, reference)
        return
    assert run["status"] == "succeeded", run
    users = len(sis.district.records("users"))
    offsets = [int(q.get("offset", 0)) for _, path, q in sis.requests if path.endswith("/users")]
    assert (max(offsets) == users) is (not totals)  # asked past the end only without a total
    assert product(DISTRICT) == reference()
