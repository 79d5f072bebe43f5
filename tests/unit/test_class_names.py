"""`classNameFields` (SPEC 3): the source title plus ` - value` per field, in order."""

from __future__ import annotations

import itertools

import pytest

from rostersync.roster.class_names import class_name

FIELDS = ("period", "term", "classCode", "sourcedId")


def name(
    fields: list[str] | tuple[str, ...],
    *,
    title: str = "Algebra I",
    periods: tuple[str, ...] = ("3",),
    term_titles: tuple[str, ...] = ("Fall 2026",),
    class_code: str = "ALG1-3",
    sourced_id: str = "cls-alg1-p3",
) -> str:
    return class_name(
        title=title,
        fields=fields,
        periods=periods,
        term_titles=term_titles,
        class_code=class_code,
        sourced_id=sourced_id,
    )


def test_spec_example_period_then_term() -> None:
    assert name(["period", "term"]) == "Algebra I - Period 3 - Fall 2026"


def test_no_fields_is_the_title() -> None:
    assert name([]) == "Algebra I"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("period", "Algebra I - Period 3"),
        ("term", "Algebra I - Fall 2026"),
        ("classCode", "Algebra I - ALG1-3"),
        ("sourcedId", "Algebra I - cls-alg1-p3"),
    ],
)
def test_each_field_alone(field: str, expected: str) -> None:
    assert name([field]) == expected


@pytest.mark.parametrize(
    ("periods", "expected"),
    [
        (("3",), "Algebra I - Period 3"),
        (("1", "3"), "Algebra I - Period 1, 3"),
        (("1", "2", "7"), "Algebra I - Period 1, 2, 7"),
        (("A", "B"), "Algebra I - Period A, B"),
    ],
)
def test_several_periods_are_joined_with_comma(periods: tuple[str, ...], expected: str) -> None:
    assert name(["period"], periods=periods) == expected


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        (("Fall 2026",), "Algebra I - Fall 2026"),
        (("Fall 2026", "Spring 2027"), "Algebra I - Fall 2026, Spring 2027"),
        (("Q1", "Q2", "Q3"), "Algebra I - Q1, Q2, Q3"),
        (("Fall 2026", ""), "Algebra I - Fall 2026"),
    ],
)
def test_several_terms_are_joined_with_comma(terms: tuple[str, ...], expected: str) -> None:
    assert name(["term"], term_titles=terms) == expected


@pytest.mark.parametrize(
    ("fields", "kwargs", "expected"),
    [
        (["period"], {"periods": ()}, "Algebra I"),
        (["term"], {"term_titles": ()}, "Algebra I"),
        (["term"], {"term_titles": ("",)}, "Algebra I"),
        (["classCode"], {"class_code": ""}, "Algebra I"),
        (["period", "term"], {"periods": ()}, "Algebra I - Fall 2026"),
        (["period", "term"], {"term_titles": ()}, "Algebra I - Period 3"),
        (["period", "term", "classCode"], {"term_titles": ()}, "Algebra I - Period 3 - ALG1-3"),
        (["period", "classCode", "term"], {"periods": (), "class_code": "", "term_titles": ()}, "Algebra I"),
    ],
)
def test_empty_values_are_skipped(fields: list[str], kwargs: dict, expected: str) -> None:
    assert name(fields, **kwargs) == expected


VALUES = {"period": "Period 3", "term": "Fall 2026", "classCode": "ALG1-3", "sourcedId": "cls-alg1-p3"}


@pytest.mark.parametrize(
    "fields",
    [list(p) for n in range(1, 5) for p in itertools.permutations(FIELDS, n)],
    ids=lambda fields: "+".join(fields),
)
def test_field_order_is_respected(fields: list[str]) -> None:
    assert name(fields) == " - ".join(["Algebra I", *(VALUES[f] for f in fields)])


def test_title_with_dashes_is_kept_as_is() -> None:
    assert name(["period"], title="Pre-Calc - Honors") == "Pre-Calc - Honors - Period 3"
