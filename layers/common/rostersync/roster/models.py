"""Normalized roster records: what every source becomes before any rule runs.

Sources differ in small ways (SPEC 4) and all of them are accepted here, in
one place: 1.2's `roles[]`, booleans as JSON booleans or strings, references
as objects or bare ids, the legacy status `inactive` (read as `tobedeleted`),
periods as a list or a comma-separated string. A record that cannot be read
raises `RecordError` with a reason an IT administrator can act on.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

Status = Literal["active", "tobedeleted"]

# 1.2 splits administrators into several roles; they all count as administrator.
ADMIN_ROLES = frozenset(
    {"administrator", "districtAdministrator", "siteAdministrator", "systemAdministrator", "principal"}
)
NEVER_IMPORTED_ROLES = frozenset({"parent", "guardian", "relative", "proctor", "counselor"})


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


ENTITY_MODELS: dict[str, type[Record]] = {
    "orgs": Org,
    "academicSessions": AcademicSession,
    "classes": RosterClass,
    "users": User,
    "enrollments": Enrollment,
}


# ---- reading the source's shapes -------------------------------------------------


def _ref_id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("sourcedId")
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _ref_ids(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        items = [value]
    return tuple(i for i in (_ref_id(v) for v in items) if i)


def _bool(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return default
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise RecordError(f"not a boolean: {str(value)[:40]!r}")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _primary_role(raw: dict[str, Any]) -> str:
    roles = raw.get("roles")
    if isinstance(roles, list) and roles:
        primary = [r for r in roles if isinstance(r, dict) and r.get("roleType") == "primary"]
        chosen = (primary or [r for r in roles if isinstance(r, dict)] or [{}])[0]
        return _text(chosen.get("role"))
    return _text(raw.get("role"))


def _user_orgs(raw: dict[str, Any]) -> tuple[str, ...]:
    """1.1's `orgs`; 1.2 names them in `roles[].org` and `primaryOrg` instead."""
    ids = list(_ref_ids(raw.get("orgs")))
    roles = raw.get("roles")
    if isinstance(roles, list):
        ids += [i for i in (_ref_id(r.get("org")) for r in roles if isinstance(r, dict)) if i]
    primary = _ref_id(raw.get("primaryOrg"))
    if primary:
        ids.append(primary)
    return tuple(dict.fromkeys(ids))


def _periods(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(p for p in (_text(i) for i in items) if p)


def _shape(entity: str, raw: dict[str, Any]) -> dict[str, Any]:
    base = {
        "sourcedId": raw.get("sourcedId"),
        "status": raw.get("status"),
        "dateLastModified": raw.get("dateLastModified"),
    }
    if entity == "orgs":
        return base | {
            "name": _text(raw.get("name")),
            "type": _text(raw.get("type")),
            "identifier": _text(raw.get("identifier")),
            "parentId": _ref_id(raw.get("parent")),
        }
    if entity == "academicSessions":
        return base | {
            "title": _text(raw.get("title")),
            "type": _text(raw.get("type")),
            "startDate": raw.get("startDate") or None,
            "endDate": raw.get("endDate") or None,
            "parentId": _ref_id(raw.get("parent")),
        }
    if entity == "classes":
        return base | {
            "title": _text(raw.get("title")),
            "classCode": _text(raw.get("classCode")),
            "classType": _text(raw.get("classType")),
            "schoolId": _ref_id(raw.get("school")),
            "termIds": _ref_ids(raw.get("terms")),
            "periods": _periods(raw.get("periods")),
            "courseId": _ref_id(raw.get("course")),
        }
    if entity == "users":
        return base | {
            "username": _text(raw.get("username")),
            "enabledUser": _bool(raw.get("enabledUser"), True),
            "givenName": _text(raw.get("givenName")),
            "familyName": _text(raw.get("familyName")),
            "role": _primary_role(raw),
            "email": _text(raw.get("email")).lower(),
            "orgIds": _user_orgs(raw),
        }
    if entity == "enrollments":
        return base | {
            "userId": _ref_id(raw.get("user")),
            "classId": _ref_id(raw.get("class")),
            "schoolId": _ref_id(raw.get("school")),
            "role": _text(raw.get("role")),
            "primary": _bool(raw.get("primary"), False),
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
    if isinstance(raw, dict):
        return _text(raw.get("sourcedId"))[:255]
    return ""


def normalize_active(entity: str, record: Record) -> Record:
    """The same record read as active; ValueError when it lacks what an active one needs."""
    missing = [key for key in _REQUIRED_WHEN_ACTIVE.get(entity, ()) if not getattr(record, key, None)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return record.model_copy(update={"status": "active"})
