"""Each function's handler against the moto server, driven by the sample events of events/."""

from __future__ import annotations

import json
from typing import Any

import pytest
from demo_district import connect_demo
from queues import drain, sqs_event

from rostersync.local.demo_data import generate_district
from rostersync.local.demo_sis import DemoSis
from rostersync.local.functions import load_handler
from rostersync.store import runs

DISTRICT = "lincoln"  # the district of the sample events


@pytest.fixture(scope="module")
def handlers() -> dict[str, Any]:
    return {name: load_handler(name) for name in ("api", "fetch_roster", "transform_page", "apply_run")}


@pytest.fixture
def sis():
    with DemoSis(generate_district()) as server:
        yield server


def _connect(aws_clients, sis_url: str) -> None:
    connect_demo(aws_clients, DISTRICT, sis_url)


def test_whole_pipeline_through_the_handlers(
    clean_stack, aws_clients, handlers, load_event, lambda_context, sis
):
    outputs = clean_stack
    # Given no settings, a force sync is refused with the error shape
    answer = handlers["api"](load_event("api_force_sync"), lambda_context)
    assert answer["statusCode"] == 404
    assert json.loads(answer["body"])["error"]["code"] == "not_found"

    # When the district is connected, the API queues a run and a second one is refused
    _connect(aws_clients, sis.url)
    answer = handlers["api"](load_event("api_force_sync"), lambda_context)
    assert answer["statusCode"] == 202
    run_id = json.loads(answer["body"])["runId"]
    again = handlers["api"](load_event("api_force_sync"), lambda_context)
    assert again["statusCode"] == 409 and json.loads(again["body"])["error"]["runId"] == run_id

    # The fetch function takes the run message and stages pages
    started = drain(aws_clients, outputs["RunQueueUrl"])
    assert [json.loads(m["Body"])["runId"] for m in started] == [run_id]
    result = handlers["fetch_roster"](sqs_event(load_event("run_start_api"), started), lambda_context)
    assert result == {"runIds": [run_id]}
    assert runs.get_run(DISTRICT, run_id)["fetchComplete"] is True

    # The transform function takes the S3 notifications (and ignores the test event)
    assert handlers["transform_page"](load_event("s3_test_event"), lambda_context) == {
        "batchItemFailures": []
    }
    staged = drain(aws_clients, outputs["StagingQueueUrl"])
    pages = [m for m in staged if "Records" in json.loads(m["Body"])]
    assert len(pages) == runs.get_run(DISTRICT, run_id)["pagesTotal"] + 1  # + the manifest
    failures = handlers["transform_page"](sqs_event(load_event("staged_page"), pages), lambda_context)
    assert failures == {"batchItemFailures": []}

    # The last page queued the apply stage, exactly once
    applies = drain(aws_clients, outputs["ApplyQueueUrl"])
    assert len(applies) == 1
    handlers["apply_run"](sqs_event(load_event("apply_run"), applies), lambda_context)

    event = load_event("api_get_run")
    event["path"] = f"/districts/{DISTRICT}/runs/{run_id}"
    run = json.loads(handlers["api"](event, lambda_context)["body"])
    assert run["status"] == "succeeded"
    assert run["counts"]["users"]["created"] == 137
    assert {e["sourcedId"] for e in run["errors"]} == {"u-dup-b", "u-stu-noemail", "u-tch-noemail"}

    teachers = json.loads(handlers["api"](load_event("api_list_users"), lambda_context)["body"])
    assert teachers["items"] and {u["role"] for u in teachers["items"]} == {"Teacher 1"}


def test_schedule_message_starts_its_own_run(
    clean_stack, aws_clients, handlers, load_event, lambda_context, sis
):
    _connect(aws_clients, sis.url)
    event = load_event("run_start_schedule")
    result = handlers["fetch_roster"](event, lambda_context)
    (run_id,) = result["runIds"]
    run = runs.get_run(DISTRICT, run_id)
    assert run["trigger"] == "schedule" and run["fetchComplete"] is True
    # a schedule firing while that run is active starts nothing
    assert handlers["fetch_roster"](event, lambda_context) == {"runIds": [None]}


def test_fetch_failure_fails_the_run_and_names_the_url(
    clean_stack, aws_clients, handlers, lambda_context, sis
):
    _connect(aws_clients, sis.url)
    sis.fail_next(403, count=50)
    run = runs.start_run(DISTRICT, trigger="api", mode="full")
    body = json.dumps({"type": "start", "districtId": DISTRICT, "trigger": "api", "runId": run["runId"]})
    event = {
        "Records": [
            {
                "messageId": "m1",
                "receiptHandle": "r",
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn",
                "awsRegion": "us-east-1",
            }
        ]
    }
    handlers["fetch_roster"](event, lambda_context)
    failed = runs.get_run(DISTRICT, run["runId"])
    assert failed["status"] == "failed"
    assert "403" in failed["message"] and "/ims/oneroster/v1p1/orgs" in failed["message"]
    assert runs.active_run_id(DISTRICT) is None  # the lock is released
