"""pipeline/apply_continue.py: the spooled writes, a chunk at a time from a cursor.

Written in pieces, however small the chunks and wherever the budget stops them, the
items put and deleted are exactly those (and in the order) of writing the plan at once;
the first chunk of every call is written whatever the budget, so an apply advances.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any
from unittest.mock import patch

import pytest

from rostersync.bench.apply_engine import District
from rostersync.pipeline import apply_continue
from rostersync.pipeline.apply_continue import ApplyBudget, WriteCursor, write_spool
from rostersync.pipeline.bounded_changes import plan_bounded
from rostersync.roster.compute import RosterOptions
from rostersync.roster.working_set import WorkingSet

TODAY = date(2026, 10, 1)


def recorded(write: Any) -> list[tuple[str, str, Any]]:
    """Each item put or deleted, in order, by whatever `write()` does."""
    calls: list[tuple[str, str, Any]] = []

    def put(_district: str, kind: str, items: Any) -> int:
        items = list(items)
        calls.extend(("put", kind, item) for item in items)
        return len(items)

    def delete(_district: str, kind: str, ids: Any) -> int:
        ids = list(ids)
        calls.extend(("delete", kind, item_id) for item_id in ids)
        return len(ids)

    from rostersync.store import roster

    with patch.object(roster, "write_product", put), patch.object(roster, "delete_product", delete):
        write()
    return calls


@pytest.mark.parametrize("deletions", [True, False])
@pytest.mark.parametrize("chunk", [1, 7, 5000])
def test_writes_in_chunks_from_a_cursor_are_the_plans_writes(
    deletions: bool, chunk: int, monkeypatch: Any
) -> None:
    # Given the bench district planned against a stored product (creates, updates, removals)
    district = District(600, 3, username_pool=200, shared_email_every=100)
    options = RosterOptions(username_source=True)
    with WorkingSet(options, TODAY) as ws:
        result = plan_bounded(district.mirror, district.stored, ws)
        whole = recorded(lambda: result.write("d1", deletions=deletions))
        assert {action for action, _, _ in whole} == ({"put", "delete"} if deletions else {"put"})

        # When they are written a chunk per call, the budget spent from the start
        monkeypatch.setattr(apply_continue, "WRITE_CHUNK", chunk)
        cursor, calls = WriteCursor(), 0

        def piecewise() -> None:
            nonlocal calls
            while True:
                calls += 1
                if write_spool("d1", ws, cursor, deletions=deletions, spent=lambda: True):
                    return

        pieces = recorded(piecewise)

    # Then the same items are put and deleted in the same order, one chunk per call
    assert pieces == whole
    assert cursor.written == len(whole)
    assert calls >= len(whole) / chunk


def test_the_budget_keeps_a_reserve_and_honours_a_cap(monkeypatch: Any) -> None:
    from rostersync.config import get_config

    get_config.cache_clear()
    try:
        # a whole Lambda invocation keeps 180 s back for its checkpoint
        budget = ApplyBudget(900_000)
        assert 719 < budget.deadline - time.monotonic() <= 720
        # a short one keeps a quarter back
        assert ApplyBudget(40).deadline - time.monotonic() <= 0.03
        monkeypatch.setenv("APPLY_TIME_BUDGET_S", "0")
        get_config.cache_clear()
        assert ApplyBudget(900_000).spent()
    finally:
        get_config.cache_clear()
