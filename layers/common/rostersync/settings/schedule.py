"""The district's daily schedule in EventBridge Scheduler.

The schedule's cron runs in the district's own IANA time zone
(`ScheduleExpressionTimezone`): Scheduler evaluates it there, so "02:00" stays
02:00 local across daylight-saving changes without any arithmetic here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from rostersync.settings.model import SCHEDULE_NAME_PREFIX, DistrictSettings, validate_district_id

if TYPE_CHECKING:
    from mypy_boto3_scheduler import EventBridgeSchedulerClient
else:
    EventBridgeSchedulerClient = Any


def schedule_name(district_id: str) -> str:
    return f"{SCHEDULE_NAME_PREFIX}{validate_district_id(district_id)}"


def schedule_expression(settings: DistrictSettings) -> str:
    """`cron(minute hour * * ? *)`: every day at the district's sync start."""
    start = settings.sync_time
    return f"cron({start.minute} {start.hour} * * ? *)"


def _target(district_id: str, target_arn: str, role_arn: str) -> dict[str, Any]:
    message = {"type": "start", "districtId": district_id, "trigger": "schedule"}
    target: dict[str, Any] = {"Arn": target_arn, "RoleArn": role_arn, "Input": json.dumps(message)}
    if target_arn.endswith(".fifo"):
        # A FIFO queue refuses messages without a group; one group per district
        # keeps a district's starts in order without serialising districts.
        target["SqsParameters"] = {"MessageGroupId": district_id}
    return target


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def upsert_schedule(
    client: EventBridgeSchedulerClient,
    district_id: str,
    settings: DistrictSettings,
    *,
    target_arn: str,
    role_arn: str,
    group: str,
) -> Literal["created", "updated"]:
    """Create the district's schedule, or replace it with the current settings."""
    request: dict[str, Any] = {
        "Name": schedule_name(district_id),
        "GroupName": group,
        "Description": f"rostersync daily sync of district {district_id}",
        "ScheduleExpression": schedule_expression(settings),
        "ScheduleExpressionTimezone": settings.timezone,
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": _target(district_id, target_arn, role_arn),
        "State": "ENABLED",
    }
    # Update first: after the first change of a district it is the usual case.
    try:
        client.update_schedule(**request)
        return "updated"
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
    try:
        client.create_schedule(**request)
        return "created"
    except ClientError as exc:
        # A concurrent change of the same district created it in between.
        if _error_code(exc) != "ConflictException":
            raise
    client.update_schedule(**request)
    return "updated"


def delete_schedule(client: EventBridgeSchedulerClient, district_id: str, group: str) -> bool:
    """Delete the district's schedule; False when there was none (not an error)."""
    try:
        client.delete_schedule(Name=schedule_name(district_id), GroupName=group)
    except ClientError as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            return False
        raise
    return True
