"""The event wiring of template.yaml, done by hand where the emulator does not.

- SQS event source mappings: poll RunQueue, StagingQueue and ApplyQueue and
  call the handlers with SQS events shaped as Lambda shapes them.
- SSM "Parameter Store Change" events: moto emits none, so parameter versions
  under the settings prefix are watched and the event is produced here.
- EventBridge Scheduler: moto stores schedules but fires none, so due
  `cron(MM HH * * ? *)` schedules are fired here, in their time zone.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aws_lambda_powertools import Logger

from rostersync import aws
from rostersync.local.functions import Handler, LocalContext

logger = Logger(service="rostersync", child=True)

_DAILY_CRON = re.compile(r"^cron\((\d{1,2}) (\d{1,2}) \* \* \? \*\)$")


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": m.get("Attributes", {}).get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": m.get("Attributes", {}).get("SentTimestamp", "0"),
                    "SenderId": "local",
                    "ApproximateFirstReceiveTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


class QueuePoller(threading.Thread):
    """One Lambda event source mapping: a queue, a batch size, a handler."""

    def __init__(
        self,
        name: str,
        queue_url: str,
        handler: Handler,
        *,
        batch_size: int,
        partial_failures: bool,
        stop: threading.Event,
        visibility_timeout_s: int = 30,
    ) -> None:
        super().__init__(name=f"poll-{name}", daemon=True)
        self.function_name = name
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.partial_failures = partial_failures
        self.stop_event = stop
        self.visibility_timeout_s = visibility_timeout_s
        self.busy = False
        self.handled = 0

    def run(self) -> None:
        sqs = aws.client("sqs")
        arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        while not self.stop_event.is_set():
            asked = time.monotonic()
            try:
                answer = sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=1,
                    VisibilityTimeout=self.visibility_timeout_s,
                    AttributeNames=["All"],
                )
            except Exception:  # the emulator is going away, or hiccuped: poll again
                if self.stop_event.wait(0.5):
                    return
                continue
            messages = answer.get("Messages", [])
            if not messages and time.monotonic() - asked < 0.2:
                # moto ends a long poll at once while messages are in flight
                # (invisible): wait here rather than spin against the emulator.
                self.stop_event.wait(0.2)
            if messages:
                self.busy = True
                try:
                    self._deliver(sqs, arn, messages)
                finally:
                    self.busy = False

    def _deliver(self, sqs: Any, arn: str, messages: list[dict[str, Any]]) -> None:
        failed: set[str] = set()
        try:
            result = self.handler(sqs_event(messages, arn), LocalContext(self.function_name))
            if self.partial_failures and isinstance(result, dict):
                failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except Exception:
            # As on AWS: the whole batch becomes visible again and is retried,
            # then goes to the dead-letter queue after maxReceiveCount tries.
            logger.exception("handler failed; messages will be retried", function=self.function_name)
            return
        done = [m for m in messages if m["MessageId"] not in failed]
        self.handled += len(done)
        if done:
            sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )


def parameter_change_event(name: str, operation: str, parameter_type: str = "String") -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Parameter Store Change",
        "source": "aws.ssm",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:ssm:us-east-1:123456789012:parameter{name}"],
        "detail": {"name": name, "type": parameter_type, "operation": operation},
    }


class SettingsWatcher(threading.Thread):
    """Turns parameter versions under the prefix into Parameter Store Change events."""

    def __init__(self, prefix: str, handler: Handler, stop: threading.Event, interval_s: float = 1.0) -> None:
        super().__init__(name="settings-watcher", daemon=True)
        self.prefix = prefix
        self.handler = handler
        self.stop_event = stop
        self.interval_s = interval_s
        self.versions: dict[str, int] = {}
        self.types: dict[str, str] = {}
        self.lock = threading.Lock()

    def scan(self) -> list[dict[str, Any]]:
        """Compare parameter versions with the last scan; return the events to emit."""
        ssm = aws.client("ssm")
        current: dict[str, int] = {}
        types: dict[str, str] = {}
        paginator = ssm.get_paginator("describe_parameters")
        for page in paginator.paginate(
            ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": [self.prefix]}]
        ):
            for parameter in page.get("Parameters", []):
                current[parameter["Name"]] = int(parameter.get("Version", 1))
                types[parameter["Name"]] = parameter.get("Type", "String")
        events = []
        for name, version in sorted(current.items()):
            before = self.versions.get(name)
            if before is None:
                events.append(parameter_change_event(name, "Create", types[name]))
            elif version != before:
                events.append(parameter_change_event(name, "Update", types[name]))
        for name in sorted(set(self.versions) - set(current)):
            events.append(parameter_change_event(name, "Delete", self.types.get(name, "String")))
        self.versions, self.types = current, types
        return events

    def poll_once(self) -> int:
        with self.lock:
            events = self.scan()
            for event in events:
                try:
                    self.handler(event, LocalContext("SettingsChangedFunction"))
                except Exception:
                    logger.exception("settings handler failed", parameter=event["detail"]["name"])
            return len(events)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                self.poll_once()
            except Exception:  # the emulator is going away, or hiccuped: poll again
                logger.debug("settings scan failed", exc_info=True)


def due_between(expression: str, timezone: str, after: datetime, until: datetime) -> datetime | None:
    """The firing time of a daily `cron(MM HH * * ? *)` in (after, until], if any.

    Computed in the schedule's own time zone, so 02:00 stays 02:00 local across
    daylight-saving changes, as EventBridge Scheduler does.
    """
    match = _DAILY_CRON.match(expression)
    if not match:
        return None
    minute, hour = int(match[1]), int(match[2])
    zone = ZoneInfo(timezone or "UTC")
    day: date = after.astimezone(zone).date()
    last_day = until.astimezone(zone).date()
    while day <= last_day:
        fire = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        if after < fire <= until:
            return fire
        day += timedelta(days=1)
    return None


class ScheduleFirer(threading.Thread):
    """Fires due schedules by sending their target input to their SQS target."""

    def __init__(self, stop: threading.Event, clock: Callable[[], datetime], interval_s: float = 5.0) -> None:
        super().__init__(name="schedule-firer", daemon=True)
        self.stop_event = stop
        self.clock = clock
        self.interval_s = interval_s
        self.checked_until = clock()

    def fire(self, name: str, group: str = "default") -> dict[str, Any]:
        schedule = aws.client("scheduler").get_schedule(Name=name, GroupName=group)
        target = schedule["Target"]
        queue_url = aws.client("sqs").get_queue_url(QueueName=target["Arn"].rsplit(":", 1)[1])["QueueUrl"]
        aws.client("sqs").send_message(QueueUrl=queue_url, MessageBody=target.get("Input", "{}"))
        logger.info("schedule fired", schedule=name)
        return schedule  # type: ignore[no-any-return]

    def tick(self) -> list[str]:
        now = self.clock()
        fired = []
        scheduler = aws.client("scheduler")
        for summary in scheduler.list_schedules(NamePrefix="rostersync-").get("Schedules", []):
            schedule = scheduler.get_schedule(
                Name=summary["Name"], GroupName=summary.get("GroupName", "default")
            )
            if schedule.get("State") == "DISABLED":
                continue
            due = due_between(
                schedule["ScheduleExpression"],
                schedule.get("ScheduleExpressionTimezone", "UTC"),
                self.checked_until,
                now,
            )
            if due is not None:
                self.fire(summary["Name"], summary.get("GroupName", "default"))
                fired.append(summary["Name"])
        self.checked_until = now
        return fired

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                self.tick()
            except Exception:
                logger.debug("schedule tick failed", exc_info=True)
