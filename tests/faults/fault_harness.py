"""Drive real runs through the real handlers and queues, and snapshot what they left.

`Pipeline` plays Lambda's part on the template's stack (moto over HTTP): it
calls the API handler for a force sync, then polls RunQueue, StagingQueue and
ApplyQueue as the event source mappings would (batches of 10 for staged pages,
partial batch failures made visible again at once, so SQS counts receives and
its redrive policy moves a message that keeps failing to the dead-letter
queue), until the run has ended and every queue is empty.

`snapshot(district_id)` reads the product records (schools, classes, users,
enrollments) and the source mirror, for comparing a faulted district with a
clean run of the same source.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rostersync.local.demo import demo_settings
from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from rostersync.local.functions import Handler, load_handler
from rostersync.local.wiring import parameter_change_event, sqs_event
from rostersync.store import roster, runs

DISTRICT = "faulty"  # the district each fault hits
REFERENCE = "reference"  # a clean run of the same source, for comparison
SOURCE_TIMEOUT_S = 0.5  # SOURCE_TIMEOUT_S of the suite (conftest.fast_source)
PAGE_SIZE = 40
OPERATOR_ARN = "arn:aws:iam::123456789012:user/district-admin"  # the caller of api_event

PRODUCT_KINDS = ("schools", "classes", "users", "enrollments")
MIRROR_ENTITIES = ("orgs", "academicSessions", "classes", "users", "enrollments")
FINAL = frozenset({"succeeded", "failed", "halted", "previewed"})

_handlers: dict[str, Handler] = {}
_handlers_lock = threading.Lock()


def handler(name: str) -> Handler:
    """functions/<name>/app.py's lambda_handler, imported once."""
    with _handlers_lock:
        if name not in _handlers:
            _handlers[name] = load_handler(name)
        return _handlers[name]


def settings_name(district_id: str) -> str:
    return f"/rostersync/districts/{district_id}/settings"


def api_event(method: str, path: str, district_id: str, body: Any = None) -> dict[str, Any]:
    """An API Gateway (REST) proxy event, as the template's API would send it."""
    resource = path.replace(f"/districts/{district_id}", "/districts/{id}")
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"id": district_id},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/v1{path}",
            "accountId": "123456789012",
            "stage": "v1",
            "requestId": "faults",
            "identity": {
                "accountId": "123456789012",
                "caller": "AIDAEXAMPLE",
                "sourceIp": "203.0.113.7",
                "userArn": "arn:aws:iam::123456789012:user/district-admin",
            },
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


@dataclass
class Delivery:
    """What one poll of a queue did."""

    received: int = 0
    failed: int = 0


@dataclass
class Pipeline:
    outputs: dict[str, str]
    clients: Callable[[str], Any]
    context: Any
    # Called with (function name, SQS event) before a handler runs; may reorder
    # or duplicate the event's records (a fault of the delivery, not the code).
    before_deliver: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
    polled: list[tuple[str, Delivery]] = field(default_factory=list)
    arns: dict[str, str] = field(default_factory=dict)

    # -- settings ------------------------------------------------------------

    def connect(
        self, district_id: str, sis_url: str, *, source: dict[str, Any] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """Credentials (SecureString) and settings written as an operator would, and
        the settings event handled, so the settings are the district's last good."""
        settings = demo_settings(sis_url, **overrides)
        credentials = f"/rostersync/districts/{district_id}/credentials"
        settings["source"] |= {"credentialsParameter": credentials, **(source or {})}
        ssm = self.clients("ssm")
        ssm.put_parameter(
            Name=credentials,
            Type="SecureString",
            Value=json.dumps({"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET}),
            Overwrite=True,
        )
        outcome = self.put_settings(district_id, json.dumps(settings))
        assert outcome["action"] == "applied", outcome
        return settings

    def put_settings(self, district_id: str, text: str) -> dict[str, Any]:
        """Write the settings parameter and deliver its change event."""
        self.clients("ssm").put_parameter(
            Name=settings_name(district_id), Type="String", Value=text, Overwrite=True
        )
        return self.settings_event(district_id, "Update")

    def delete_settings(self, district_id: str) -> dict[str, Any]:
        self.clients("ssm").delete_parameter(Name=settings_name(district_id))
        return self.settings_event(district_id, "Delete")

    def settings_event(self, district_id: str, operation: str) -> dict[str, Any]:
        event = parameter_change_event(settings_name(district_id), operation)
        return handler("settings_changed")(event, self.context)  # type: ignore[no-any-return]

    # -- runs ----------------------------------------------------------------

    def force_sync(self, district_id: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        answer = handler("api")(
            api_event("POST", f"/districts/{district_id}/sync", district_id, body), self.context
        )
        return answer["statusCode"], json.loads(answer["body"])

    def sync(self, district_id: str, body: Any = None, **drive: Any) -> dict[str, Any]:
        """Force a sync and drive it to its end; returns the run record."""
        status, answer = self.force_sync(district_id, body)
        assert status == 202, answer
        return self.drive(district_id, answer["runId"], **drive)

    def drive(self, district_id: str, run_id: str, *, max_rounds: int = 200) -> dict[str, Any]:
        """Poll the queues until the run has ended and nothing is left to deliver."""
        for _ in range(max_rounds):
            moved = self.poll("fetch_roster", "RunQueueUrl", batch=1, partial=False)
            moved += self.poll("transform_page", "StagingQueueUrl", batch=10, partial=True)
            moved += self.poll("apply_run", "ApplyQueueUrl", batch=1, partial=False)
            run = runs.get_run(district_id, run_id)
            if not moved and run is not None and run["status"] in FINAL:
                return run
            if not moved and self.queues_idle():
                return run or {}
        raise AssertionError(f"run {run_id} did not settle in {max_rounds} rounds")

    def poll(self, function: str, queue_output: str, *, batch: int, partial: bool) -> int:
        """One receive of the queue and one invocation of its function, as Lambda would."""
        sqs = self.clients("sqs")
        url = self.outputs[queue_output]
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=batch,
            WaitTimeSeconds=0,
            VisibilityTimeout=60,
            AttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        if url not in self.arns:
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
            self.arns[url] = attributes["QueueArn"]
        event = sqs_event(messages, self.arns[url])
        if self.before_deliver is not None:
            event = self.before_deliver(function, event)
        failed: set[str] = set()
        try:
            result = handler(function)(event, self.context)
        except Exception:
            failed = {m["MessageId"] for m in messages}  # the whole batch is retried
        else:
            if partial and isinstance(result, dict):
                failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] in failed:
                # Visible again at once, as after its visibility timeout.
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        self.polled.append((function, Delivery(len(messages), len(failed))))
        return len(messages)

    def queues_idle(self) -> bool:
        sqs = self.clients("sqs")
        for name in ("RunQueueUrl", "StagingQueueUrl", "ApplyQueueUrl"):
            attributes = sqs.get_queue_attributes(
                QueueUrl=self.outputs[name],
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            if int(attributes["ApproximateNumberOfMessages"]) or int(
                attributes["ApproximateNumberOfMessagesNotVisible"]
            ):
                return False
        return True

    def dead_letters(self, queue_output: str = "StagingDeadLetterQueueUrl") -> list[dict[str, Any]]:
        """Every message in a dead-letter queue (read and deleted)."""
        sqs = self.clients("sqs")
        found = []
        while True:
            got = sqs.receive_message(
                QueueUrl=self.outputs[queue_output], MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not got:
                return found
            for message in got:
                sqs.delete_message(
                    QueueUrl=self.outputs[queue_output], ReceiptHandle=message["ReceiptHandle"]
                )
            found.extend(got)


# ---- what a run left ------------------------------------------------------------------


def product(district_id: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Every product record per kind, by id."""
    return {
        kind: {item["id"]: item for item in roster.iter_product(district_id, kind)} for kind in PRODUCT_KINDS
    }


def mirror(district_id: str) -> dict[str, dict[str, str]]:
    """Every mirrored source record per entity: sourcedId -> normalized JSON."""
    return {
        entity: {sid: doc for sid, doc, _ in roster.iter_mirror(district_id, entity)}
        for entity in MIRROR_ENTITIES
    }


def snapshot(district_id: str) -> dict[str, Any]:
    return {"product": product(district_id), "mirror": mirror(district_id)}


def run_text(run: dict[str, Any]) -> str:
    """Everything of a run record an administrator reads, as one string."""
    issues = runs.list_issues(run["districtId"], run["runId"], "ERR") + runs.list_issues(
        run["districtId"], run["runId"], "WARN"
    )
    return json.dumps({"message": run.get("message", ""), "issues": issues})


def assert_no_leak(text: str, district: Any) -> None:
    """No stack trace, no student name or email in text an administrator reads."""
    assert "Traceback" not in text and 'File "' not in text, text
    lowered = text.lower()
    for user in district.records("users"):
        email = (user.get("email") or "").lower()
        assert not email or email not in lowered, f"email of {user['sourcedId']} in {text[:300]}"
        for name_field in ("givenName", "familyName"):
            name = user.get(name_field) or ""
            # Short names ("Li") also occur inside ordinary words; a leak quotes the full name.
            if len(name) >= 5:
                assert name.lower() not in lowered, f"{name_field} of {user['sourcedId']} in {text[:300]}"
