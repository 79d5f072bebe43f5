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


def wanted_username(
    user: UsernameCandidate, *, use_source: bool, rules: Sequence[Any]
) -> tuple[str, UsernameIssue | None]:
    """The username a user asks for before conflicts: the email, or the source username
    through the rules (the email, with an issue, when that is empty or too long)."""
    if not use_source:
        return user.email, None
    name = apply_username_rules(user.source_username, rules).strip() if user.source_username else ""
    if not name:
        return user.email, UsernameIssue(user.sourced_id, "empty source username: the email is the username")
    if len(name) > MAX_USERNAME_LENGTH:  # rules such as prefix or regex can grow it
        reason = f"username longer than {MAX_USERNAME_LENGTH} characters: the email is the username"
        return user.email, UsernameIssue(user.sourced_id, reason)
    return name, None


def username_conflict(sourced_id: str, holder: str | None, email_owner: str) -> str:
    """Why a user cannot have the username it wants ('' when it can): an earlier user
    (`holder`) took it, or it is the email of another user (`email_owner`)."""
    if holder is not None:
        return f"username conflict with sourcedId {holder}: the email is the username"
    if email_owner != sourced_id:
        return f"username is the email of sourcedId {email_owner}: the email is the username"
    return ""


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
        name, issue = wanted_username(user, use_source=use_source, rules=rules)
        if issue is not None:
            issues.append(issue)
        wanted[user.sourced_id] = name

    # Every email belongs to its user: a username that is someone else's email
    # yields to that user, so falling back to one's own email never collides.
    email_owner = {u.email.lower(): u.sourced_id for u in ordered}
    taken: dict[str, str] = {}
    result: dict[str, str] = {}
    for user in ordered:
        name = wanted[user.sourced_id]
        key = name.lower()
        reason = username_conflict(user.sourced_id, taken.get(key), email_owner.get(key, user.sourced_id))
        if reason:
            issues.append(UsernameIssue(user.sourced_id, reason))
            name = user.email
        taken[name.lower()] = user.sourced_id
        result[user.sourced_id] = name
    return result, issues
