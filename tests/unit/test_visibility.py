"""Future classes stay hidden until `futureClassLeadDays` before they start (SPEC 4)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from rostersync.roster.visibility import class_start_date, enrollment_in_force, is_visible, visible_from

D = date(2026, 9, 1)


def days(n: int) -> date:
    return D + timedelta(days=n)


@pytest.mark.parametrize(
    ("begins", "starts", "expected"),
    [
        ([days(5), days(2), days(9)], [days(-30)], days(2)),  # enrollments win over terms
        ([days(5)], [], days(5)),
        ([None, days(7), None], [days(1)], days(7)),
        ([], [days(10), days(3)], days(3)),  # no enrollment dates: earliest term start
        ([None, None], [days(10), None, days(4)], days(4)),
        ([], [], None),
        ([None], [None], None),
    ],
)
def test_class_start_date(begins: list, starts: list, expected: date | None) -> None:
    assert class_start_date(begins, starts) == expected


def test_class_start_date_reads_iterators_once() -> None:
    assert class_start_date(iter([days(3), days(1)]), iter([days(-5)])) == days(1)
    assert class_start_date(iter([]), iter([days(4), days(2)])) == days(2)


@pytest.mark.parametrize("lead", [0, 1, 15, 30, 365])
def test_visible_from_is_start_less_lead_days(lead: int) -> None:
    assert visible_from(D, lead) == D - timedelta(days=lead)


@pytest.mark.parametrize("lead", [0, 15])
def test_no_start_date_is_visible_at_once(lead: int) -> None:
    assert visible_from(None, lead) is None
    assert is_visible(None, date(1900, 1, 1))


@pytest.mark.parametrize("lead", [0, 1, 15, 40])
@pytest.mark.parametrize(
    ("offset", "visible"),
    [(-100, False), (-2, False), (-1, False), (0, True), (1, True), (100, True)],
    ids=["long-before", "two-days-before", "day-before", "boundary-day", "day-after", "long-after"],
)
def test_is_visible_from_its_day_on(lead: int, offset: int, visible: bool) -> None:
    shown_from = visible_from(D, lead)
    assert shown_from is not None

    assert is_visible(shown_from, shown_from + timedelta(days=offset)) is visible


def test_spec_example_default_lead_of_15_days() -> None:
    start = date(2027, 1, 20)
    shown_from = visible_from(start, 15)

    assert shown_from == date(2027, 1, 5)
    assert not is_visible(shown_from, date(2027, 1, 4))
    assert is_visible(shown_from, date(2027, 1, 5))
    assert is_visible(shown_from, start)


@pytest.mark.parametrize(
    ("end", "in_force"),
    [
        (None, True),
        (days(-1), False),  # ended yesterday
        (days(0), True),  # ends today: still on the class today
        (days(1), True),
        (days(-400), False),
    ],
    ids=["no-end", "yesterday", "today", "tomorrow", "long-ago"],
)
def test_enrollment_in_force(end: date | None, in_force: bool) -> None:
    assert enrollment_in_force(end, D) is in_force
