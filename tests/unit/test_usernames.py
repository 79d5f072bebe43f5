"""`usernameSource` and `usernameRules` (SPEC 3): each rule op, rules in order, collisions."""

from __future__ import annotations

import random

import pytest

from rostersync.roster.usernames import (
    UsernameCandidate,
    UsernameIssue,
    apply_rule,
    apply_username_rules,
    resolve_usernames,
    sourced_id_order,
)
from rostersync.settings.model import DistrictSettings

EMPTY_WARNING = "empty source username: the email is the username"


def conflict(holder: str) -> str:
    return f"username conflict with sourcedId {holder}: the email is the username"


def settings_rules(rules: list[dict]) -> list:
    """The same rules as the validated settings model carries them."""
    return DistrictSettings.model_validate(
        {"source": {"type": "direct"}, "usernameRules": rules}
    ).username_rules


# ---- each op alone -------------------------------------------------------------

SINGLE_RULE_CASES = [
    # lowercase / uppercase
    ({"op": "lowercase"}, "JSmith@Lincoln.K12.US", "jsmith@lincoln.k12.us"),
    ({"op": "lowercase"}, "already", "already"),
    ({"op": "lowercase"}, "", ""),
    ({"op": "uppercase"}, "jsmith", "JSMITH"),
    ({"op": "uppercase"}, "J.Smith-2", "J.SMITH-2"),
    # stripDomain: drop `@` and all after
    ({"op": "stripDomain"}, "jsmith@lincoln.k12.us", "jsmith"),
    ({"op": "stripDomain"}, "a@b@c", "a"),
    ({"op": "stripDomain"}, "nodomain", "nodomain"),
    ({"op": "stripDomain"}, "@only.domain", ""),
    # prefix / suffix
    ({"op": "prefix", "value": "lhs-"}, "jsmith", "lhs-jsmith"),
    ({"op": "prefix", "value": ""}, "jsmith", "jsmith"),
    ({"op": "suffix", "value": "@students"}, "jsmith", "jsmith@students"),
    ({"op": "suffix", "value": "1"}, "jsmith", "jsmith1"),
    # replace: literal, every occurrence, regex metacharacters are plain text
    ({"op": "replace", "find": ".", "with": "_"}, "j.s.mith", "j_s_mith"),
    ({"op": "replace", "find": "*", "with": "x"}, "a*b*", "axbx"),
    ({"op": "replace", "find": "(a|b)", "with": "-"}, "(a|b)c(a|b)", "-c-"),
    ({"op": "replace", "find": "^$", "with": "!"}, "x^$y", "x!y"),
    ({"op": "replace", "find": "\\d", "with": "D"}, "a\\d1", "aD1"),
    ({"op": "replace", "find": "[0-9]+", "with": ""}, "j[0-9]+s123", "js123"),
    ({"op": "replace", "find": "a", "with": "\\1"}, "banana", "b\\1n\\1n\\1"),
    ({"op": "replace", "find": "@lincoln.k12.us", "with": ""}, "jsmith@lincoln.k12.us", "jsmith"),
    ({"op": "replace", "find": "zz", "with": "y"}, "jsmith", "jsmith"),
    ({"op": "replace", "find": "s", "with": "ss"}, "sas", "ssass"),
    # truncate
    ({"op": "truncate", "length": 3}, "jsmith", "jsm"),
    ({"op": "truncate", "length": 6}, "jsmith", "jsmith"),
    ({"op": "truncate", "length": 20}, "jsmith", "jsmith"),
    ({"op": "truncate", "length": 1}, "jsmith", "j"),
    # regex, with groups
    ({"op": "regex", "pattern": "[0-9]+", "replacement": ""}, "jsmith123", "jsmith"),
    ({"op": "regex", "pattern": "^(\\w)\\w*\\.(\\w+)$", "replacement": "\\1\\2"}, "john.smith", "jsmith"),
    ({"op": "regex", "pattern": "(\\w+)\\.(\\w+)", "replacement": "\\2_\\1"}, "john.smith", "smith_john"),
    (
        {"op": "regex", "pattern": "(?P<first>\\w+)\\.(?P<last>\\w+)", "replacement": "\\g<last>\\g<first>"},
        "john.smith",
        "smithjohn",
    ),
    ({"op": "regex", "pattern": "@.*$", "replacement": ""}, "jsmith@lincoln.k12.us", "jsmith"),
    ({"op": "regex", "pattern": "a", "replacement": "o"}, "banana", "bonono"),
    ({"op": "regex", "pattern": "^x", "replacement": "y"}, "jsmith", "jsmith"),
    ({"op": "regex", "pattern": "(a+)+$", "replacement": "A"}, "a" * 40 + "b", "a" * 40 + "b"),
]


@pytest.mark.parametrize(("rule", "value", "expected"), SINGLE_RULE_CASES)
def test_each_rule_op_alone(rule: dict, value: str, expected: str) -> None:
    assert apply_rule(value, rule) == expected


@pytest.mark.parametrize(("rule", "value", "expected"), SINGLE_RULE_CASES)
def test_each_rule_op_alone_as_validated_settings_give_it(rule: dict, value: str, expected: str) -> None:
    (model,) = settings_rules([rule])

    assert apply_rule(value, model) == expected
    assert apply_username_rules(value, [model]) == expected


def test_unknown_op_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown username rule op 'reverse'"):
        apply_rule("x", {"op": "reverse"})


@pytest.mark.parametrize("as_model", [False, True], ids=["dict", "settings-model"])
def test_regex_replacement_with_non_ascii_text_is_kept(as_model: bool) -> None:
    rule: object = {"op": "regex", "pattern": "^(\\w+)\\.", "replacement": "é\\1-"}
    if as_model:
        (rule,) = settings_rules([rule])  # type: ignore[list-item]

    assert apply_rule("jean.dupont", rule) == "éjean-dupont"


# ---- rules in order ------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "value", "expected"),
    [
        ([], "JSmith@Lincoln.K12.US", "JSmith@Lincoln.K12.US"),
        ([{"op": "lowercase"}, {"op": "stripDomain"}], "JSmith@Lincoln.K12.US", "jsmith"),
        ([{"op": "stripDomain"}, {"op": "lowercase"}], "JSmith@Lincoln.K12.US", "jsmith"),
        # prefix then truncate cuts the name; truncate then prefix keeps it whole.
        ([{"op": "prefix", "value": "lhs-"}, {"op": "truncate", "length": 6}], "jsmith", "lhs-js"),
        ([{"op": "truncate", "length": 6}, {"op": "prefix", "value": "lhs-"}], "jsmith", "lhs-jsmith"),
        # lowercase then uppercase: the last wins.
        ([{"op": "lowercase"}, {"op": "uppercase"}], "JSmith", "JSMITH"),
        ([{"op": "uppercase"}, {"op": "lowercase"}], "JSmith", "jsmith"),
        # replace sees what earlier rules made.
        ([{"op": "lowercase"}, {"op": "replace", "find": "J", "with": "x"}], "JJ", "jj"),
        ([{"op": "replace", "find": "J", "with": "x"}, {"op": "lowercase"}], "JJ", "xx"),
        # suffix then stripDomain drops the suffix after a `@`.
        ([{"op": "suffix", "value": "@x"}, {"op": "stripDomain"}], "a", "a"),
        ([{"op": "stripDomain"}, {"op": "suffix", "value": "@x"}], "a@y", "a@x"),
        (
            [
                {"op": "stripDomain"},
                {"op": "regex", "pattern": "^(\\w)\\w*\\.(\\w+)$", "replacement": "\\1\\2"},
                {"op": "uppercase"},
                {"op": "prefix", "value": "s"},
                {"op": "truncate", "length": 5},
            ],
            "john.smith@students.lincoln.k12.us",
            "sJSMI",
        ),
    ],
)
def test_rules_apply_in_the_order_given(rules: list[dict], value: str, expected: str) -> None:
    assert apply_username_rules(value, rules) == expected
    assert apply_username_rules(value, settings_rules(rules)) == expected


# ---- sourcedId order -------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("9", "10"),
        ("2", "10"),
        ("099", "100"),
        ("1", "a"),
        ("10", "a"),
        ("a", "b"),
        ("abc", "abd"),
        ("A", "a"),
    ],
)
def test_lowest_sourced_id_is_numeric_for_numbers_else_text(low: str, high: str) -> None:
    assert sourced_id_order(low) < sourced_id_order(high)


# ---- resolve_usernames ------------------------------------------------------------


def cand(sourced_id: str, email: str, username: str = "") -> UsernameCandidate:
    return UsernameCandidate(sourced_id, email, username)


def test_source_off_username_is_the_email_whatever_the_source_username() -> None:
    users = [cand("1", "a@x.org", "alpha"), cand("2", "b@x.org", ""), cand("3", "c@x.org", "a@x.org")]

    names, issues = resolve_usernames(users, use_source=False, rules=[{"op": "uppercase"}])

    assert names == {"1": "a@x.org", "2": "b@x.org", "3": "c@x.org"}
    assert issues == []


def test_source_on_username_is_the_source_username_through_the_rules() -> None:
    users = [cand("1", "jsmith@x.org", "JSmith@Lincoln.K12.US"), cand("2", "ab@x.org", "ABaker")]

    names, issues = resolve_usernames(
        users, use_source=True, rules=[{"op": "lowercase"}, {"op": "stripDomain"}]
    )

    assert names == {"1": "jsmith", "2": "abaker"}
    assert issues == []


def test_source_on_without_rules_keeps_the_source_username_as_is() -> None:
    names, issues = resolve_usernames([cand("1", "a@x.org", "JSmith")], use_source=True, rules=[])

    assert names == {"1": "JSmith"}
    assert issues == []


@pytest.mark.parametrize("source_username", ["", "   "])
def test_empty_source_username_falls_back_to_the_email_with_a_warning(source_username: str) -> None:
    names, issues = resolve_usernames(
        [cand("1", "a@x.org", source_username), cand("2", "b@x.org", "bee")], use_source=True, rules=[]
    )

    assert names == {"1": "a@x.org", "2": "bee"}
    assert issues == [UsernameIssue("1", EMPTY_WARNING)]


@pytest.mark.parametrize(
    "rules",
    [
        [{"op": "stripDomain"}],  # "@x" -> ""
        [{"op": "regex", "pattern": ".*", "replacement": ""}],
        [{"op": "replace", "find": "@x", "with": ""}],
    ],
)
def test_username_made_empty_by_the_rules_falls_back_to_the_email(rules: list[dict]) -> None:
    names, issues = resolve_usernames([cand("1", "a@x.org", "@x")], use_source=True, rules=rules)

    assert names == {"1": "a@x.org"}
    assert issues == [UsernameIssue("1", EMPTY_WARNING)]


def test_collision_lowest_sourced_id_keeps_the_username_the_other_gets_its_email() -> None:
    users = [
        cand("u-ucoll-2", "mgarcia@washington.k12.us", "mgarcia@Washington.K12.US"),
        cand("u-ucoll-1", "mgarcia@lincoln.k12.us", "MGarcia@Lincoln.K12.US"),
    ]

    names, issues = resolve_usernames(
        users, use_source=True, rules=[{"op": "lowercase"}, {"op": "stripDomain"}]
    )

    assert names == {"u-ucoll-1": "mgarcia", "u-ucoll-2": "mgarcia@washington.k12.us"}
    assert issues == [UsernameIssue("u-ucoll-2", conflict("u-ucoll-1"))]


@pytest.mark.parametrize(
    ("low", "high"),
    [("9", "10"), ("2", "100"), ("10", "abc"), ("abc", "abd"), ("u-1", "u-2")],
)
def test_collision_winner_is_the_lowest_sourced_id_numbers_compared_as_numbers(low: str, high: str) -> None:
    # Given in both orders: the input order never decides.
    for users in (
        [cand(high, "high@x.org", "same"), cand(low, "low@x.org", "same")],
        [cand(low, "low@x.org", "same"), cand(high, "high@x.org", "same")],
    ):
        names, issues = resolve_usernames(users, use_source=True, rules=[])

        assert names == {low: "same", high: "high@x.org"}
        assert issues == [UsernameIssue(high, conflict(low))]


@pytest.mark.parametrize(("first", "second"), [("JSmith", "jsmith"), ("jsmith", "JSMITH"), ("ÉVE", "éve")])
def test_collision_is_case_insensitive(first: str, second: str) -> None:
    names, issues = resolve_usernames(
        [cand("1", "one@x.org", first), cand("2", "two@x.org", second)], use_source=True, rules=[]
    )

    assert names == {"1": first, "2": "two@x.org"}
    assert issues == [UsernameIssue("2", conflict("1"))]


def test_three_way_collision_only_the_lowest_keeps_it() -> None:
    users = [cand("30", "c@x.org", "sam"), cand("4", "a@x.org", "sam"), cand("100", "b@x.org", "SAM")]

    names, issues = resolve_usernames(users, use_source=True, rules=[])

    assert names == {"4": "sam", "30": "c@x.org", "100": "b@x.org"}
    assert issues == [UsernameIssue("30", conflict("4")), UsernameIssue("100", conflict("4"))]


def test_collision_made_by_the_rules_is_resolved() -> None:
    users = [cand("1", "a@x.org", "jsmith1"), cand("2", "b@x.org", "jsmith2")]

    names, issues = resolve_usernames(users, use_source=True, rules=[{"op": "truncate", "length": 6}])

    assert names == {"1": "jsmith", "2": "b@x.org"}
    assert issues == [UsernameIssue("2", conflict("1"))]


def test_usernames_without_collision_are_untouched() -> None:
    users = [cand(str(i), f"u{i}@x.org", f"user{i}") for i in range(1, 51)]

    names, issues = resolve_usernames(users, use_source=True, rules=[])

    assert names == {str(i): f"user{i}" for i in range(1, 51)}
    assert issues == []


def test_no_users_no_usernames() -> None:
    assert resolve_usernames([], use_source=True, rules=[]) == ({}, [])


def email_of(owner: str) -> str:
    return f"username is the email of sourcedId {owner}: the email is the username"


@pytest.mark.parametrize(
    ("users", "expected", "issues"),
    [
        # '1' wants '2''s email as its username: the email's owner keeps it.
        (
            [cand("1", "a@x.org", "b@x.org"), cand("2", "b@x.org", "B@X.org")],
            {"1": "a@x.org", "2": "B@X.org"},
            [UsernameIssue("1", email_of("2"))],
        ),
        (
            [cand("1", "a@x.org", "b@x.org"), cand("2", "b@x.org", "")],
            {"1": "a@x.org", "2": "b@x.org"},
            [UsernameIssue("2", EMPTY_WARNING), UsernameIssue("1", email_of("2"))],
        ),
        (
            [cand("1", "a@x.org", "B@X.ORG"), cand("2", "b@x.org", "bee")],
            {"1": "a@x.org", "2": "bee"},
            [UsernameIssue("1", email_of("2"))],
        ),
    ],
    ids=["collision-fallback", "empty-fallback", "other-users-email"],
)
def test_username_that_is_another_users_email_yields_to_that_user(
    users: list[UsernameCandidate], expected: dict[str, str], issues: list[UsernameIssue]
) -> None:
    names, got_issues = resolve_usernames(users, use_source=True, rules=[])

    assert names == expected
    assert got_issues == issues


EMAILS = [f"{name}@x.org" for name in ("a", "b", "c", "d")]


@pytest.mark.parametrize("seed", range(200))
def test_two_users_never_end_up_with_one_username(seed: int) -> None:
    # Usernames drawn from a small pool that includes the users' own emails in
    # other cases, so every kind of collision and fallback occurs.
    rng = random.Random(seed)
    pool = ["", "sam", "SAM", "Sam@x.org", *EMAILS, *(e.upper() for e in EMAILS)]
    ids = rng.sample(["1", "2", "9", "10", "100", "u1", "u2"], k=rng.randint(1, 4))
    users = [cand(sid, email, rng.choice(pool)) for sid, email in zip(ids, EMAILS, strict=False)]
    rules = rng.choice(
        [[], [{"op": "lowercase"}], [{"op": "stripDomain"}], [{"op": "truncate", "length": 1}]]
    )

    names, _issues = resolve_usernames(users, use_source=True, rules=rules)

    assert set(names) == set(ids)
    assert len({n.lower() for n in names.values()}) == len(names)
