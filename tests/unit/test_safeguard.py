"""The deletion safeguard's arithmetic (SPEC 5): more than maxDeletePercent trips it."""

from __future__ import annotations

import pytest

from rostersync.pipeline.apply import _halt_message, _safeguard
from rostersync.pipeline.changes import ChangePlan, KindPlan


def _plan(
    active_users: int, deactivated: int, active_classes: int = 10, deleted_classes: int = 0
) -> ChangePlan:
    users = KindPlan("users", active_before=active_users)
    users.removals = [{"id": f"u{i}", "status": "inactive"} for i in range(deactivated)]
    classes = KindPlan("classes", active_before=active_classes)
    classes.removals = [f"c{i}" for i in range(deleted_classes)]
    return ChangePlan(
        {
            "schools": KindPlan("schools"),
            "classes": classes,
            "users": users,
            "enrollments": KindPlan("enrollments"),
        }
    )


@pytest.mark.parametrize(
    ("active", "deactivated", "max_percent", "tripped"),
    [
        (100, 10, 10, False),  # exactly at the threshold: allowed
        (100, 11, 10, True),  # one more: halted
        (100, 0, 0, False),  # nothing to delete never trips
        (100, 1, 0, True),  # 0 %: any deletion halts
        (0, 0, 10, False),  # a first run has nothing to delete
        (3, 1, 50, False),
        (3, 2, 50, True),
        (1000, 25, 2.5, False),
        (1000, 26, 2.5, True),
    ],
)
def test_users_threshold(active, deactivated, max_percent, tripped):
    guard = _safeguard(_plan(active, deactivated), max_percent)
    assert guard["tripped"] is tripped
    assert guard["entities"]["users"]["wouldDelete"] == deactivated
    assert guard["entities"]["users"]["active"] == active


def test_classes_trip_it_alone_and_the_message_names_the_counts():
    guard = _safeguard(_plan(100, 0, active_classes=20, deleted_classes=5), 10)
    assert guard["tripped"] and guard["entities"]["classes"]["tripped"]
    assert not guard["entities"]["users"]["tripped"]
    assert guard["entities"]["classes"]["percent"] == 25.0
    assert guard["entities"]["classes"]["sample"] == ["c0", "c1", "c2", "c3", "c4"]
    message = _halt_message(guard)
    assert "classes: 5 of 20 active (25.0%)" in message and "confirmDeletes" in message
    assert "users" not in message
