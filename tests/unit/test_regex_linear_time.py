"""Regex username rules are bounded (issue 6, security).

A district's settings may hold a regex rule; a crafted username then meets
that pattern. Rules run on RE2 (settings/model.py), which matches in time
linear in the input, so the classic catastrophic-backtracking patterns finish
at once; what RE2 cannot run in bounded time and memory (backreferences,
lookaround, a program too large) is refused when the settings are validated,
with a message that names the rule.
"""

from __future__ import annotations

import json
import time

import pytest

from rostersync.settings.model import SettingsRejectedError, parse_settings


def _rule_settings(pattern: str, replacement: str = "") -> str:
    rule = {"op": "regex", "pattern": pattern, "replacement": replacement}
    return json.dumps({"source": {"type": "direct"}, "usernameSource": True, "usernameRules": [rule]})


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a+)+$",  # nested quantifiers: exponential on a backtracking engine
        r"(a|aa)+$",  # overlapping alternatives
        r"(a|a?)+$",
        r"^(\w+\s?)*$",
        r"(.*a){12}",  # polynomial blow-up for a backtracker
    ],
)
def test_catastrophic_patterns_run_in_linear_time(pattern: str) -> None:
    (rule,) = parse_settings(_rule_settings(pattern, "x")).username_rules
    crafted = "a" * 50_000 + "!"
    started = time.perf_counter()
    result = rule.apply(crafted)  # type: ignore[union-attr]
    elapsed = time.perf_counter() - started
    # Python's `re` would not finish (r"(a+)+$" on 30 characters already takes seconds).
    assert elapsed < 0.5, f"{pattern}: {elapsed:.3f} s"
    assert isinstance(result, str)


def test_linear_time_holds_as_the_input_grows() -> None:
    (rule,) = parse_settings(_rule_settings(r"(a+)+$", "x")).username_rules

    def timed(size: int) -> float:
        started = time.perf_counter()
        rule.apply("a" * size + "!")  # type: ignore[union-attr]
        return time.perf_counter() - started

    timed(1000)  # warm
    small, large = min(timed(20_000) for _ in range(3)), min(timed(200_000) for _ in range(3))
    # Ten times the input: about ten times the time (a backtracker would be astronomically more).
    assert large < max(small * 40, 0.05), (small, large)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "backreference"),
        (r"a(?=b)", "lookahead"),
        (r"(?<!x)a", "lookbehind"),
        (r"((a{100}){100}){100}", "too large"),
    ],
)
def test_patterns_without_a_linear_time_bound_are_refused_at_validation(pattern: str, why: str) -> None:
    with pytest.raises(SettingsRejectedError) as caught:
        parse_settings(_rule_settings(pattern))
    (issue,) = caught.value.errors
    assert issue["key"] == "usernameRules[0].pattern", why
    assert issue["message"].startswith("not a valid regular expression"), issue["message"]
