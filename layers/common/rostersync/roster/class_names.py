"""Product class names: the source title plus the `classNameFields` (SPEC 3)."""

from __future__ import annotations

from collections.abc import Sequence


def class_name(
    *,
    title: str,
    fields: Sequence[str],
    periods: Sequence[str],
    term_titles: Sequence[str],
    class_code: str,
    sourced_id: str,
) -> str:
    """`Algebra I` with ["period", "term"] → `Algebra I - Period 3 - Fall 2026`.

    Fields are appended in the order given, each as ` - value`; empty values are
    skipped so a class without a period never reads `Algebra I - Period `.
    """
    values = {
        "period": ("Period " + ", ".join(periods)) if periods else "",
        "term": ", ".join(t for t in term_titles if t),
        "classCode": class_code,
        "sourcedId": sourced_id,
    }
    parts = [title]
    parts.extend(values[field] for field in fields if values[field])
    return " - ".join(parts)
