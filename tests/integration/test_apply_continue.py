"""SPEC 8: an apply whose writes would outlive its invocation checkpoints and continues.

The handlers run against the moto server and a real demo SIS over HTTP. The apply gets no
time at all (`APPLY_TIME_BUDGET_S=0`), with chunks of 50 items: every invocation writes
exactly one chunk (an apply always advances), checkpoints its working set to the
staging bucket, and sends a `continue` message to ApplyQueue, which the test hands to the
handler again as Lambda's SQS poller would (each twice, and the apply message of the last
page once more). The run must end exactly as an uninterrupted apply of the same source,
and the working set it saves must carry the next incremental run.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from demo_district import connect_demo, product_of
from queues import drain, sqs_event

from rostersync.config import get_config
from rostersync.local.demo_data import generate_district
from rostersync.local.demo_sis import DemoSis
from rostersync.local.functions import load_handler
from rostersync.pipeline import apply_continue
from rostersync.pipeline.changes import KINDS
from rostersync.store import runs

DISTRICT = "lincoln"
REFERENCE = "lincoln-ref"  # the same source, applied in one invocation
CHUNK = 50
FIELDS = ("status", "counts", "itemWrites", "productWrites", "applyRead", "stateSaved")


@pytest.fixture(scope="module")
def handlers() -> dict[str, Any]:
    return {name: load_handler(name) for name in ("fetch_roster", "transform_page", "apply_run")}


@pytest.fixture
def sis():
    with DemoSis(generate_district(schools=2, students_per_school=20)) as server:
        yield server


def _fetch_and_transform(district_id: str, mode: str, ctx: Any) -> tuple[str, list[str]]:
    """A run fetched and transformed; the apply messages it queued."""
    aws_clients, outputs, handlers, load_event, lambda_context = ctx
    run_id = runs.start_run(district_id, trigger="api", mode=mode)["runId"]
    body = json.dumps({"type": "start", "districtId": district_id, "trigger": "api", "runId": run_id})
    lambda_context.set_remaining_time_in_millis(900_000)
    handlers["fetch_roster"](sqs_event(load_event("run_start_api"), [body]), lambda_context)
    staged = drain(aws_clients, outputs["StagingQueueUrl"])
    if staged:
        failures = handlers["transform_page"](
            sqs_event(load_event("staged_page"), [m["Body"] for m in staged]), lambda_context
        )
        assert failures == {"batchItemFailures": []}
    return run_id, [m["Body"] for m in drain(aws_clients, outputs["ApplyQueueUrl"])]


def _apply_until_done(district_id: str, run_id: str, bodies: list[str], ctx: Any) -> int:
    """Deliver ApplyQueue's messages until the run ends; every continue twice. Returns how
    many deliveries were ignored."""
    aws_clients, outputs, handlers, load_event, lambda_context = ctx
    ignored = 0
    first = bodies[:1]
    while bodies:
        (body,) = bodies
        handlers["apply_run"](sqs_event(load_event("apply_continue"), [body]), lambda_context)
        bodies = [m["Body"] for m in drain(aws_clients, outputs["ApplyQueueUrl"])]
        assert len(bodies) <= 1
        # SQS delivers at least once: the same message again, and the first apply message
        for stale in ({body} | set(first)) if bodies else ():
            before = runs.get_run(district_id, run_id)["applyInvocations"]
            handlers["apply_run"](sqs_event(load_event("apply_continue"), [stale]), lambda_context)
            assert runs.get_run(district_id, run_id)["applyInvocations"] == before
            ignored += 1
        assert drain(aws_clients, outputs["ApplyQueueUrl"]) == []
    return ignored


@pytest.fixture
def fresh_config():
    yield
    get_config.cache_clear()


def test_an_apply_checkpoints_its_writes_continues_and_ends_like_an_uninterrupted_one(
    clean_stack, aws_clients, handlers, load_event, lambda_context, sis, monkeypatch, fresh_config
):
    ctx = (aws_clients, clean_stack, handlers, load_event, lambda_context)
    connect_demo(aws_clients, REFERENCE, sis.url)
    connect_demo(aws_clients, DISTRICT, sis.url)
    monkeypatch.setattr(apply_continue, "WRITE_CHUNK", CHUNK)

    # Given the reference: applied in one (15-minute) invocation
    reference_run, bodies = _fetch_and_transform(REFERENCE, "full", ctx)
    assert _apply_until_done(REFERENCE, reference_run, bodies, ctx) == 0
    reference = runs.get_run(REFERENCE, reference_run)
    assert reference["status"] == "succeeded" and reference["applyInvocations"] == 1

    # When the same run's apply gets no time per invocation, its messages delivered twice
    run_id, bodies = _fetch_and_transform(DISTRICT, "full", ctx)
    monkeypatch.setenv("APPLY_TIME_BUDGET_S", "0")
    get_config.cache_clear()
    ignored = _apply_until_done(DISTRICT, run_id, bodies, ctx)

    # Then it took one invocation per chunk of each kind's creates, every duplicate ignored
    run = runs.get_run(DISTRICT, run_id)
    chunks = sum(math.ceil(run["counts"][kind]["created"] / CHUNK) for kind in KINDS)
    assert run["applyInvocations"] == chunks > 5
    assert ignored == 2 * (chunks - 1) - 1  # the first apply message, once per continue but the last
    assert run["applyContinue"]["seq"] == chunks - 1
    # And it ended as the uninterrupted apply did: the same product, counts and writes
    assert {f: run.get(f) for f in FIELDS} == {f: reference.get(f) for f in FIELDS}
    assert run["productWrites"] == sum(run["counts"][kind]["created"] for kind in KINDS)
    assert product_of(DISTRICT) == product_of(REFERENCE)

    # And the next incremental run builds on the working set the continued apply saved
    again, bodies = _fetch_and_transform(DISTRICT, "incremental", ctx)
    _apply_until_done(DISTRICT, again, bodies, ctx)
    second = runs.get_run(DISTRICT, again)
    assert second["status"] == "succeeded" and second["applyRead"]["savedState"] is True
    assert second["productWrites"] == 0 and second["applyInvocations"] == 1
    assert product_of(DISTRICT) == product_of(REFERENCE)
