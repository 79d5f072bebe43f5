"""The settings function against moto: SSM parameter changes drive the schedule and last good settings.

The moto server and table are local to this module on purpose; a shared
fixture that builds everything from template.yaml will replace them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from rostersync import aws as aws_clients
from rostersync.config import Config, get_config
from rostersync.errors import RostersyncError
from rostersync.pipeline.settings_change import SettingsOutcome, handle_parameter_change
from rostersync.settings.model import parse_settings, settings_parameter_name
from rostersync.store import settings as settings_store

ROOT = Path(__file__).resolve().parents[2]
TABLE = "rostersync-roster-test"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:rostersync-run"
ROLE_ARN = "arn:aws:iam::123456789012:role/rostersync-scheduler"
GROUP = "default"
DISTRICT = "lincoln"
NAME = settings_parameter_name(DISTRICT)

GOOD: dict[str, Any] = {
    "source": {
        "type": "oneroster",
        "baseUrl": "https://sis.example.org/ims/oneroster/v1p1",
        "version": "1.1",
        "auth": "oauth2",
        "tokenUrl": "https://sis.example.org/oauth/token",
        "credentialsParameter": "/rostersync/districts/lincoln/credentials",
    },
    "dailySyncStart": "02:00",
    "timezone": "America/Chicago",
}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def emulator(moto_endpoint: str) -> SimpleNamespace:
    """The test's own clients, bound to the server explicitly: made once per module."""

    bound: dict[str, Any] = {
        "endpoint_url": moto_endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    return SimpleNamespace(
        endpoint=moto_endpoint,
        ssm=boto3.client("ssm", **bound),
        scheduler=boto3.client("scheduler", **bound),
        dynamodb=boto3.client("dynamodb", **bound),
    )


@pytest.fixture
def aws(emulator: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A clean emulator holding only the roster table; the code under test pointed at it.

    The environment is set per test because the shared conftest gives every
    test that does not use its stack an environment without an endpoint.
    """
    requests.post(f"{emulator.endpoint}/moto-api/reset", timeout=10).raise_for_status()
    env = {
        "AWS_ENDPOINT_URL": emulator.endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "ROSTER_TABLE_NAME": TABLE,
        "RUN_QUEUE_ARN": QUEUE_ARN,
        "SCHEDULER_ROLE_ARN": ROLE_ARN,
        "SCHEDULER_GROUP": GROUP,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "SETTINGS_PREFIX"):
        monkeypatch.delenv(key, raising=False)
    get_config.cache_clear()
    aws_clients.reset()  # the store's shared resource must follow this endpoint
    emulator.dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return SimpleNamespace(ssm=emulator.ssm, scheduler=emulator.scheduler, config=get_config())


def write_parameter(aws: SimpleNamespace, value: str | dict[str, Any], *, kind: str = "String") -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    aws.ssm.put_parameter(Name=NAME, Value=text, Type=kind, Overwrite=True)


def change(aws: SimpleNamespace, operation: str = "Update", name: str = NAME) -> SettingsOutcome:
    return handle_parameter_change(name, operation, ssm=aws.ssm, scheduler=aws.scheduler, config=aws.config)


def schedule(aws: SimpleNamespace) -> dict[str, Any]:
    found = aws.scheduler.get_schedule(Name=f"rostersync-{DISTRICT}", GroupName=GROUP)
    return {key: value for key, value in found.items() if key != "ResponseMetadata"}


def schedule_exists(aws: SimpleNamespace) -> bool:
    try:
        schedule(aws)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
        return False
    return True


def apply_good(aws: SimpleNamespace, **overrides: Any) -> SettingsOutcome:
    write_parameter(aws, {**GOOD, **overrides})
    outcome = change(aws, "Create")
    assert outcome.action == "applied", outcome
    return outcome


# ---------------------------------------------------------------- good change


def test_good_settings_are_saved_and_scheduled_in_the_district_zone(aws: SimpleNamespace) -> None:
    write_parameter(aws, {**GOOD, "dailySyncStart": "06:30", "timezone": "America/New_York"})

    outcome = change(aws, "Create")

    assert outcome.action == "applied"
    assert outcome.district_id == DISTRICT
    assert outcome.parameter_version == 1
    stored = settings_store.load_last_good(DISTRICT)
    assert stored is not None
    assert stored.daily_sync_start == "06:30"
    found = schedule(aws)
    assert found["ScheduleExpression"] == "cron(30 6 * * ? *)"
    assert found["ScheduleExpressionTimezone"] == "America/New_York"
    assert found["State"] == "ENABLED"
    assert found["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert found["Target"]["Arn"] == QUEUE_ARN
    assert found["Target"]["RoleArn"] == ROLE_ARN
    assert json.loads(found["Target"]["Input"]) == {
        "type": "start",
        "districtId": DISTRICT,
        "trigger": "schedule",
    }
    assert settings_store.load_settings_error(DISTRICT) is None


def test_a_new_time_and_zone_update_the_schedule(aws: SimpleNamespace) -> None:
    apply_good(aws)

    outcome = apply_good(aws, dailySyncStart="21:15", timezone="Europe/London")

    assert outcome.parameter_version == 2
    found = schedule(aws)
    assert found["ScheduleExpression"] == "cron(15 21 * * ? *)"
    assert found["ScheduleExpressionTimezone"] == "Europe/London"
    stored = settings_store.load_last_good(DISTRICT)
    assert stored is not None
    assert (stored.daily_sync_start, stored.timezone) == ("21:15", "Europe/London")


def test_handling_the_same_change_twice_changes_nothing_more(aws: SimpleNamespace) -> None:
    apply_good(aws)
    first = schedule(aws)

    again = change(aws, "Update")

    assert again.action == "applied"
    assert schedule(aws)["ScheduleExpression"] == first["ScheduleExpression"]


# ----------------------------------------------------------------- bad change

BAD_CHANGES = [
    pytest.param({**GOOD, "dailySyncStart": "25:00"}, "dailySyncStart", id="bad-time"),
    pytest.param({**GOOD, "dailySyncStart": "2:00am"}, "dailySyncStart", id="am-pm-time"),
    pytest.param({**GOOD, "timezone": "Mars/Olympus"}, "timezone", id="unknown-zone"),
    pytest.param(
        {**GOOD, "roleMapping": {"principal": "School Admin"}}, "roleMapping.principal", id="role-key"
    ),
    pytest.param({**GOOD, "roleMapping": {"teacher": "Teacher 9"}}, "roleMapping.teacher", id="role-value"),
    pytest.param({**GOOD, "usernameRules": [{"op": "titlecase"}]}, "usernameRules[0].op", id="rule-op"),
    pytest.param(
        {**GOOD, "usernameRules": [{"op": "regex", "pattern": "(", "replacement": ""}]},
        "usernameRules[0].pattern",
        id="bad-regex",
    ),
    pytest.param({**GOOD, "colour": "red"}, "colour", id="unknown-key"),
    pytest.param(
        {**GOOD, "source": {k: v for k, v in GOOD["source"].items() if k != "tokenUrl"}},
        "source.tokenUrl",
        id="oauth2-without-token-url",
    ),
    pytest.param('{"source": {"type": "direct"},}', "not valid JSON", id="not-json"),
]


@pytest.mark.parametrize(("bad", "named"), BAD_CHANGES)
def test_a_bad_change_is_refused_and_the_last_good_stays_in_force(
    aws: SimpleNamespace, bad: str | dict[str, Any], named: str
) -> None:
    apply_good(aws)
    good_settings = settings_store.load_last_good(DISTRICT)
    good_schedule = schedule(aws)

    write_parameter(aws, bad)
    outcome = change(aws, "Update")

    assert outcome.action == "rejected"
    assert outcome.parameter_version == 2
    assert outcome.message.startswith("settings rejected: ")
    assert named in outcome.message
    assert settings_store.load_last_good(DISTRICT) == good_settings
    assert schedule(aws) == good_schedule
    error = settings_store.load_settings_error(DISTRICT)
    assert error is not None
    assert error["version"] == 2
    assert error["message"] == outcome.message


def test_a_bad_first_change_leaves_no_settings_and_no_schedule(aws: SimpleNamespace) -> None:
    write_parameter(aws, {**GOOD, "timezone": "Mars/Olympus"})

    outcome = change(aws, "Create")

    assert outcome.action == "rejected"
    assert settings_store.load_last_good(DISTRICT) is None
    assert not schedule_exists(aws)
    error = settings_store.load_settings_error(DISTRICT)
    assert error is not None
    assert "timezone" in error["message"]


def test_a_secure_string_is_refused_without_reading_it(aws: SimpleNamespace) -> None:
    apply_good(aws)
    good_schedule = schedule(aws)

    write_parameter(aws, '{"clientSecret": "s3cr3t"}', kind="SecureString")
    outcome = change(aws, "Update")

    assert outcome.action == "rejected"
    assert "must be a String parameter, not SecureString" in outcome.message
    assert "s3cr3t" not in outcome.message
    assert schedule(aws) == good_schedule


def test_the_refusal_is_logged_as_a_warning_with_the_district(
    aws: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    write_parameter(aws, {**GOOD, "colour": "red"})

    with caplog.at_level(logging.WARNING):
        change(aws, "Create")

    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].__dict__["district_id"] == DISTRICT
    assert "colour: unknown key" in warnings[0].__dict__["reason"]


def test_a_good_change_after_a_bad_one_clears_the_error(aws: SimpleNamespace) -> None:
    apply_good(aws)
    write_parameter(aws, {**GOOD, "timezone": "Mars/Olympus"})
    assert change(aws).action == "rejected"

    apply_good(aws, timezone="America/Denver")

    assert settings_store.load_settings_error(DISTRICT) is None
    assert schedule(aws)["ScheduleExpressionTimezone"] == "America/Denver"


# --------------------------------------------------------------------- delete


def test_delete_removes_the_schedule_and_the_settings(aws: SimpleNamespace) -> None:
    apply_good(aws)
    aws.ssm.delete_parameter(Name=NAME)

    outcome = change(aws, "Delete")

    assert outcome.action == "deleted"
    assert not schedule_exists(aws)
    assert settings_store.load_last_good(DISTRICT) is None
    assert change(aws, "Delete").action == "deleted"  # a redelivered event is harmless


def test_a_late_delete_event_does_not_undo_a_re_created_parameter(aws: SimpleNamespace) -> None:
    apply_good(aws)
    aws.ssm.delete_parameter(Name=NAME)
    apply_good(aws, dailySyncStart="04:00")  # re-created: its version starts again at 1

    outcome = change(aws, "Delete")

    assert outcome.action == "applied"
    assert schedule(aws)["ScheduleExpression"] == "cron(0 4 * * ? *)"


def test_an_update_event_for_a_parameter_deleted_since_removes_the_district(aws: SimpleNamespace) -> None:
    apply_good(aws)
    aws.ssm.delete_parameter(Name=NAME)

    assert change(aws, "Update").action == "deleted"
    assert not schedule_exists(aws)


# ------------------------------------------------------------------- ignored


@pytest.mark.parametrize(
    "name",
    [
        "/rostersync/districts/lincoln/credentials",
        "/rostersync/other",
        "/someone-else/districts/lincoln/settings",
    ],
)
def test_other_parameters_are_ignored(aws: SimpleNamespace, name: str) -> None:
    aws.ssm.put_parameter(Name=name, Value='{"clientSecret": "s3cr3t"}', Type="SecureString")

    outcome = change(aws, "Update", name=name)

    assert outcome.action == "ignored"
    assert outcome.district_id is None
    assert not schedule_exists(aws)
    assert settings_store.load_last_good(DISTRICT) is None


def test_a_label_change_is_ignored(aws: SimpleNamespace) -> None:
    write_parameter(aws, GOOD)

    outcome = change(aws, "LabelParameterVersion")

    assert outcome.action == "ignored"
    assert not schedule_exists(aws)


def test_without_a_schedule_target_nothing_is_half_applied(aws: SimpleNamespace) -> None:
    write_parameter(aws, GOOD)
    config = aws.config.model_copy(update={"scheduler_role_arn": ""})

    with pytest.raises(RostersyncError, match="scheduler_role_arn"):
        handle_parameter_change(NAME, "Create", ssm=aws.ssm, scheduler=aws.scheduler, config=config)

    assert settings_store.load_last_good(DISTRICT) is None
    assert not schedule_exists(aws)


# ---------------------------------------------------------------- ordering


def test_an_older_revision_never_overwrites_a_newer_one(aws: SimpleNamespace) -> None:
    earlier = datetime(2026, 8, 1, 12, tzinfo=UTC)
    newer = parse_settings(json.dumps({**GOOD, "dailySyncStart": "05:00"}))
    older = parse_settings(json.dumps({**GOOD, "dailySyncStart": "01:00"}))

    assert settings_store.save_last_good(DISTRICT, newer, 3, parameter_modified_at=earlier)
    assert not settings_store.save_last_good(DISTRICT, older, 2, parameter_modified_at=earlier)
    assert not settings_store.record_rejected_change(DISTRICT, 2, "late", parameter_modified_at=earlier)

    stored = settings_store.load_last_good(DISTRICT)
    assert stored is not None
    assert stored.daily_sync_start == "05:00"
    assert settings_store.load_settings_error(DISTRICT) is None
    # A parameter deleted and created again restarts at version 1, later in time.
    assert settings_store.save_last_good(
        DISTRICT, older, 1, parameter_modified_at=earlier + timedelta(hours=1)
    )


def test_an_older_refusal_does_not_replace_a_newer_one(aws: SimpleNamespace) -> None:
    at = datetime(2026, 8, 1, 12, tzinfo=UTC)

    assert settings_store.record_rejected_change(DISTRICT, 5, "newer", parameter_modified_at=at)
    assert not settings_store.record_rejected_change(DISTRICT, 4, "older", parameter_modified_at=at)
    settings_store.clear_settings_error(DISTRICT, 4, parameter_modified_at=at)

    error = settings_store.load_settings_error(DISTRICT)
    assert error is not None
    assert (error["version"], error["message"]) == (5, "newer")


# -------------------------------------------------------------------- handler


def load_handler() -> ModuleType:
    path = ROOT / "functions" / "settings_changed" / "app.py"
    spec = importlib.util.spec_from_file_location("settings_changed_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeLambdaContext:
    function_name = "settings-changed"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:settings-changed"
    aws_request_id = "52fdfc07-2182-454f-963f-5f0f9a621d72"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def test_the_handler_applies_the_sample_event(aws: SimpleNamespace) -> None:
    event = json.loads((ROOT / "events" / "settings_change.json").read_text())
    assert event["detail"]["name"] == NAME
    write_parameter(aws, GOOD)

    result = load_handler().lambda_handler(event, FakeLambdaContext())

    assert result == {
        "districtId": DISTRICT,
        "action": "applied",
        "message": result["message"],
        "parameterVersion": 1,
    }
    assert schedule(aws)["ScheduleExpression"] == "cron(0 2 * * ? *)"


def test_the_handler_ignores_a_credentials_event(aws: SimpleNamespace) -> None:
    event = json.loads((ROOT / "events" / "settings_change.json").read_text())
    event["detail"] = {**event["detail"], "name": "/rostersync/districts/lincoln/credentials"}

    result = load_handler().lambda_handler(event, FakeLambdaContext())

    assert result["action"] == "ignored"


def test_the_configuration_is_read_from_the_environment(aws: SimpleNamespace) -> None:
    # (operator_principal_arn: the API's setting, given to every test by tests/conftest.py)
    assert aws.config.model_copy(update={"operator_principal_arn": ""}) == Config(
        roster_table_name=TABLE, run_queue_arn=QUEUE_ARN, scheduler_role_arn=ROLE_ARN, scheduler_group=GROUP
    )
