"""A district's settings: the validated model of the JSON in its SSM parameter.

The JSON contract (SPEC 3) is camelCase; Python code uses the snake_case field
names. Every key but `source` has a default, unknown keys are refused, and a
refused document is reported with every bad key at once, by its path, in words
an IT administrator can act on (`parse_settings`).
"""

from __future__ import annotations

import json
import re
from datetime import time
from functools import cache, lru_cache
from typing import Annotated, Any, Literal, TypedDict, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

import re2
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from rostersync.api.access import check_principal_arn
from rostersync.errors import BadRequestError, SettingsError

SETTINGS_PREFIX = "/rostersync/districts/"
SCHEDULE_NAME_PREFIX = "rostersync-"
# EventBridge Scheduler names are at most 64 characters and the schedule is
# named `rostersync-{districtId}`, so an id longer than this could never be scheduled.
MAX_DISTRICT_ID_LENGTH = 64 - len(SCHEDULE_NAME_PREFIX)
_DISTRICT_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_DISTRICT_ID_LENGTH - 1}}}")

SourceType = Literal["oneroster", "oneroster-csv", "powerschool", "direct"]
RuleOp = Literal["lowercase", "uppercase", "stripDomain", "prefix", "suffix", "replace", "truncate", "regex"]
SourceRole = Literal["teacher", "aide", "administrator"]
ProductRole = Literal["Student", "Teacher 1", "Teacher 2", "Teacher 3", "School Admin", "District Admin"]
ClassNameField = Literal["period", "term", "classCode", "sourcedId"]

SOURCE_TYPES: tuple[str, ...] = get_args(SourceType)
RULE_OPS: tuple[str, ...] = get_args(RuleOp)
SOURCE_ROLES: tuple[str, ...] = get_args(SourceRole)
PRODUCT_ROLES: tuple[str, ...] = get_args(ProductRole)


def _invalid(reason: str) -> PydanticCustomError:
    # The reason travels as context, not as the template, so braces in a
    # user's value (a regex such as `a{2}`) are not read as placeholders.
    return PydanticCustomError("invalid_setting", "{reason}", {"reason": reason})


# ---------------------------------------------------------------- field types


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _invalid(f"{value!r} is not an http(s) URL")
    # Connectors append paths; one canonical form avoids `//` in requests.
    return value.rstrip("/")


def _check_parameter_name(value: str) -> str:
    # SSM allows letters, digits, `_.-` and `/` for hierarchy levels.
    if not re.fullmatch(r"[A-Za-z0-9_.\-/]{1,2048}", value):
        raise _invalid(f"{value!r} is not an SSM parameter name")
    return value


def _check_sync_time(value: str) -> str:
    # An hour without its leading zero ("2:00") is unambiguous, so it is
    # accepted and stored in the canonical "02:00" form.
    match = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", value)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise _invalid(f"{value!r} is not a 24-hour time HH:MM (for example '02:00' or '17:30')")
    return f"{int(match[1]):02d}:{match[2]}"


@cache
def _time_zones() -> frozenset[str]:
    # tzdata also ships files that are not zones a schedule can run in
    # (EventBridge Scheduler refuses them): leave those out.
    return frozenset(
        name
        for name in available_timezones()
        if name not in {"Factory", "localtime", "posixrules"} and not name.startswith(("posix/", "right/"))
    )


@cache
def _time_zones_by_lower_name() -> dict[str, str]:
    return {name.lower(): name for name in _time_zones()}


def _check_time_zone(value: str) -> str:
    if value in _time_zones():
        return value
    reason = f"unknown time zone {value!r}"
    suggestion = _time_zones_by_lower_name().get(value.lower())
    if suggestion:
        reason += f" (did you mean {suggestion!r}?)"
    else:
        reason += " (expected an IANA name such as 'America/Chicago')"
    raise _invalid(reason)


def _check_unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise _invalid(f"{value!r} is listed more than once")
        seen.add(value)
    return values


def _number_as_text(value: Any) -> Any:
    # `"version": 1.2` is an easy slip for `"1.2"`; the meaning is plain.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


HttpUrlText = Annotated[str, AfterValidator(_check_http_url)]
ParameterName = Annotated[str, AfterValidator(_check_parameter_name)]
SyncTime = Annotated[str, AfterValidator(_check_sync_time)]
TimeZoneName = Annotated[str, AfterValidator(_check_time_zone)]
OneRosterVersion = Annotated[Literal["1.1", "1.2"], BeforeValidator(_number_as_text)]
NonEmptyText = Annotated[str, Field(min_length=1)]


def _check_api_caller(value: str) -> str:
    try:
        return check_principal_arn(value)
    except ValueError as exc:
        raise _invalid(str(exc)) from None


ApiCaller = Annotated[str, AfterValidator(_check_api_caller)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
    )


# -------------------------------------------------------------------- sources


class _SourceBase(_Model):
    page_size: int | None = Field(default=None, ge=1, le=10_000)
    max_requests_per_minute: int | None = Field(default=None, ge=1)
    # Page requests in flight at once where the source tells its total (within the rate limit).
    max_concurrency: int = Field(default=8, ge=1, le=32)


class OneRosterSource(_SourceBase):
    type: Literal["oneroster"]
    base_url: HttpUrlText
    version: OneRosterVersion
    auth: Literal["oauth2", "oauth1"]
    token_url: HttpUrlText | None = Field(default=None, validate_default=True)
    credentials_parameter: ParameterName

    @field_validator("token_url")
    @classmethod
    def _token_url_for_oauth2(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field validator (not a model validator) so that the error is
        # reported at `source.tokenUrl`, the key the administrator must add.
        if value is None and info.data.get("auth") == "oauth2":
            raise _invalid("required when auth is 'oauth2'")
        return value


class SftpServer(_Model):
    host: NonEmptyText
    port: int = Field(default=22, ge=1, le=65_535)
    path: NonEmptyText
    username: NonEmptyText
    host_key: NonEmptyText

    @field_validator("host_key")
    @classmethod
    def _looks_like_public_key(cls, value: str) -> str:
        # The pinned key is what protects the district's roster from a spoofed
        # server, so a value that cannot be a key is refused now, not at 2 a.m.
        parts = value.split()
        if len(parts) < 2 or not re.fullmatch(r"(ssh|ecdsa|sk)-[A-Za-z0-9@.\-]+", parts[0]):
            raise _invalid("expected a public key such as 'ssh-ed25519 AAAA...'")
        return value


class OneRosterCsvSource(_SourceBase):
    type: Literal["oneroster-csv"]
    sftp: SftpServer | None = None
    credentials_parameter: ParameterName | None = Field(default=None, validate_default=True)

    @field_validator("credentials_parameter")
    @classmethod
    def _credentials_for_sftp(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("sftp") is not None:
            raise _invalid("required when sftp is set")
        return value


class PowerSchoolSource(_SourceBase):
    type: Literal["powerschool"]
    base_url: HttpUrlText
    credentials_parameter: ParameterName


class DirectSource(_SourceBase):
    type: Literal["direct"]


Source = Annotated[
    OneRosterSource | OneRosterCsvSource | PowerSchoolSource | DirectSource,
    Field(discriminator="type"),
]


# ------------------------------------------------------------- username rules


class LowercaseRule(_Model):
    op: Literal["lowercase"]


class UppercaseRule(_Model):
    op: Literal["uppercase"]


class StripDomainRule(_Model):
    op: Literal["stripDomain"]


class PrefixRule(_Model):
    op: Literal["prefix"]
    value: str


class SuffixRule(_Model):
    op: Literal["suffix"]
    value: str


class ReplaceRule(_Model):
    op: Literal["replace"]
    find: NonEmptyText
    with_: str = Field(alias="with")


class TruncateRule(_Model):
    op: Literal["truncate"]
    length: int = Field(ge=1)


def _re2_options() -> re2.Options:
    options = re2.Options()
    # A bad pattern is reported in the settings error; RE2 would also write
    # it to stderr, outside the structured log.
    options.log_errors = False
    return options


@lru_cache(maxsize=256)
def _compile(pattern: str) -> Any:
    return re2.compile(pattern, _re2_options())


# `\1`..`\99`, `\g<n>`, `\g<name>` and `\\`; anything else after a backslash is refused.
_TEMPLATE_TOKEN = re.compile(r"\\(?:g<(\w+)>|([1-9][0-9]?)|(\\)|(.?))", re.DOTALL)
TemplatePiece = str | int


@lru_cache(maxsize=256)
def _parse_replacement(pattern: str, replacement: str) -> tuple[TemplatePiece, ...]:
    """Split a replacement into literal text and group numbers.

    The rule applies it with a callable instead of re2's own template
    expansion, which decodes escapes through latin-1 and garbles non-ASCII
    replacement text.
    """
    compiled = _compile(pattern)
    pieces: list[TemplatePiece] = []
    position = 0
    for token in _TEMPLATE_TOKEN.finditer(replacement):
        pieces.append(replacement[position : token.start()])
        position = token.end()
        group_ref, number, backslash, other = token.groups()
        if backslash:
            pieces.append("\\")
            continue
        if other is not None:
            raise ValueError(f"unsupported escape '\\{other}' (use \\1 or \\g<name> for groups, \\\\ for \\)")
        ref = group_ref if group_ref is not None else number
        pieces.append(_group_number(compiled, ref))
    pieces.append(replacement[position:])
    return tuple(piece for piece in pieces if piece != "")


def _group_number(compiled: Any, ref: str) -> int:
    if ref.isascii() and ref.isdigit():
        index = int(ref)
        if index > compiled.groups:
            raise ValueError(f"refers to group {index} but the pattern has {compiled.groups}")
        return index
    if ref not in compiled.groupindex:
        raise ValueError(f"refers to group {ref!r} which the pattern does not define")
    return int(compiled.groupindex[ref])


class RegexRule(_Model):
    op: Literal["regex"]
    pattern: str
    replacement: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        # RE2 runs in linear time, so no pattern can stall a sync on a
        # crafted username; what it cannot compile is a settings error.
        try:
            _compile(value)
        except re2.error as exc:
            detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            raise _invalid(f"not a valid regular expression: {detail}") from None
        return value

    @field_validator("replacement")
    @classmethod
    def _groups_exist(cls, value: str, info: ValidationInfo) -> str:
        pattern = info.data.get("pattern")
        if pattern is None:  # the pattern's own error is already reported
            return value
        try:
            _parse_replacement(pattern, value)
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        return value

    @property
    def compiled(self) -> Any:
        """The RE2 pattern, compiled once per process (`re2._Regexp`)."""
        return _compile(self.pattern)

    def apply(self, value: str) -> str:
        """Replace every match in `value`, expanding group references."""
        return apply_regex(self.pattern, self.replacement, value)


def apply_regex(pattern: str, replacement: str, value: str) -> str:
    """`re.sub` semantics on RE2, for a pattern and replacement that validated."""
    pieces = _parse_replacement(pattern, replacement)

    def expand(match: Any) -> str:
        return "".join(piece if isinstance(piece, str) else match.group(piece) or "" for piece in pieces)

    return str(_compile(pattern).sub(expand, value))


UsernameRule = Annotated[
    LowercaseRule
    | UppercaseRule
    | StripDomainRule
    | PrefixRule
    | SuffixRule
    | ReplaceRule
    | TruncateRule
    | RegexRule,
    Field(discriminator="op"),
]


# ------------------------------------------------------------------- settings


class RoleMapping(_Model):
    """Product role per source role; a key not given keeps its default."""

    teacher: ProductRole = "Teacher 1"
    aide: ProductRole = "Teacher 2"
    administrator: ProductRole = "School Admin"

    def for_role(self, role: SourceRole) -> ProductRole:
        mapped: ProductRole = getattr(self, role)
        return mapped


class DistrictSettings(_Model):
    source: Source
    username_source: bool = False
    username_rules: list[UsernameRule] = Field(default_factory=list)
    auto_create_schools: bool = True
    class_name_fields: Annotated[list[ClassNameField], AfterValidator(_check_unique)] = Field(
        default_factory=list
    )
    daily_sync_start: SyncTime = "02:00"
    timezone: TimeZoneName = "America/Chicago"
    import_admins: bool = False
    role_mapping: RoleMapping = Field(default_factory=RoleMapping)
    sync_mode: Literal["incremental", "full"] = "incremental"
    max_delete_percent: float = Field(default=10.0, ge=0, le=100)
    future_class_lead_days: int = Field(default=15, ge=0, le=365)
    # IAM principals that may call the API for this district (api/access.py).
    api_callers: Annotated[list[ApiCaller], AfterValidator(_check_unique)] = Field(
        default_factory=list, max_length=100
    )

    @property
    def sync_time(self) -> time:
        hour, minute = self.daily_sync_start.split(":")
        return time(int(hour), int(minute))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def to_json(self) -> str:
        """The camelCase JSON document, as a district writes it."""
        return self.model_dump_json(by_alias=True)


# -------------------------------------------------------------------- parsing


class SettingsIssue(TypedDict):
    key: str
    message: str


class SettingsRejectedError(SettingsError):
    """A refused settings document; `errors` lists each bad key and why."""

    def __init__(self, errors: list[SettingsIssue]) -> None:
        self.errors = errors
        rendered = "; ".join(f"{e['key']}: {e['message']}" if e["key"] else e["message"] for e in errors)
        super().__init__(f"settings rejected: {rendered}")


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would keep the last of two equal keys without a word; an
    # administrator who wrote both meant one of them.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _load_json(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SettingsRejectedError([{"key": "", "message": "not valid UTF-8 text"}]) from None
    try:
        return json.loads(text.removeprefix("\ufeff"), object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        raise SettingsRejectedError([{"key": "", "message": message}]) from None
    except _DuplicateKeyError as exc:
        raise SettingsRejectedError([{"key": exc.key, "message": "given more than once"}]) from None


def parse_settings(text: str | bytes) -> DistrictSettings:
    """Validate a settings document; raise `SettingsRejectedError` naming every bad key."""
    data = _load_json(text)
    try:
        return DistrictSettings.model_validate(data)
    except ValidationError as exc:
        raise SettingsRejectedError([_issue(error, data) for error in exc.errors()]) from None


# Discriminated unions put the chosen tag into an error's location; these are
# the keys that carry the tag in the document.
_DISCRIMINATORS = {"source": "type", "usernameRules": "op"}
_TAG_NAMES = {"source": ("source type", SOURCE_TYPES), "usernameRules": ("rule op", RULE_OPS)}


def _key_path(loc: tuple[int | str, ...], data: Any) -> str:
    """`('usernameRules', 1, 'regex', 'pattern')` → `usernameRules[1].pattern`."""
    path = ""
    node = data
    for element in loc:
        if isinstance(element, int):
            path += f"[{element}]"
            node = node[element] if isinstance(node, list) and element < len(node) else None
            continue
        if isinstance(node, dict) and element not in node and element in _tag_values(node):
            continue  # the union's tag, not a key of the document
        if isinstance(node, dict) and element not in node:
            # A missing key that pydantic reports by its Python name.
            element = to_camel(element)
        path += f".{element}" if path else element
        node = node.get(element) if isinstance(node, dict) else None
    return path


def _tag_values(node: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(node.get(key) for key in set(_DISCRIMINATORS.values()))


def _issue(error: ErrorDetails, data: Any) -> SettingsIssue:
    loc = tuple(error["loc"])
    key = _key_path(loc, data)
    root = str(loc[0]) if loc else ""
    kind = error["type"]
    given = error.get("input")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        key = f"{key}.{_DISCRIMINATORS[root]}"
        noun, expected = _TAG_NAMES[root]
        if kind == "union_tag_invalid":
            tag = error.get("ctx", {}).get("tag")
            return {"key": key, "message": f"unknown {noun} {tag!r} (expected one of {', '.join(expected)})"}
        return {"key": key, "message": f"required (one of {', '.join(expected)})"}
    if kind == "extra_forbidden":
        if root == "roleMapping" and len(loc) == 2:
            return {
                "key": key,
                "message": f"unknown role {loc[1]!r} (expected one of {', '.join(SOURCE_ROLES)})",
            }
        return {"key": key, "message": "unknown key"}
    if kind == "missing":
        return {"key": key, "message": "required"}
    if kind == "literal_error" and root == "roleMapping":
        return {"key": key, "message": f"unknown role {given!r} (expected one of {', '.join(PRODUCT_ROLES)})"}
    if kind == "literal_error":
        expected_text = error.get("ctx", {}).get("expected", "")
        return {"key": key, "message": f"{given!r} is not allowed (expected {expected_text})"}
    if kind == "invalid_setting":
        return {"key": key, "message": error["msg"]}
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return {"key": key, "message": _with_given("expected a JSON object", given)}
    if kind == "list_type":
        return {"key": key, "message": _with_given("expected a JSON list", given)}
    message = error["msg"][:1].lower() + error["msg"][1:]
    return {"key": key, "message": _with_given(message, given)}


def _with_given(message: str, given: Any) -> str:
    if isinstance(given, str):
        shown = given if len(given) <= 60 else given[:57] + "..."
        return f"{message} (got {shown!r})"
    if isinstance(given, int | float | bool) or given is None:
        return f"{message} (got {json.dumps(given)})"
    return message


# ----------------------------------------------------------- district and names


def is_valid_district_id(district_id: str) -> bool:
    return bool(_DISTRICT_ID.fullmatch(district_id))


def validate_district_id(district_id: str) -> str:
    """Return the id, or raise `BadRequestError` for an id that is not one."""
    if not is_valid_district_id(district_id):
        raise BadRequestError(
            f"invalid district id {district_id!r}: 1 to {MAX_DISTRICT_ID_LENGTH} letters, digits, "
            "'_' or '-', starting with a letter or digit"
        )
    return district_id


def settings_parameter_name(district_id: str, prefix: str = SETTINGS_PREFIX) -> str:
    return f"{prefix}{validate_district_id(district_id)}/settings"


def district_from_parameter_name(name: str, prefix: str = SETTINGS_PREFIX) -> str | None:
    """The district whose settings parameter this is; None for any other parameter."""
    if not name.startswith(prefix):
        return None
    district_id, _, leaf = name[len(prefix) :].partition("/")
    if leaf != "settings" or not is_valid_district_id(district_id):
        return None
    return district_id
