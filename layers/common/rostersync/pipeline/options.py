"""From a district's settings to what each stage reads from them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from rostersync.roster.compute import DEFAULT_ROLE_MAPPING, RosterOptions


def settings_doc(settings: Any) -> dict[str, Any]:
    """The settings as their JSON document (SPEC 3 names), whatever model carries them."""
    return (
        settings.model_dump(by_alias=True, mode="json") if hasattr(settings, "model_dump") else dict(settings)
    )


def roster_options(settings: Any) -> RosterOptions:
    doc = settings_doc(settings)
    return RosterOptions(
        auto_create_schools=doc.get("autoCreateSchools", True),
        class_name_fields=tuple(doc.get("classNameFields") or ()),
        username_source=doc.get("usernameSource", False),
        username_rules=tuple(doc.get("usernameRules") or ()),
        import_admins=doc.get("importAdmins", False),
        role_mapping={**DEFAULT_ROLE_MAPPING, **(doc.get("roleMapping") or {})},
        future_class_lead_days=int(doc.get("futureClassLeadDays", 15)),
    )


def district_today(settings: Any, now: datetime) -> date:
    """Today as the district sees it: dates in a roster are the district's local dates."""
    return now.astimezone(ZoneInfo(settings_doc(settings).get("timezone") or "UTC")).date()
