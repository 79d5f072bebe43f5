"""Future classes are hidden until `futureClassLeadDays` before they start (SPEC 4)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta


def class_start_date(
    enrollment_begin_dates: Iterable[date | None], term_start_dates: Iterable[date | None]
) -> date | None:
    """The earliest beginDate of the class's active enrollments, else of its terms' startDate."""
    begins = [d for d in enrollment_begin_dates if d is not None]
    if begins:
        return min(begins)
    starts = [d for d in term_start_dates if d is not None]
    return min(starts) if starts else None


def visible_from(start: date | None, lead_days: int) -> date | None:
    """The first day the class is shown; None means visible at once."""
    return None if start is None else start - timedelta(days=lead_days)


def is_visible(visible_from_day: date | None, today: date) -> bool:
    # Computed when read, not when synced: a class appears on its day by itself.
    return visible_from_day is None or today >= visible_from_day


def enrollment_in_force(end_date: date | None, today: date) -> bool:
    """An enrollment whose endDate has passed no longer puts its user on the class."""
    return end_date is None or end_date >= today
