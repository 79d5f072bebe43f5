"""Issue 6, part 4: every run's end is one EventBridge event a district can
subscribe to, each run writes its metrics (CloudWatch EMF), and template.yaml
alarms on failed and halted runs and on every dead-letter queue.

Runs are real: the demo SIS over HTTP, the fetch, transform and apply handlers
fed from the stack's own queues on the moto server. The subscriber is what a
district would build: a rule on the run event bus with an SQS target.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rostersync import config as config_module
from rostersync import observability
from rostersync.local.demo import demo_settings
from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, generate_district
from rostersync.local.demo_sis import DemoSis
from rostersync.local.deploy import cached_translation, load_sam_template
from rostersync.local.functions import load_handler
from rostersync.local.wiring import sqs_event
from rostersync.settings.model import parse_settings
from rostersync.store import runs
from rostersync.store.settings import save_last_good

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
DISTRICT = "observed"
DETAIL_FIELDS = {
    "districtId",
    "runId",
    "status",
    "trigger",
    "mode",
    "startedAt",
    "finishedAt",
    "counts",
    "rejected",
    "itemWrites",
    "message",
}
# The functions that can end a run, and so put events and flush metrics.
RUN_ENDING_FUNCTIONS = ("FetchRosterFunction", "TransformPageFunction", "ApplyRunFunction", "ApiFunction")


# ---------------------------------------------------------------- fixtures ---


@pytest.fixture(scope="module")
def handlers() -> dict[str, Any]:
    return {name: load_handler(name) for name in ("fetch_roster", "transform_page", "apply_run")}


@pytest.fixture
def sis() -> Iterator[DemoSis]:
    # A small district, read in big pages: a whole run takes a few seconds.
    with DemoSis(generate_district(students_per_school=10, class_size=10, periods=2)) as server:
        yield server


@pytest.fixture(scope="module")
def subscriber(aws_stack: dict[str, str], aws_clients: Callable[[str], Any]) -> Iterator[str]:
    """A district's subscription: a rule on the run event bus sending run ends to a queue."""
    sqs, events = aws_clients("sqs"), aws_clients("events")
    suffix = uuid.uuid4().hex[:8]
    queue_url = sqs.create_queue(QueueName=f"run-ends-{suffix}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    bus = aws_stack["RunEventBusName"]
    rule = f"run-ends-{suffix}"
    events.put_rule(
        Name=rule,
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["rostersync"], "detail-type": ["Roster Sync Run Finished"]}),
    )
    events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}])
    try:
        yield queue_url
    finally:
        events.remove_targets(Rule=rule, EventBusName=bus, Ids=["queue"])
        events.delete_rule(Name=rule, EventBusName=bus)
        sqs.delete_queue(QueueUrl=queue_url)


@pytest.fixture
def received(subscriber: str, clean_stack: dict[str, str], aws_clients: Callable[[str], Any]):
    """`received()`: the run-end events the subscriber got since the last call (raw bodies)."""
    sqs = aws_clients("sqs")
    sqs.purge_queue(QueueUrl=subscriber)

    def read() -> list[str]:
        bodies = []
        while True:
            got = sqs.receive_message(QueueUrl=subscriber, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return bodies
            for message in got:
                sqs.delete_message(QueueUrl=subscriber, ReceiptHandle=message["ReceiptHandle"])
                bodies.append(message["Body"])

    return read


def _connect(aws_clients: Callable[[str], Any], sis_url: str, **overrides: Any) -> None:
    settings = demo_settings(sis_url, **overrides)
    settings["source"]["credentialsParameter"] = f"/rostersync/districts/{DISTRICT}/credentials"
    settings["source"]["pageSize"] = 1000
    aws_clients("ssm").put_parameter(
        Name=settings["source"]["credentialsParameter"],
        Type="SecureString",
        Value=json.dumps({"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET}),
        Overwrite=True,
    )
    save_last_good(DISTRICT, parse_settings(json.dumps(settings)), 1, parameter_modified_at=datetime.now(UTC))


def _sync(
    outputs: dict[str, str],
    aws_clients: Callable[[str], Any],
    handlers: dict[str, Any],
    lambda_context: Any,
    **start: Any,
) -> dict[str, Any]:
    """A scheduled start on RunQueue, then every queue delivered to its handler until the run ends."""
    sqs = aws_clients("sqs")
    body = {"type": "start", "districtId": DISTRICT, "trigger": "schedule", **start}
    sqs.send_message(QueueUrl=outputs["RunQueueUrl"], MessageBody=json.dumps(body))
    stages = (
        (outputs["RunQueueUrl"], "fetch_roster", 1),
        (outputs["StagingQueueUrl"], "transform_page", 10),
        (outputs["ApplyQueueUrl"], "apply_run", 1),
    )
    run_id = None
    for _ in range(100):
        moved = False
        for queue_url, function, batch in stages:
            messages = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=batch, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                continue
            moved = True
            arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            result = handlers[function](sqs_event(messages, arn), lambda_context)
            if function == "fetch_roster" and run_id is None:
                run_id = result["runIds"][0]
            for message in messages:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        run = runs.get_run(DISTRICT, run_id) if run_id else None
        if run and run["status"] in runs.FINAL_STATUSES:
            return run
        if not moved:
            break
    raise AssertionError(f"run {run_id} did not end: {run_id and runs.get_run(DISTRICT, run_id)}")


def _events(bodies: list[str]) -> list[dict[str, Any]]:
    return [json.loads(body) for body in bodies]


def _emf(output: str) -> list[dict[str, Any]]:
    """The EMF documents among the JSON lines a handler printed."""
    documents = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


def _run_metrics(output: str, run_id: str) -> dict[str, Any]:
    """The run's EMF document, each metric's values (a list in EMF) read as the one value."""
    (document,) = [d for d in _emf(output) if d.get("runId") == run_id]
    names = {m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    for name in names:
        (document[name],) = document[name]
    return document


def _private_values(sis: DemoSis) -> set[str]:
    """Every student's and teacher's name and email: none may leave in an event."""
    values = set()
    for user in sis.district.users:
        for field in ("givenName", "familyName", "middleName", "email", "username"):
            value = str(user.get(field) or "").strip()
            if len(value) >= 3:
                values.add(value)
    return values


def _assert_no_private_values(text: str, private: set[str]) -> None:
    lowered = text.lower()
    for value in private:
        if "@" in value:
            assert value.lower() not in lowered, "an email left in the event"
        else:
            assert not re.search(rf"\b{re.escape(value)}\b", text), "a name left in the event"


def _assert_run_end_event(event: dict[str, Any], run: dict[str, Any]) -> None:
    assert event["source"] == "rostersync"
    assert event["detail-type"] == "Roster Sync Run Finished"
    detail = event["detail"]
    assert set(detail) == DETAIL_FIELDS
    assert detail["districtId"] == DISTRICT and detail["runId"] == run["runId"]
    assert detail["status"] == run["status"]
    assert detail["trigger"] == run["trigger"] and detail["mode"] == run["mode"]
    assert detail["startedAt"] == run["startedAt"] and detail["finishedAt"] == run["finishedAt"]
    assert detail["counts"] == run["counts"]
    assert detail["rejected"] == sum(c.get("rejected", 0) for c in run["counts"].values())
    assert detail["itemWrites"] == run.get("itemWrites", 0)
    assert detail["message"] == run.get("message")


# ---------------------------------------------------------- run-end events ---


def test_a_succeeded_run_sends_one_event_and_writes_its_metrics(
    clean_stack, aws_clients, handlers, lambda_context, sis, received, capsys
):
    _connect(aws_clients, sis.url)
    capsys.readouterr()

    run = _sync(clean_stack, aws_clients, handlers, lambda_context, mode="full")

    assert run["status"] == "succeeded"
    bodies = received()
    (event,) = _events(bodies)
    _assert_run_end_event(event, run)
    assert event["detail"]["counts"]["users"]["created"] == run["counts"]["users"]["created"] > 0
    assert event["detail"]["rejected"] == 3  # the showcase's duplicate email and two without one
    assert event["detail"]["itemWrites"] > 0
    _assert_no_private_values(bodies[0], _private_values(sis))

    # The apply handler flushed the run's metrics: one EMF document of this run
    output = capsys.readouterr().out
    metrics = _run_metrics(output, run["runId"])
    (directive,) = metrics["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Rostersync"
    assert directive["Dimensions"] == [["service"]]  # the district is metadata, not a dimension
    assert metrics["service"] == "rostersync" and metrics["districtId"] == DISTRICT
    assert metrics["status"] == "succeeded" and metrics["trigger"] == "schedule"
    assert metrics["RunsFinished"] == 1 and metrics["SucceededRuns"] == 1
    assert metrics["FailedRuns"] == metrics["HaltedRuns"] == metrics["PreviewedRuns"] == 0
    for kind in observability.COUNTED_KINDS:
        for outcome in observability.OUTCOMES:
            name = observability.outcome_metric(kind, outcome)
            assert metrics[name] == run["counts"][kind][outcome], name
    assert metrics["UsersCreated"] == run["counts"]["users"]["created"]
    assert metrics["RecordsRejected"] == 3
    assert metrics["ItemWrites"] == run["itemWrites"]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units["RunDuration"] == "Seconds" and units["RunsFinished"] == "Count"
    started = datetime.fromisoformat(run["startedAt"])
    finished = datetime.fromisoformat(run["finishedAt"])
    assert metrics["RunDuration"] == pytest.approx((finished - started).total_seconds())
    _assert_no_private_values(json.dumps(metrics), _private_values(sis))

    # A redelivered apply message ends nothing again: still one event
    handlers["apply_run"](
        sqs_event(
            [{"MessageId": "again", "ReceiptHandle": "r", "Body": json.dumps(_apply_body(run))}], "arn"
        ),
        lambda_context,
    )
    assert received() == []


def _apply_body(run: dict[str, Any]) -> dict[str, Any]:
    return {"type": "apply", "districtId": DISTRICT, "runId": run["runId"]}


def test_a_failed_run_sends_its_event_with_the_reason(
    clean_stack, aws_clients, handlers, lambda_context, sis, received, capsys
):
    _connect(aws_clients, sis.url)
    sis.fail_next(403, count=1000, path_contains="enrollments")  # the SIS breaks half-way
    capsys.readouterr()

    run = _sync(clean_stack, aws_clients, handlers, lambda_context, mode="full")

    assert run["status"] == "failed"
    bodies = received()
    (event,) = _events(bodies)
    _assert_run_end_event(event, run)
    assert "403" in event["detail"]["message"] and "enrollments" in event["detail"]["message"]
    _assert_no_private_values(bodies[0], _private_values(sis))
    metrics = _run_metrics(capsys.readouterr().out, run["runId"])  # flushed by the fetch handler
    assert metrics["FailedRuns"] == 1 and metrics["SucceededRuns"] == 0 and metrics["RunsFinished"] == 1


def test_a_halted_run_sends_its_event_with_the_counts_that_tripped_it(
    clean_stack, aws_clients, handlers, lambda_context, sis, received, capsys
):
    _connect(aws_clients, sis.url)  # maxDeletePercent 10
    assert _sync(clean_stack, aws_clients, handlers, lambda_context, mode="full")["status"] == "succeeded"
    received()
    # The SIS "loses" school 2's students
    for user in [u["sourcedId"] for u in sis.district.users if u["sourcedId"].startswith("stu-2-")]:
        sis.district.remove("users", user)
    capsys.readouterr()

    run = _sync(clean_stack, aws_clients, handlers, lambda_context, mode="full")

    assert run["status"] == "halted", run.get("message")
    bodies = received()
    (event,) = _events(bodies)
    _assert_run_end_event(event, run)
    assert "confirmDeletes" in event["detail"]["message"] and "users:" in event["detail"]["message"]
    assert event["detail"]["counts"]["users"]["deleted"] == 0
    _assert_no_private_values(bodies[0], _private_values(sis))
    metrics = _run_metrics(capsys.readouterr().out, run["runId"])
    assert metrics["HaltedRuns"] == 1 and metrics["FailedRuns"] == 0
    assert metrics["UsersDeleted"] == 0


def test_a_dry_run_sends_a_previewed_event_and_no_outcome_metrics(
    clean_stack, aws_clients, handlers, lambda_context, sis, received, capsys
):
    _connect(aws_clients, sis.url)
    capsys.readouterr()

    run = _sync(clean_stack, aws_clients, handlers, lambda_context, mode="full", dryRun=True)

    assert run["status"] == "previewed"
    bodies = received()
    (event,) = _events(bodies)
    _assert_run_end_event(event, run)
    assert event["detail"]["counts"]["users"]["created"] > 0  # what the run would have created
    assert event["detail"]["itemWrites"] == 0
    _assert_no_private_values(bodies[0], _private_values(sis))
    metrics = _run_metrics(capsys.readouterr().out, run["runId"])
    assert metrics["PreviewedRuns"] == 1 and metrics["RunsFinished"] == 1
    # A preview changed nothing: no records by outcome, no writes
    assert "UsersCreated" not in metrics and "ItemWrites" not in metrics


# ----------------------------------------------------------- exactly once ---


def test_finishing_a_run_twice_changes_nothing_and_sends_one_event(clean_stack, received):
    run_id = runs.start_run(DISTRICT, trigger="api", mode="full")["runId"]

    assert runs.finish_run(DISTRICT, run_id, "succeeded", itemWrites=7) is True
    assert runs.finish_run(DISTRICT, run_id, "failed", message="a retried finish") is False

    run = runs.get_run(DISTRICT, run_id)
    assert run["status"] == "succeeded" and "message" not in run
    assert runs.active_run_id(DISTRICT) is None
    (event,) = _events(received())
    _assert_run_end_event(event, run)
    assert event["detail"]["itemWrites"] == 7


def test_a_stalled_run_failed_by_its_successor_sends_its_event(clean_stack, received):
    long_ago = datetime.now(UTC) - runs.LOCK_LIFETIME - timedelta(minutes=1)
    stalled = runs.start_run(DISTRICT, trigger="schedule", mode="full", moment=long_ago)["runId"]

    successor = runs.start_run(DISTRICT, trigger="api", mode="full")["runId"]

    (event,) = _events(received())
    assert event["detail"]["runId"] == stalled and event["detail"]["status"] == "failed"
    assert event["detail"]["message"].startswith("stalled:")
    assert runs.active_run_id(DISTRICT) == successor  # the successor keeps the lock


def test_an_event_that_cannot_be_published_leaves_the_run_as_it_ended(
    clean_stack, aws_clients, handlers, lambda_context, received, capsys, caplog, monkeypatch
):
    # Given a bus that is not there (a deleted bus, an outage)
    monkeypatch.setenv("RUN_EVENT_BUS_NAME", "no-such-bus")
    config_module.get_config.cache_clear()
    capsys.readouterr()

    # When a scheduled run ends (this district has no settings: it fails at once)
    sqs = aws_clients("sqs")
    body = {"type": "start", "districtId": DISTRICT, "trigger": "schedule"}
    sqs.send_message(QueueUrl=clean_stack["RunQueueUrl"], MessageBody=json.dumps(body))
    messages = sqs.receive_message(QueueUrl=clean_stack["RunQueueUrl"], AttributeNames=["All"])["Messages"]
    (run_id,) = handlers["fetch_roster"](sqs_event(messages, "arn"), lambda_context)["runIds"]

    # Then the run ended as it should, its lock released, the failure logged and counted
    run = runs.get_run(DISTRICT, run_id)
    assert run["status"] == "failed" and run["message"] == "the district has no valid settings"
    assert runs.active_run_id(DISTRICT) is None
    assert received() == []
    output = capsys.readouterr().out
    metrics = _run_metrics(output, run_id)
    assert metrics["RunEventsNotPublished"] == 1 and metrics["FailedRuns"] == 1
    (warning,) = [r for r in caplog.records if r.getMessage() == "run-end event not published"]
    assert warning.levelname == "WARNING"
    assert (warning.run_id, warning.reason) == (run_id, "ResourceNotFoundException")


# ------------------------------------------------------------------ sample ---


def test_the_sample_event_has_the_shape_a_run_end_sends(load_event):
    sample = load_event("run_finished")
    assert sample["source"] == observability.EVENT_SOURCE
    assert sample["detail-type"] == observability.EVENT_DETAIL_TYPE
    assert set(sample["detail"]) == DETAIL_FIELDS
    # A run record holding these values gives exactly this detail
    assert observability.run_end_detail(sample["detail"]) == sample["detail"]


# ---------------------------------------------------------------- template ---


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_sam_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return cached_translation(TEMPLATE_PATH)


def _alarms(sam: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: r["Properties"] for k, r in sam["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def test_failed_and_halted_runs_alarm_from_the_run_metrics(sam: dict[str, Any]) -> None:
    alarms = _alarms(sam)
    for status in ("failed", "halted"):
        (props,) = [p for p in alarms.values() if p.get("MetricName") == observability.status_metric(status)]
        assert props["Namespace"] == observability.NAMESPACE
        assert props["Dimensions"] == [{"Name": "service", "Value": observability.SERVICE}]
        assert props["Statistic"] == "Sum" and props["Threshold"] == 0
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["TreatMissingData"] == "notBreaching"


def test_every_dead_letter_queue_has_an_alarm(sam: dict[str, Any]) -> None:
    resources = sam["Resources"]
    dead_letter_queues = {
        props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for r in resources.values()
        if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in (props := r.get("Properties", {}))
    } | {"SettingsDeadLetterQueue"}
    watched = {
        props["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for props in _alarms(sam).values()
        if props["Namespace"] == "AWS/SQS"
        and props["MetricName"] == "ApproximateNumberOfMessagesVisible"
        and props["Threshold"] == 0
        and props["ComparisonOperator"] == "GreaterThanThreshold"
    }
    assert dead_letter_queues <= watched
    assert {k for k, r in resources.items() if k.endswith("DeadLetterQueue")} <= watched


def test_every_alarm_notifies_the_encrypted_topic(sam: dict[str, Any]) -> None:
    for name, props in _alarms(sam).items():
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    topic = sam["Resources"]["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": ["AlarmTopicKey", "Arn"]}
    key = sam["Resources"]["AlarmTopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    # CloudWatch may use the key to publish (it cannot with alias/aws/sns)
    (grant,) = [
        s for s in key["KeyPolicy"]["Statement"] if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert set(grant["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert grant["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def _function_statements(cfn: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role = cfn["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = []
    for policy in cfn["Resources"][role]["Properties"].get("Policies", []):
        document = policy["PolicyDocument"]["Statement"]
        statements.extend(document if isinstance(document, list) else [document])
    return statements


def test_put_events_is_allowed_on_the_run_event_bus_only(cfn: dict[str, Any]) -> None:
    for function in [*RUN_ENDING_FUNCTIONS, "SettingsChangedFunction"]:
        granting = [
            s for s in _function_statements(cfn, function) if "events:PutEvents" in json.dumps(s["Action"])
        ]
        if function not in RUN_ENDING_FUNCTIONS:
            assert not granting, function
            continue
        (statement,) = granting
        assert statement["Effect"] == "Allow" and statement["Action"] in (
            "events:PutEvents",
            ["events:PutEvents"],
        )
        resource = json.dumps(statement["Resource"])
        assert "event-bus/${eventBusName}" in resource and '"Ref": "RunEventBus"' in resource, resource


def test_the_bus_and_topic_are_outputs(sam: dict[str, Any]) -> None:
    assert sam["Resources"]["RunEventBus"]["Properties"]["Name"] == {
        "Fn::Sub": "rostersync-runs-${AWS::StackName}"
    }
    assert sam["Outputs"]["RunEventBusName"]["Value"] == {"Ref": "RunEventBus"}
    assert sam["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": "AlarmTopic"}
    variables = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["RUN_EVENT_BUS_NAME"] == {"Ref": "RunEventBus"}


def test_the_deployed_stack_has_the_bus_topic_and_alarms(
    aws_stack: dict[str, str], aws_clients: Callable[[str], Any], sam: dict[str, Any]
) -> None:
    bus = aws_clients("events").describe_event_bus(Name=aws_stack["RunEventBusName"])
    assert bus["Name"] == "rostersync-runs-rostersync" and bus["Arn"] == aws_stack["RunEventBusArn"]
    topic = aws_clients("sns").get_topic_attributes(TopicArn=aws_stack["AlarmTopicArn"])["Attributes"]
    assert topic["KmsMasterKeyId"].startswith("arn:aws:kms:")
    alarms = {a["AlarmName"]: a for a in aws_clients("cloudwatch").describe_alarms()["MetricAlarms"]}
    for logical_id, props in _alarms(sam).items():
        name = props["AlarmName"]["Fn::Sub"].replace("${AWS::StackName}", "rostersync")
        assert name in alarms, logical_id
        assert alarms[name]["AlarmActions"] == [aws_stack["AlarmTopicArn"]]
    failed = alarms["rostersync-failed-runs"]
    assert failed["Namespace"] == "Rostersync" and failed["MetricName"] == "FailedRuns"
    dlq = alarms["rostersync-staging-dlq"]
    staging_dlq_name = aws_stack["StagingDeadLetterQueueUrl"].rsplit("/", 1)[1]
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": staging_dlq_name}]
