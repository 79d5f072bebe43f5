"""Faults inside the pipeline: crashes, redelivery, S3 events out of order,
racing force syncs, settings changed under a run, a throttling table, poison
pages (docs/faults.md lists them).

As in test_sis_faults: right status, a clear message, nothing lost, nothing
wrongly deleted, and a rerun converges to a clean sync's product state.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.awsrequest import AWSResponse
from fault_harness import DISTRICT, Pipeline, assert_no_leak, product, run_text

from rostersync import aws
from rostersync.config import get_config
from rostersync.local.demo_sis import DemoSis
from rostersync.staging.layout import page_key
from rostersync.store import roster, runs

RENAMED = "stu-1-00002"


def _baseline(pipe: Pipeline, connect: Any, sis: DemoSis) -> dict[str, Any]:
    """A first clean sync, then an edit in the SIS for the next run to apply."""
    connect()
    assert pipe.sync(DISTRICT)["status"] == "succeeded"
    sis.district.touch("users", RENAMED, givenName="Renamed")
    return product(DISTRICT)


def _rerun_converges(pipe: Pipeline, reference: Callable[[], dict[str, Any]]) -> None:
    again = pipe.sync(DISTRICT)
    assert again["status"] == "succeeded", again
    assert product(DISTRICT) == reference()


# ---- a transform that crashes half-way through a page ---------------------------------


def test_a_transform_crash_half_way_through_a_page_is_redelivered(pipe, connect, sis, reference, monkeypatch):
    connect()
    real_write = roster.write_mirror
    crashed: list[str] = []

    def write_half_then_crash(district_id, entity, records, **kwargs):
        if entity == "users" and records and not crashed:
            half = len(records) // 2
            real_write(district_id, entity, records[:half], **kwargs)  # some mirror writes land...
            crashed.append(entity)
            raise ConnectionError("the function died mid-page")  # ...then the invocation dies
        return real_write(district_id, entity, records, **kwargs)

    monkeypatch.setattr(roster, "write_mirror", write_half_then_crash)

    run = pipe.sync(DISTRICT)

    assert crashed and run["status"] == "succeeded", run
    assert run["pagesDone"] == run["pagesTotal"]  # the crashed page counted once
    assert product(DISTRICT) == reference()
    # Counts are the clean run's, not doubled by the redelivery.
    monkeypatch.undo()
    connect("reference-counts")
    clean = pipe.sync("reference-counts")
    assert run["counts"] == clean["counts"]
    assert run["itemWrites"] <= clean["itemWrites"]


# ---- S3 events duplicated, reordered, delayed ---------------------------------------


def test_staged_page_events_duplicated_reordered_and_delayed(pipe, connect, sis, reference):
    connect()
    sqs = pipe.clients("sqs")
    held: list[str] = []

    sent_again: set[str] = set()

    def scramble(function: str, event: dict[str, Any]) -> dict[str, Any]:
        if function != "transform_page":
            return event
        records = list(reversed(event["Records"]))  # reordered
        if len(records) > 1 and not held:
            held.append(records.pop(0)["body"])  # delayed: sent again once the others are done
        for record in records[: len(records) // 2 + 1]:
            if record["body"] not in sent_again:  # duplicated: delivered again later
                sent_again.add(record["body"])
                sqs.send_message(QueueUrl=pipe.outputs["StagingQueueUrl"], MessageBody=record["body"])
        return {"Records": records + records[:1]}  # and twice within one batch

    pipe.before_deliver = scramble
    status, started = pipe.force_sync(DISTRICT)
    assert status == 202
    run_id = started["runId"]
    pipe.drive(DISTRICT, run_id)
    # The held-back page arrives late: only then can the run finish.
    assert runs.get_run(DISTRICT, run_id)["status"] == "running"
    pipe.before_deliver = None
    sqs.send_message(QueueUrl=pipe.outputs["StagingQueueUrl"], MessageBody=held[0])
    run = pipe.drive(DISTRICT, run_id)

    assert run["status"] == "succeeded", run
    assert run["pagesDone"] == run["pagesTotal"]  # every page counted once
    assert product(DISTRICT) == reference()

    # A page event arriving after the run ended changes nothing.
    before = product(DISTRICT)
    sqs.send_message(QueueUrl=pipe.outputs["StagingQueueUrl"], MessageBody=held[0])
    pipe.drive(DISTRICT, run_id)
    assert runs.get_run(DISTRICT, run_id) == run
    assert product(DISTRICT) == before


# ---- two force syncs at once --------------------------------------------------------


def test_two_force_syncs_race(pipe, connect, sis, reference):
    connect()
    barrier = threading.Barrier(2)
    answers: list[tuple[int, dict[str, Any]]] = []

    def force() -> None:
        barrier.wait()
        answers.append(pipe.force_sync(DISTRICT))

    threads = [threading.Thread(target=force) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(status for status, _ in answers)
    assert statuses == [202, 409], answers
    accepted = next(body for status, body in answers if status == 202)
    refused = next(body for status, body in answers if status == 409)
    assert refused["error"]["code"] == "run_active" and refused["error"]["runId"] == accepted["runId"]
    run = pipe.drive(DISTRICT, accepted["runId"])
    assert run["status"] == "succeeded"
    listed, _ = runs.list_runs(DISTRICT, limit=10, cursor=None)
    assert [r["runId"] for r in listed] == [accepted["runId"]]  # exactly one run
    assert product(DISTRICT) == reference()


# ---- settings changed under a running run ---------------------------------------------


def _during_transform(pipe: Pipeline, action: Callable[[], None]) -> None:
    """Run `action` once, as the first staged pages are delivered (the fetch is done)."""
    done: list[bool] = []

    def hook(function: str, event: dict[str, Any]) -> dict[str, Any]:
        if function == "transform_page" and not done:
            done.append(True)
            action()
        return event

    pipe.before_deliver = hook


@pytest.mark.parametrize(
    "bad",
    ["{not json", json.dumps({"source": {"type": "oneroster"}, "syncMode": "sometimes"})],
    ids=["invalid-json", "invalid-settings"],
)
def test_corrupted_settings_during_a_run_keep_the_last_good(pipe, connect, sis, reference, bad):
    _baseline(pipe, connect, sis)
    good = json.loads(
        pipe.clients("ssm").get_parameter(Name=f"/rostersync/districts/{DISTRICT}/settings")["Parameter"][
            "Value"
        ]
    )
    outcomes: list[dict[str, Any]] = []
    _during_transform(pipe, lambda: outcomes.append(pipe.put_settings(DISTRICT, bad)))

    run = pipe.sync(DISTRICT)

    assert outcomes and outcomes[0]["action"] == "rejected", outcomes
    assert run["status"] == "succeeded", run  # finished on its last good settings
    assert product(DISTRICT) == reference()
    # The last good settings stay in force for the next run too.
    from rostersync.store.settings import load_last_good

    kept = load_last_good(DISTRICT)
    assert kept is not None and json.loads(kept.to_json())["source"]["baseUrl"] == good["source"]["baseUrl"]
    pipe.before_deliver = None
    _rerun_converges(pipe, reference)


def test_settings_deleted_during_a_run_fail_it_and_delete_nothing(pipe, connect, sis, reference):
    baseline = _baseline(pipe, connect, sis)
    _during_transform(pipe, lambda: pipe.delete_settings(DISTRICT))

    run = pipe.sync(DISTRICT)

    assert run["status"] == "failed", run
    assert "no valid settings" in run["message"]
    assert product(DISTRICT) == baseline  # nothing applied, nothing deleted
    assert runs.active_run_id(DISTRICT) is None
    pipe.before_deliver = None
    connect()  # the district is connected again
    _rerun_converges(pipe, reference)


# ---- a table that throttles writes ----------------------------------------------------


def _throttled() -> AWSResponse:
    code = "ProvisionedThroughputExceededException"
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "throttled"})
    return AWSResponse(
        url="http://throttled",
        status_code=400,
        headers={"x-amzn-ErrorType": code, "Content-Type": "application/x-amz-json-1.0"},
        raw=_Raw(body.encode()),
    )


def _nothing_processed(request_body: bytes) -> AWSResponse:
    """BatchWriteItem's answer when the table took none of the items: all unprocessed."""
    asked = json.loads(request_body)["RequestItems"]
    return AWSResponse(
        url="http://throttled",
        status_code=200,
        headers={"Content-Type": "application/x-amz-json-1.0"},
        raw=_Raw(json.dumps({"UnprocessedItems": asked}).encode()),
    )


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


class Throttle:
    """Answers DynamoDB writes with throttling errors, as a table over its
    capacity would (moto cannot throttle: the one mock of this suite)."""

    WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")

    def __init__(
        self,
        every: int,
        operations: tuple[str, ...] = WRITES,
        limit: int | None = None,
        unprocessed: bool = False,
    ) -> None:
        self.every = every
        self.limit = limit
        # Answer BatchWriteItem "all unprocessed" (200) instead of with an error.
        self.unprocessed = unprocessed
        self.operations = operations
        self.calls = 0
        self.throttled = 0
        self.lock = threading.Lock()
        self.clients = [aws.client("dynamodb"), aws.resource("dynamodb").meta.client]

    def answer(self, operation: str, request: Any) -> AWSResponse | None:
        if operation not in self.operations:
            return None
        with self.lock:
            self.calls += 1
            if self.calls % self.every or (self.limit is not None and self.throttled >= self.limit):
                return None
            self.throttled += 1
        if self.unprocessed and operation == "BatchWriteItem":
            return _nothing_processed(request.body)
        return _throttled()

    def __enter__(self) -> Throttle:
        for client in self.clients:
            client.meta.events.register_first("before-send.dynamodb", self._before_send)
        return self

    def _before_send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse | None:
        return self.answer(event_name.rsplit(".", 1)[-1], request)

    def __exit__(self, *exc_info: object) -> None:
        for client in self.clients:
            client.meta.events.unregister("before-send.dynamodb", self._before_send)


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's retries wait up to 20 s; a test has no need to."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.001)


@pytest.mark.parametrize("unprocessed", [False, True], ids=["throttling-errors", "unprocessed-items"])
def test_a_throttling_table_slows_the_run_but_loses_nothing(
    pipe, connect, sis, reference, quick_backoff, unprocessed
):
    connect()
    # Few enough that botocore's adaptive rate limiting does not crawl.
    operations = ("BatchWriteItem",) if unprocessed else Throttle.WRITES
    with Throttle(every=3, limit=8, operations=operations, unprocessed=unprocessed) as throttle:
        run = pipe.sync(DISTRICT)
    assert throttle.throttled == 8
    assert run["status"] == "succeeded", run
    assert run["pagesDone"] == run["pagesTotal"]
    assert product(DISTRICT) == reference()


def test_a_table_that_keeps_throttling_fails_the_run_clearly(pipe, connect, sis, reference, quick_backoff):
    baseline = _baseline(pipe, connect, sis)
    status, started = pipe.force_sync(DISTRICT)
    assert status == 202
    # Every product write of the apply stage is throttled, past botocore's retries.
    pipe.poll("fetch_roster", "RunQueueUrl", batch=1, partial=False)
    while pipe.poll("transform_page", "StagingQueueUrl", batch=10, partial=True):
        pass
    with Throttle(every=1, operations=("BatchWriteItem",)):
        pipe.poll("apply_run", "ApplyQueueUrl", batch=1, partial=False)
    run = pipe.drive(DISTRICT, started["runId"])

    assert run["status"] == "failed", run
    assert "applying the changes failed" in run["message"]
    assert_no_leak(run_text(run), sis.district)
    assert product(DISTRICT) == baseline  # the throttled writes never landed
    assert runs.active_run_id(DISTRICT) is None
    _rerun_converges(pipe, reference)


# ---- poison pages ---------------------------------------------------------------------


def test_the_template_and_the_transform_agree_on_max_receive_count():
    from rostersync.local.deploy import load_sam_template

    resources = load_sam_template(Path(__file__).resolve().parents[2] / "template.yaml")["Resources"]
    redrive = resources["StagingQueue"]["Properties"]["RedrivePolicy"]
    variables = resources["TransformPageFunction"]["Properties"]["Environment"]["Variables"]
    assert int(redrive["maxReceiveCount"]) == int(variables["STAGING_MAX_RECEIVE_COUNT"])
    assert get_config().staging_max_receive_count == int(redrive["maxReceiveCount"])


def test_a_poison_page_goes_to_the_dead_letter_queue_and_fails_its_run(pipe, connect, sis, reference):
    baseline = _baseline(pipe, connect, sis)
    s3 = pipe.clients("s3")
    poisoned: list[str] = []

    def poison(function: str, event: dict[str, Any]) -> dict[str, Any]:
        if function == "transform_page" and not poisoned:
            # A staged page whose body is not JSON: every try fails.
            run_id = runs.active_run_id(DISTRICT)
            key = page_key(DISTRICT, run_id, "users", 1)
            s3.put_object(Bucket=pipe.outputs["StagingBucketName"], Key=key, Body=b"<html>not a page</html>")
            poisoned.append(key)
        return event

    pipe.before_deliver = poison

    run = pipe.sync(DISTRICT)

    assert run["status"] == "failed", run  # not stuck running
    assert "users/000001" in run["message"] and "dead-letter" in run["message"]
    assert run.get("poisonPages") == ["users/000001"]
    errors = runs.list_issues(DISTRICT, run["runId"], "ERR")
    assert any(e["entity"] == "page" and e["sourcedId"] == "users/000001" for e in errors)
    assert_no_leak(run_text(run), sis.district)
    dead = pipe.dead_letters()
    dead_keys = [
        unquote_plus(r["s3"]["object"]["key"]) for m in dead for r in json.loads(m["Body"]).get("Records", [])
    ]
    assert dead_keys and set(dead_keys) == {poisoned[0]}, dead_keys
    assert product(DISTRICT) == baseline  # nothing applied, nothing deleted
    assert runs.active_run_id(DISTRICT) is None
    pipe.before_deliver = None
    _rerun_converges(pipe, reference)
