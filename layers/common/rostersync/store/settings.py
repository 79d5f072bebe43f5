"""Last good settings and the last refused change, in the roster table.

Settings events can arrive out of order and be handled concurrently, so every
write is conditional on the parameter's *revision*: its last-modified time and
version, as one sortable string. The time orders a parameter that was deleted
and created again (its version restarts at 1); the version orders two changes
within the same instant. An older revision never overwrites a newer one.

Items (see `store/keys.py`):
- `DISTRICT#{d}` / `SETTINGS`: `settings` (JSON text), `version`,
  `parameterModifiedAt`, `revision`, `savedAt`.
- `DISTRICT#{d}` / `DISTRICT`: `lastSettingsError` = `{version, message, at, revision}`
  while the newest change is a refused one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from rostersync.config import get_config
from rostersync.settings.model import DistrictSettings, parse_settings
from rostersync.store.keys import DISTRICT_SK, SETTINGS_SK, district_pk
from rostersync.store.table import table as _table


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instant(moment: datetime) -> str:
    # Fixed width (microseconds, UTC) so that strings sort like the instants.
    if moment.tzinfo is None:
        raise ValueError("parameter_modified_at must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def revision(parameter_version: int, parameter_modified_at: datetime) -> str:
    """A string that sorts like (modified time, version)."""
    return f"{_instant(parameter_modified_at)}#{parameter_version:012d}"


def _key(district_id: str, sk: str) -> dict[str, str]:
    return {"pk": district_pk(district_id), "sk": sk}


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def save_last_good(
    district_id: str,
    settings: DistrictSettings,
    parameter_version: int,
    *,
    parameter_modified_at: datetime,
) -> bool:
    """Store settings as the district's last good; False if a newer revision is stored."""
    rev = revision(parameter_version, parameter_modified_at)
    try:
        _table().put_item(
            Item={
                **_key(district_id, SETTINGS_SK),
                "settings": settings.to_json(),
                "version": parameter_version,
                "parameterModifiedAt": _instant(parameter_modified_at),
                "revision": rev,
                "savedAt": _now(),
            },
            # `<=`: a redelivered event rewrites the same revision harmlessly.
            ConditionExpression=(
                "attribute_not_exists(pk) OR attribute_not_exists(revision) OR revision <= :r"
            ),
            ExpressionAttributeValues={":r": rev},
        )
    except ClientError as exc:
        if _is_condition_failure(exc):
            return False
        raise
    return True


def load_last_good(district_id: str) -> DistrictSettings | None:
    """The settings in force, or None. Stored settings are validated again on
    load, so a model change that refuses them raises `SettingsRejectedError`."""
    response = _table().get_item(Key=_key(district_id, SETTINGS_SK), ConsistentRead=True)
    item = response.get("Item")
    if item is None:
        return None
    return parse_settings(str(item["settings"]))


def record_rejected_change(
    district_id: str,
    parameter_version: int,
    message: str,
    *,
    parameter_modified_at: datetime,
) -> bool:
    """Keep the refusal on the district item; False if a newer change is already recorded.

    One transaction checks that no newer good settings are stored, so a slow
    handler of an old bad version cannot flag a district whose newer
    settings were accepted.
    """
    rev = revision(parameter_version, parameter_modified_at)
    error = {"version": parameter_version, "message": message, "at": _now(), "revision": rev}
    table_name = get_config().roster_table_name
    newer_good = "attribute_not_exists(pk) OR attribute_not_exists(revision) OR revision < :r"
    newer_error = "attribute_not_exists(lastSettingsError) OR lastSettingsError.revision <= :r"
    try:
        # The resource's own client, which takes plain Python values like the table does.
        _table().meta.client.transact_write_items(
            TransactItems=[
                {
                    "ConditionCheck": {
                        "TableName": table_name,
                        "Key": _key(district_id, SETTINGS_SK),
                        "ConditionExpression": newer_good,
                        "ExpressionAttributeValues": {":r": rev},
                    }
                },
                {
                    "Update": {
                        "TableName": table_name,
                        "Key": _key(district_id, DISTRICT_SK),
                        "UpdateExpression": "SET lastSettingsError = :e",
                        "ConditionExpression": newer_error,
                        "ExpressionAttributeValues": {":e": error, ":r": rev},
                    }
                },
            ]
        )
    except ClientError as exc:
        if _only_conditions_failed(exc):
            return False
        raise
    return True


def _only_conditions_failed(exc: ClientError) -> bool:
    # A transaction can also be cancelled by a conflicting write; that one must
    # surface (and the event be retried) rather than pass for "newer exists".
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons", [])
    codes = {reason.get("Code") for reason in reasons} - {"None", None}
    return bool(codes) and codes <= {"ConditionalCheckFailed"}


def clear_settings_error(
    district_id: str,
    parameter_version: int,
    *,
    parameter_modified_at: datetime,
) -> None:
    """Forget a refusal that this good revision supersedes (a newer one stays)."""
    rev = revision(parameter_version, parameter_modified_at)
    try:
        _table().update_item(
            Key=_key(district_id, DISTRICT_SK),
            UpdateExpression="REMOVE lastSettingsError",
            # Also false when there is no error (or no item): nothing to do.
            ConditionExpression="lastSettingsError.revision <= :r",
            ExpressionAttributeValues={":r": rev},
        )
    except ClientError as exc:
        if not _is_condition_failure(exc):
            raise


def load_settings_error(district_id: str) -> dict[str, Any] | None:
    """The district's last refused change `{version, message, at}`, if any is pending."""
    response = _table().get_item(
        Key=_key(district_id, DISTRICT_SK),
        ConsistentRead=True,
        ProjectionExpression="lastSettingsError",
    )
    error = response.get("Item", {}).get("lastSettingsError")
    if not isinstance(error, dict):
        return None
    return {"version": int(error["version"]), "message": str(error["message"]), "at": str(error["at"])}


def delete_settings(district_id: str) -> None:
    """Forget the district's settings and any refusal; idempotent."""
    table = _table()
    table.delete_item(Key=_key(district_id, SETTINGS_SK))
    try:
        table.update_item(
            Key=_key(district_id, DISTRICT_SK),
            UpdateExpression="REMOVE lastSettingsError",
            # Without the condition an absent district item would be created empty.
            ConditionExpression="attribute_exists(pk)",
        )
    except ClientError as exc:
        if not _is_condition_failure(exc):
            raise
