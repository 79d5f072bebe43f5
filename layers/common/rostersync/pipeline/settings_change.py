"""Apply a change of a district's settings parameter.

An EventBridge "Parameter Store Change" event only says *that* a parameter
changed. Events may arrive late, twice or out of order, so the parameter is
read as it is now and the district is brought in line with that: present and
valid → stored as last good and scheduled; present and invalid → refused,
recorded, and the last good settings and schedule left in force; absent →
schedule and settings removed. Handling an event twice, or an old event late,
therefore converges on the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from rostersync.config import Config
from rostersync.errors import RostersyncError
from rostersync.settings.model import SettingsRejectedError, district_from_parameter_name, parse_settings
from rostersync.settings.schedule import delete_schedule, schedule_name, upsert_schedule
from rostersync.store import settings as settings_store

if TYPE_CHECKING:
    from mypy_boto3_scheduler import EventBridgeSchedulerClient
    from mypy_boto3_ssm import SSMClient
else:
    EventBridgeSchedulerClient = SSMClient = Any

logger = Logger(service="rostersync", child=True)

# LabelParameterVersion and the like leave the value as it was.
_VALUE_OPERATIONS = frozenset({"Create", "Update", "Delete"})


class ParameterChangeDetail(BaseModel):
    name: str
    type: str
    operation: str
    description: str | None = None


class ParameterChangeEvent(EventBridgeModel):
    """EventBridge `aws.ssm` / "Parameter Store Change"."""

    detail: ParameterChangeDetail


class SettingsOutcome(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    district_id: str | None
    action: Literal["applied", "rejected", "deleted", "ignored"]
    message: str
    parameter_version: int | None = None


@dataclass(frozen=True)
class _Parameter:
    type: str
    value: str
    version: int
    modified_at: datetime


def handle_parameter_change(
    name: str,
    operation: str,
    *,
    ssm: SSMClient,
    scheduler: EventBridgeSchedulerClient,
    config: Config,
) -> SettingsOutcome:
    """Bring the district named by parameter `name` in line with the parameter as it is now."""
    district_id = district_from_parameter_name(name, prefix=config.settings_prefix)
    if district_id is None:
        return SettingsOutcome(
            district_id=None, action="ignored", message=f"{name} is not a district settings parameter"
        )
    if operation not in _VALUE_OPERATIONS:
        return SettingsOutcome(
            district_id=district_id, action="ignored", message=f"{operation} does not change the settings"
        )
    parameter = _read_parameter(ssm, name)
    if parameter is None:
        return _remove(district_id, scheduler=scheduler, config=config)
    return _apply(district_id, parameter, scheduler=scheduler, config=config)


def _read_parameter(ssm: SSMClient, name: str) -> _Parameter | None:
    try:
        # Never decrypted: a SecureString here is refused, not read.
        found = ssm.get_parameter(Name=name, WithDecryption=False)["Parameter"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    return _Parameter(
        type=found["Type"],
        value=found["Value"],
        version=int(found["Version"]),
        modified_at=found["LastModifiedDate"],
    )


def _apply(
    district_id: str, parameter: _Parameter, *, scheduler: EventBridgeSchedulerClient, config: Config
) -> SettingsOutcome:
    _require_schedule_target(config)
    if parameter.type != "String":
        return _reject(district_id, parameter, _wrong_type_message(parameter.type))
    try:
        settings = parse_settings(parameter.value)
    except SettingsRejectedError as exc:
        return _reject(district_id, parameter, str(exc))

    stored = settings_store.save_last_good(
        district_id, settings, parameter.version, parameter_modified_at=parameter.modified_at
    )
    if not stored:
        # A concurrent handler already applied a newer revision; its schedule stands.
        return SettingsOutcome(
            district_id=district_id,
            action="ignored",
            message=f"version {parameter.version} is older than the settings in force",
            parameter_version=parameter.version,
        )
    upsert_schedule(
        scheduler,
        district_id,
        settings,
        target_arn=config.run_queue_arn,
        role_arn=config.scheduler_role_arn,
        group=config.scheduler_group,
    )
    settings_store.clear_settings_error(
        district_id, parameter.version, parameter_modified_at=parameter.modified_at
    )
    logger.info(
        "settings applied",
        extra={"district_id": district_id, "parameter_version": parameter.version},
    )
    return SettingsOutcome(
        district_id=district_id,
        action="applied",
        message=(
            f"version {parameter.version} applied: {schedule_name(district_id)} runs daily at "
            f"{settings.daily_sync_start} {settings.timezone}"
        ),
        parameter_version=parameter.version,
    )


def _require_schedule_target(config: Config) -> None:
    # Checked before anything is stored, so a deployment without these fails
    # loudly (and the event is retried) instead of half-applying settings.
    if not config.run_queue_arn or not config.scheduler_role_arn:
        raise RostersyncError("run_queue_arn and scheduler_role_arn must be configured to schedule syncs")


def _wrong_type_message(parameter_type: str) -> str:
    message = f"settings rejected: the settings parameter must be a String parameter, not {parameter_type}"
    if parameter_type == "SecureString":
        # Settings hold no secrets; a SecureString here usually means the
        # credentials were written to the settings name by mistake.
        message += " (secrets belong in the parameter named by source.credentialsParameter)"
    return message


def _reject(district_id: str, parameter: _Parameter, message: str) -> SettingsOutcome:
    # The message names keys and the administrator's own values; settings
    # carry no secrets, and a SecureString's value is never read.
    settings_store.record_rejected_change(
        district_id, parameter.version, message, parameter_modified_at=parameter.modified_at
    )
    logger.warning(
        "settings change rejected; the last good settings stay in force",
        extra={"district_id": district_id, "parameter_version": parameter.version, "reason": message},
    )
    return SettingsOutcome(
        district_id=district_id, action="rejected", message=message, parameter_version=parameter.version
    )


def _remove(district_id: str, *, scheduler: EventBridgeSchedulerClient, config: Config) -> SettingsOutcome:
    had_schedule = delete_schedule(scheduler, district_id, config.scheduler_group)
    settings_store.delete_settings(district_id)
    logger.info("settings deleted", extra={"district_id": district_id, "had_schedule": had_schedule})
    return SettingsOutcome(
        district_id=district_id,
        action="deleted",
        message=f"settings deleted; {schedule_name(district_id)} removed",
    )
