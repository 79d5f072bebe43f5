"""Product usernames: the `usernameSource` and `usernameRules` options (SPEC 3)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rostersync.settings.model import apply_regex

MAX_USERNAME_LENGTH = 255


def _rule_fields(rule: Any) -> dict[str, Any]:
    """Rules arrive as settings models or plain dicts; read both by their JSON names."""
    if isinstance(rule, dict):
        return rule
    return rule.model_dump(by_alias=True)


def apply_rule(value: str, rule: Any) -> str:
    fields = _rule_fields(rule)
    op = fields["op"]
    if op == "lowercase":
        return value.lower()
    if op == "uppercase":
        return value.upper()
    if op == "stripDomain":
        return value.split("@", 1)[0]
    if op == "prefix":
        return str(fields["value"]) + value
    if op == "suffix":
        return value + str(fields["value"])
    if op == "replace":
        return value.replace(str(fields["find"]), str(fields["with"])) if fields["find"] else value
    if op == "truncate":
        return value[: int(fields["length"])]
    if op == "regex":
        # RE2 runs in linear time, so a district's pattern cannot hang a run.
        return apply_regex(str(fields["pattern"]), str(fields["replacement"]), value)
    raise ValueError(f"unknown username rule op {op!r}")


def apply_username_rules(value: str, rules: Sequence[Any]) -> str:
    for rule in rules:
        value = apply_rule(value, rule)
    return value


@dataclass(frozen=True)
class UsernameCandidate:
    sourced_id: str
    email: str
    source_username: str


@dataclass(frozen=True)
class UsernameIssue:
    sourced_id: str
    reason: str


def sourced_id_order(sourced_id: str) -> tuple[int, str]:
    """'Lowest sourcedId' compares numerically where ids are numbers, else as text."""
    if sourced_id.isascii() and sourced_id.isdigit():
        return (0, sourced_id.lstrip("0").rjust(40, "0"))
    return (1, sourced_id)


def resolve_usernames(
    users: Iterable[UsernameCandidate], *, use_source: bool, rules: Sequence[Any]
) -> tuple[dict[str, str], list[UsernameIssue]]:
    """Give every user one product username, unique in the district.

    With `use_source` off the username is the (unique) email. On, it is the
    source username through the rules; an empty result falls back to the email
    with a warning. Two users that end up with one username: the lowest
    sourcedId keeps it, the other keeps its email and the conflict is reported.
    """
    ordered = sorted(users, key=lambda u: sourced_id_order(u.sourced_id))
    issues: list[UsernameIssue] = []
    wanted: dict[str, str] = {}
    for user in ordered:
        if not use_source:
            wanted[user.sourced_id] = user.email
            continue
        name = apply_username_rules(user.source_username, rules).strip() if user.source_username else ""
        if not name:
            issues.append(UsernameIssue(user.sourced_id, "empty source username: the email is the username"))
            name = user.email
        elif len(name) > MAX_USERNAME_LENGTH:  # rules such as prefix or regex can grow it
            reason = f"username longer than {MAX_USERNAME_LENGTH} characters: the email is the username"
            issues.append(UsernameIssue(user.sourced_id, reason))
            name = user.email
        wanted[user.sourced_id] = name

    # Every email belongs to its user: a username that is someone else's email
    # yields to that user, so falling back to one's own email never collides.
    email_owner = {u.email.lower(): u.sourced_id for u in ordered}
    taken: dict[str, str] = {}
    result: dict[str, str] = {}
    for user in ordered:
        name = wanted[user.sourced_id]
        key = name.lower()
        holder = taken.get(key)
        owner = email_owner.get(key, user.sourced_id)
        if holder is not None:
            reason = f"username conflict with sourcedId {holder}: the email is the username"
        elif owner != user.sourced_id:
            reason = f"username is the email of sourcedId {owner}: the email is the username"
        else:
            reason = ""
        if reason:
            issues.append(UsernameIssue(user.sourced_id, reason))
            name = user.email
        taken[name.lower()] = user.sourced_id
        result[user.sourced_id] = name
    return result, issues
