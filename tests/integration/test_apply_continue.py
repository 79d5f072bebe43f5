"""SPEC 8: an apply whose reading or writes would outlive its invocation checkpoints and
continues.

The handlers run against the moto server and a real demo SIS over HTTP. The apply gets no
time at all (`APPLY_TIME_BUDGET_S=0`), with chunks of 50 rows and items: every invocation
takes exactly one step (an apply always advances): notes one staged page, reads one
chunk of the mirror or of the stored product, plans, or writes one chunk. Then it
checkpoints its working set to the staging bucket and sends a `continue` message to
ApplyQueue, which the test hands to the handler again as Lambda's SQS poller would (each
twice, and the apply message of the last page once more). The run must end exactly as an
uninterrupted apply of the same source, and the working set it saves must carry the next
incremental run.
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
from rostersync.pipeline import apply_continue, apply_read
from rostersync.pipeline.changes import KINDS
from rostersync.sources.base import ENTITIES
from rostersync.staging.pages import iter_run_pages
from rostersync.store import roster, runs

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


def _fetch_and_transform(
    district_id: str, mode: str, ctx: Any, *, dry_run: bool = False
) -> tuple[str, list[str]]:
    """A run fetched and transformed; the apply messages it queued."""
    aws_clients, outputs, handlers, load_event, lambda_context = ctx
    run_id = runs.start_run(district_id, trigger="api", mode=mode, dry_run=dry_run)["runId"]
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
    monkeypatch.setattr(apply_read, "READ_CHUNK", CHUNK)

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

    # Then it took one invocation per step: per staged page and one after them, per chunk of
    # each entity's mirror records (a short chunk ends it) and of each kind's stored items
    # (none: a first sync), the plan with the first chunk of the run's issues, a chunk of
    # issues each, and per chunk of each kind's creates; every duplicate ignored
    run = runs.get_run(DISTRICT, run_id)
    pages = len(list(iter_run_pages(DISTRICT, run_id)))
    mirror = sum(len(list(roster.iter_mirror(DISTRICT, entity))) // CHUNK + 1 for entity in ENTITIES)
    chunks = sum(math.ceil(run["counts"][kind]["created"] / CHUNK) for kind in KINDS)
    issues = sum(sum(runs.issue_counts(DISTRICT, run_id, kind).values()) for kind in ("ERR", "WARN"))
    steps = pages + 1 + mirror + len(KINDS) + chunks
    assert steps <= run["applyInvocations"] <= steps + math.ceil(issues / CHUNK)
    assert pages > 3 and chunks > 5
    invocations = run["applyInvocations"]
    assert ignored == 2 * (invocations - 1) - 1  # the first apply message, once per continue but the last
    assert run["applyContinue"]["seq"] == invocations - 1
    # And it ended as the uninterrupted apply did: the same product, counts and writes
    assert {f: run.get(f) for f in FIELDS} == {f: reference.get(f) for f in FIELDS}
    assert run["productWrites"] == sum(run["counts"][kind]["created"] for kind in KINDS)
    assert product_of(DISTRICT) == product_of(REFERENCE)
    # and recorded the same errors and warnings, a chunk at a time
    assert issues > 0
    for kind in ("ERR", "WARN"):
        assert _issues(DISTRICT, run_id, kind) == _issues(REFERENCE, reference_run, kind)

    # And the next incremental run builds on the working set the continued apply saved
    again, bodies = _fetch_and_transform(DISTRICT, "incremental", ctx)
    _apply_until_done(DISTRICT, again, bodies, ctx)
    second = runs.get_run(DISTRICT, again)
    assert second["status"] == "succeeded" and second["applyRead"]["savedState"] is True
    assert second["productWrites"] == 0
    # a step per page, then the plan on the saved working set, which starts an invocation
    assert second["applyInvocations"] == len(list(iter_run_pages(DISTRICT, again))) + 1
    assert product_of(DISTRICT) == product_of(REFERENCE)
    _no_checkpoint_left(aws_clients, clean_stack)


def _both(
    mode: str, ctx: Any, monkeypatch: Any, *, dry_run: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same run of the reference (one invocation) and of the district (no time at all)."""
    monkeypatch.delenv("APPLY_TIME_BUDGET_S", raising=False)
    get_config.cache_clear()
    reference_run, bodies = _fetch_and_transform(REFERENCE, mode, ctx, dry_run=dry_run)
    _apply_until_done(REFERENCE, reference_run, bodies, ctx)
    run_id, bodies = _fetch_and_transform(DISTRICT, mode, ctx, dry_run=dry_run)
    monkeypatch.setenv("APPLY_TIME_BUDGET_S", "0")
    get_config.cache_clear()
    _apply_until_done(DISTRICT, run_id, bodies, ctx)
    return runs.get_run(REFERENCE, reference_run), runs.get_run(DISTRICT, run_id)


def _issues(district_id: str, run_id: str, kind: str) -> list[dict[str, str]]:
    listed, _ = runs.page_issues(district_id, run_id, kind, limit=10_000, cursor=None)  # type: ignore[arg-type]
    return listed


def _no_checkpoint_left(aws_clients: Any, outputs: dict[str, str]) -> None:
    listed = aws_clients("s3").list_objects_v2(Bucket=outputs["StagingBucketName"], Prefix="state/")
    assert [o["Key"] for o in listed.get("Contents", []) if "/apply-" in o["Key"]] == []


def test_continued_updates_deletions_and_halts_end_like_uninterrupted_ones(
    clean_stack, aws_clients, handlers, load_event, lambda_context, sis, monkeypatch, fresh_config
):
    ctx = (aws_clients, clean_stack, handlers, load_event, lambda_context)
    connect_demo(aws_clients, REFERENCE, sis.url)
    connect_demo(aws_clients, DISTRICT, sis.url)
    monkeypatch.setattr(apply_continue, "WRITE_CHUNK", 3)
    monkeypatch.setattr(apply_read, "READ_CHUNK", 40)
    students = [u["sourcedId"] for u in sis.district.users if u["sourcedId"].startswith("stu-")]
    reference, run = _both("full", ctx, monkeypatch)
    assert run["applyInvocations"] > 1

    # When users change and one is sent as tobedeleted: an incremental run on the saved working
    # set, its updates and removals written a chunk at a time
    for sid in students[:7]:
        sis.district.touch("users", sid, familyName="Changed")
    sis.district.touch("users", students[7], status="tobedeleted")
    reference, run = _both("incremental", ctx, monkeypatch)
    assert run["applyRead"]["savedState"] is True and run["applyInvocations"] > 2
    assert run["counts"]["users"]["updated"] == 7 and run["counts"]["users"]["deleted"] == 1
    assert {f: run.get(f) for f in FIELDS} == {f: reference.get(f) for f in FIELDS}
    assert product_of(DISTRICT) == product_of(REFERENCE)

    # And a full run missing four students deactivates them and drops them from the mirror,
    # three records per chunk after the product's writes
    for sid in students[8:12]:
        sis.district.remove("users", sid)
    reference, run = _both("full", ctx, monkeypatch)
    assert run["status"] == "succeeded" and run["counts"]["users"]["deleted"] == 4
    assert {f: run.get(f) for f in FIELDS} == {f: reference.get(f) for f in FIELDS}
    assert product_of(DISTRICT) == product_of(REFERENCE)
    mirror = [sid for sid, _, _ in roster.iter_mirror(DISTRICT, "users")]
    assert not set(students[8:12]) & set(mirror)
    assert mirror == [sid for sid, _, _ in roster.iter_mirror(REFERENCE, "users")]

    # And a full run missing a third of the students halts: other changes in, nothing deleted
    for sid in students[12 : 12 + len(students) // 3]:
        sis.district.remove("users", sid)
    sis.district.touch("users", students[0], familyName="Again")
    reference, run = _both("full", ctx, monkeypatch)
    assert run["status"] == "halted" and run["counts"]["users"]["updated"] == 1
    assert {f: run.get(f) for f in FIELDS} == {f: reference.get(f) for f in FIELDS}
    assert product_of(DISTRICT) == product_of(REFERENCE)
    _no_checkpoint_left(aws_clients, clean_stack)


def test_continued_dry_runs_preview_what_uninterrupted_ones_do(
    clean_stack, aws_clients, handlers, load_event, lambda_context, sis, monkeypatch, fresh_config
):
    """A dry run reads its own records (`overlay`) and the mirror under them, a step at a time."""
    ctx = (aws_clients, clean_stack, handlers, load_event, lambda_context)
    connect_demo(aws_clients, REFERENCE, sis.url)
    connect_demo(aws_clients, DISTRICT, sis.url)
    monkeypatch.setattr(apply_read, "READ_CHUNK", 20)
    students = [u["sourcedId"] for u in sis.district.users if u["sourcedId"].startswith("stu-")]
    preview = ("status", "counts", "preview", "itemWrites")

    # A first sync's dry run: every record is the run's own, none in the mirror
    reference, run = _both("full", ctx, monkeypatch, dry_run=True)
    assert run["status"] == "previewed" and run["applyInvocations"] > 20
    assert run["counts"]["users"]["created"] > 40
    assert {f: run.get(f) for f in preview} == {f: reference.get(f) for f in preview}
    assert product_of(DISTRICT) == product_of(REFERENCE) == {kind: [] for kind in KINDS}

    # After a full sync: changed, new and missing records laid over the mirror
    _both("full", ctx, monkeypatch)
    for sid in students[:5]:
        sis.district.touch("users", sid, familyName="Previewed")
    sis.district.remove("users", students[5])
    reference, run = _both("full", ctx, monkeypatch, dry_run=True)
    assert run["status"] == "previewed" and run["counts"]["users"]["updated"] == 5
    assert run["counts"]["users"]["deleted"] == 1
    assert {f: run.get(f) for f in preview} == {f: reference.get(f) for f in preview}
    assert product_of(DISTRICT) == product_of(REFERENCE)
    _no_checkpoint_left(aws_clients, clean_stack)
