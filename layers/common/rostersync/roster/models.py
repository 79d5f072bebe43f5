"""Normalized roster records: what every source becomes before any rule runs.

Sources differ in small ways (SPEC 4) and all of them are accepted here, in
one place: 1.2's `roles[]`, booleans as JSON booleans or strings, references
as objects or bare ids, the legacy status `inactive` (read as `tobedeleted`),
periods as a list or a comma-separated string. A record that cannot be read
raises `RecordError` with a reason an IT administrator can act on.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

Status = Literal["active", "tobedeleted"]

# 1.2 splits administrators into several roles; they all count as administrator.
ADMIN_ROLES = frozenset(
    {"administrator", "districtAdministrator", "siteAdministrator", "systemAdministrator", "principal"}
)
NEVER_IMPORTED_ROLES = frozenset({"parent", "guardian", "relative", "proctor", "counselor"})
# Every role OneRoster 1.1 and 1.2 define; 1.2's `ext:` extension roles are
# known too (never imported). Anything else is a data error, reported.
KNOWN_ROLES = frozenset({"student", "teacher", "aide"}) | ADMIN_ROLES | NEVER_IMPORTED_ROLES


class RecordError(ValueError):
    """A source record that cannot be used; `reason` goes into the run record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    sourcedId: str
    status: Status = "active"
    dateLastModified: datetime | None = None

    @field_validator("sourcedId", mode="before")
    @classmethod
    def _sourced_id(cls, value: Any) -> str:
        if not isinstance(value, str | int) or not str(value).strip():
            raise ValueError("missing")
        text = str(value).strip()
        if len(text) > 255:
            raise ValueError("sourcedId longer than 255 characters")
        if _HIDDEN.search(text) or _BREAKS.search(text):
            raise ValueError("contains control characters")
        return text

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> str:
        if value is None or value == "":
            return "active"
        text = str(value).strip().lower()
        if text == "inactive":  # legacy 1.0 status
            return "tobedeleted"
        if text not in ("active", "tobedeleted"):
            raise ValueError(f"unknown status {str(value)[:40]!r}")
        return text

    @field_validator("dateLastModified", mode="before")
    @classmethod
    def _dlm(cls, value: Any) -> Any:
        return value or None

    @field_validator("dateLastModified")
    @classmethod
    def _dlm_utc(cls, value: datetime | None) -> datetime | None:
        # A timestamp without a zone is read as UTC, so every two can be compared.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    @property
    def deleted(self) -> bool:
        return self.status == "tobedeleted"


class Org(Record):
    name: str = ""
    type: str = ""
    identifier: str = ""
    parentId: str | None = None


class AcademicSession(Record):
    title: str = ""
    type: str = ""
    startDate: date | None = None
    endDate: date | None = None
    parentId: str | None = None


class RosterClass(Record):
    title: str
    classCode: str = ""
    classType: str = ""
    schoolId: str
    termIds: tuple[str, ...] = ()
    periods: tuple[str, ...] = ()
    courseId: str | None = None


class User(Record):
    username: str = ""
    enabledUser: bool = True
    givenName: str = ""
    familyName: str = ""
    role: str
    email: str = ""
    orgIds: tuple[str, ...] = ()


class Enrollment(Record):
    userId: str
    classId: str
    schoolId: str | None = None
    role: str
    primary: bool = False
    beginDate: date | None = None
    endDate: date | None = None

    @field_validator("endDate")
    @classmethod
    def _ends_after_it_begins(cls, value: date | None, info: ValidationInfo) -> date | None:
        begin = info.data.get("beginDate")
        if value is not None and begin is not None and value < begin:
            raise ValueError("before beginDate")
        return value


ENTITY_MODELS: dict[str, type[Record]] = {
    "orgs": Org,
    "academicSessions": AcademicSession,
    "classes": RosterClass,
    "users": User,
    "enrollments": Enrollment,
}


# ---- reading the source's shapes -------------------------------------------------


MAX_REFERENCES = 256  # per list (a user's orgs, a class's terms): keeps a record well inside one item


def _ref_id(value: Any, key: str = "reference") -> str | None:
    if isinstance(value, dict):
        value = value.get("sourcedId")
    if value is None:
        return None
    text = str(value).strip()
    if len(text) > 255:  # no sourcedId is longer: an enormous reference is refused, not stored
        raise RecordError(f"{key}: reference longer than 255 characters")
    return text or None


def _ref_ids(value: Any, key: str = "references") -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        items = [value]
    if len(items) > MAX_REFERENCES:
        raise RecordError(f"{key}: more than {MAX_REFERENCES} references")
    return tuple(i for i in (_ref_id(v, key) for v in items) if i)


def _bool(value: Any, default: bool, key: str = "value") -> bool:
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return default
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise RecordError(f"{key}: not a boolean: {str(value)[:40]!r}")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


# Text a person reads (names, titles, usernames) is bounded, and loses the
# characters that only hide or disguise it: C0/C1 controls (NUL, BEL, ESC...)
# and the bidi embedding/override/isolate marks of "Trojan Source" spoofing.
# Tab and line breaks become spaces. Letters of any script, combining marks,
# emoji and ZWJ/ZWNJ are kept as sent; nothing is ever evaluated (a leading
# `=`, `+`, `-` or `@` is data: see docs/bad-input.md).
MAX_TEXT_LENGTH = 255
_HIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_BREAKS = re.compile("[\t\n\r]+")


def _field_text(raw: dict[str, Any], key: str, limit: int = MAX_TEXT_LENGTH, *, clean: bool = True) -> str:
    """A text field, cleaned and bounded; RecordError naming the field (never its value)."""
    value = raw.get(key)
    if value is None:
        return ""
    if isinstance(value, str) and value.isascii() and value.isprintable():
        # Nearly every value: printable ASCII has nothing to clean or normalize (hot path).
        text = value.strip()
        if len(text) > limit:
            raise RecordError(f"{key}: longer than {limit} characters")
        return text
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    else:
        raise RecordError(f"{key}: expected text, got {type(value).__name__}")
    if len(text) > 4 * limit:  # reject before scanning an enormous value
        raise RecordError(f"{key}: longer than {limit} characters")
    if _HIDDEN.search(text) or _BREAKS.search(text):
        if not clean:  # an identity (an email) is not repaired by guessing
            raise RecordError(f"{key}: contains control characters")
        text = _HIDDEN.sub("", _BREAKS.sub(" ", text))
    text = text.strip()
    if not text.isascii():  # one form, so NFC and NFD spellings of a name or email are one
        text = unicodedata.normalize("NFC", text)
    if len(text) > limit:
        raise RecordError(f"{key}: longer than {limit} characters")
    return text


def _primary_role(raw: dict[str, Any]) -> str:
    roles = raw.get("roles")
    if isinstance(roles, list) and roles:
        primary = [r for r in roles if isinstance(r, dict) and r.get("roleType") == "primary"]
        chosen = (primary or [r for r in roles if isinstance(r, dict)] or [{}])[0]
        return _role(chosen)
    return _role(raw)


def _role(raw: dict[str, Any]) -> str:
    role = _field_text(raw, "role", 64)
    if role and role not in KNOWN_ROLES and not role.startswith("ext:"):
        raise RecordError(f"role: unknown role {role[:40]!r}")
    return role


def _user_orgs(raw: dict[str, Any]) -> tuple[str, ...]:
    """1.1's `orgs`; 1.2 names them in `roles[].org` and `primaryOrg` instead."""
    ids = list(_ref_ids(raw.get("orgs"), "orgs"))
    roles = raw.get("roles")
    if isinstance(roles, list):
        ids += [
            i
            for i in (
                _ref_id(r.get("org"), "roles.org") for r in roles[:MAX_REFERENCES] if isinstance(r, dict)
            )
            if i
        ]
    primary = _ref_id(raw.get("primaryOrg"), "primaryOrg")
    if primary:
        ids.append(primary)
    return tuple(dict.fromkeys(ids))


def _periods(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        raise RecordError(f"periods: expected a list or text, got {type(value).__name__}")
    if len(items) > 64:
        raise RecordError("periods: more than 64")
    return tuple(p for p in (_field_text({"periods": i}, "periods", 64) for i in items) if p)


def _shape(entity: str, raw: dict[str, Any]) -> dict[str, Any]:
    base = {
        "sourcedId": raw.get("sourcedId"),
        "status": raw.get("status"),
        "dateLastModified": raw.get("dateLastModified"),
    }
    if entity == "orgs":
        return base | {
            "name": _field_text(raw, "name"),
            "type": _field_text(raw, "type"),
            "identifier": _field_text(raw, "identifier"),
            "parentId": _ref_id(raw.get("parent"), "parent"),
        }
    if entity == "academicSessions":
        return base | {
            "title": _field_text(raw, "title"),
            "type": _field_text(raw, "type"),
            "startDate": raw.get("startDate") or None,
            "endDate": raw.get("endDate") or None,
            "parentId": _ref_id(raw.get("parent"), "parent"),
        }
    if entity == "classes":
        return base | {
            "title": _field_text(raw, "title"),
            "classCode": _field_text(raw, "classCode"),
            "classType": _field_text(raw, "classType"),
            "schoolId": _ref_id(raw.get("school"), "school"),
            "termIds": _ref_ids(raw.get("terms"), "terms"),
            "periods": _periods(raw.get("periods")),
            "courseId": _ref_id(raw.get("course"), "course"),
        }
    if entity == "users":
        return base | {
            "username": _field_text(raw, "username"),
            "enabledUser": _bool(raw.get("enabledUser"), True, "enabledUser"),
            "givenName": _field_text(raw, "givenName"),
            "familyName": _field_text(raw, "familyName"),
            "role": _primary_role(raw),
            # RFC 5321's 254; an email is an identity: never repaired, refused.
            "email": _field_text(raw, "email", 254, clean=False).lower(),
            "orgIds": _user_orgs(raw),
        }
    if entity == "enrollments":
        return base | {
            "userId": _ref_id(raw.get("user"), "user"),
            "classId": _ref_id(raw.get("class"), "class"),
            "schoolId": _ref_id(raw.get("school"), "school"),
            "role": _role(raw),
            "primary": _bool(raw.get("primary"), False, "primary"),
            "beginDate": raw.get("beginDate") or None,
            "endDate": raw.get("endDate") or None,
        }
    raise RecordError(f"unknown entity {entity!r}")


def _reason(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "record"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in ("missing", "string_type") and item.get("input") is None:
            message = "missing"
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


_DELETION_OPTIONAL = ("title", "schoolId", "role", "userId", "classId")
# Fields an active record cannot do without (an empty string is as missing as none).
_REQUIRED_WHEN_ACTIVE = {
    "classes": ("title", "schoolId"),
    "users": ("role",),
    "enrollments": ("userId", "classId", "role"),
}


def normalize(entity: str, raw: Any) -> Record:
    """Read one raw source record into its normalized model, or raise RecordError."""
    if not isinstance(raw, dict):
        raise RecordError("record is not a JSON object")
    try:
        return _normalize(entity, raw)
    except RecordError:
        if str(raw.get("status") or "").strip().lower() not in ("tobedeleted", "inactive"):
            raise
        # A deletion whose other fields are unreadable (an unknown role...) still
        # deletes: its id and date are all a deletion needs.
        bare = {key: raw.get(key) for key in ("sourcedId", "status", "dateLastModified")}
        try:
            return _normalize(entity, bare)
        except RecordError:
            pass
        raise


def _normalize(entity: str, raw: dict[str, Any]) -> Record:
    shaped = _shape(entity, raw)
    if str(shaped.get("status") or "").strip().lower() in ("tobedeleted", "inactive"):
        # A deletion may carry little more than its id: that is enough to delete.
        for key in _DELETION_OPTIONAL:
            if key in shaped and not shaped[key]:
                shaped[key] = ""
    else:
        required = ("sourcedId", *_REQUIRED_WHEN_ACTIVE.get(entity, ()))
        missing = [key for key in required if shaped.get(key) in (None, "")]
        if missing:
            raise RecordError("; ".join(f"{key}: missing" for key in missing))
    try:
        return ENTITY_MODELS[entity].model_validate(shaped)
    except ValidationError as error:
        raise RecordError(_reason(error)) from None


def record_id(raw: Any) -> str:
    """The sourcedId of a raw record as best known, for naming it in a rejection."""
    if isinstance(raw, dict) and isinstance(raw.get("sourcedId"), str | int):
        # Shown, never stored as sent: control characters become U+FFFD.
        return _HIDDEN.sub("\ufffd", _text(raw.get("sourcedId"))[:255])
    return ""


def normalize_active(entity: str, record: Record) -> Record:
    """The same record read as active; ValueError when it lacks what an active one needs."""
    missing = [key for key in _REQUIRED_WHEN_ACTIVE.get(entity, ()) if not getattr(record, key, None)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return record.model_copy(update={"status": "active"})
