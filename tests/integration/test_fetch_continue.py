"""SPEC 8: "a fetch that would outlive a Lambda invocation (15 min) checkpoints and continues".

The fetch handler runs against the moto server and a real demo SIS over HTTP,
with a Lambda context that leaves each invocation less time than one page takes:
every invocation stages one page, checkpoints, and sends a `continue` message to RunQueue,
which the test reads with boto3 and hands to the handler again, as Lambda's
SQS poller would (duplicates and stale copies included). The run must then end
exactly as an uninterrupted run of the same source does.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

import pytest
from demo_district import connect_demo, product_of
from queues import drain, sqs_event

from rostersync.local.demo_data import generate_district
from rostersync.local.demo_sis import DemoSis
from rostersync.local.functions import load_handler
from rostersync.pipeline.queues import RunMessage
from rostersync.sources.direct import DirectPushConnector, store_pushed_page
from rostersync.sources.oneroster_csv import OneRosterCsvBundle
from rostersync.staging.layout import manifest_key, page_key
from rostersync.store import pushes, roster, runs

DISTRICT = "lincoln"
REFERENCE = "lincoln-ref"  # the same source, read in one invocation
PAGE_SIZE = 20
# Each invocation gets 40 ms: a quarter is kept in reserve, so it may fetch for 30 ms,
# less than the SIS takes to answer one page (50 ms at least). So every invocation
# stages exactly one page (a fetch always advances) and checkpoints, however fast or
# loaded the machine: the count of invocations does not depend on the clock.
REMAINING_MS = 40
SIS_LATENCY_S = 0.05
PRODUCT_KINDS = ("schools", "classes", "users", "enrollments")


@pytest.fixture(scope="module")
def handlers() -> dict[str, Any]:
    return {name: load_handler(name) for name in ("fetch_roster", "transform_page", "apply_run")}


@pytest.fixture
def sis():
    # A small district keeps the test quick.
    district = generate_district(schools=2, students_per_school=20)
    with DemoSis(district, latency_s=SIS_LATENCY_S) as server:
        yield server


def _connect(aws_clients, district_id: str, sis_url: str) -> None:
    connect_demo(aws_clients, district_id, sis_url, page_size=PAGE_SIZE)


def _start_body(run_id: str) -> str:
    return json.dumps({"type": "start", "districtId": DISTRICT, "trigger": "api", "runId": run_id})


def _staged_keys(messages: list[dict[str, Any]]) -> list[str]:
    keys = []
    for message in messages:
        for record in json.loads(message["Body"]).get("Records", []):
            keys.append(unquote_plus(record["s3"]["object"]["key"]))
    return keys


def _transform_and_apply(aws_clients, outputs, handlers, load_event, lambda_context, staged) -> None:
    if staged:
        failures = handlers["transform_page"](
            sqs_event(load_event("staged_page"), [m["Body"] for m in staged]), lambda_context
        )
        assert failures == {"batchItemFailures": []}
    applies = drain(aws_clients, outputs["ApplyQueueUrl"])
    assert len(applies) == 1
    lambda_context.set_remaining_time_in_millis(900_000)  # the apply has a whole invocation
    handlers["apply_run"](sqs_event(load_event("apply_run"), [m["Body"] for m in applies]), lambda_context)


def test_fetch_checkpoints_continues_and_ends_like_an_uninterrupted_run(
    clean_stack, aws_clients, handlers, load_event, lambda_context, sis
):
    outputs = clean_stack
    run_queue, staging_queue = outputs["RunQueueUrl"], outputs["StagingQueueUrl"]
    _connect(aws_clients, REFERENCE, sis.url)
    _connect(aws_clients, DISTRICT, sis.url)

    # Given the reference: the same source read in one (15-minute) invocation
    reference_run = runs.start_run(REFERENCE, trigger="api", mode="full")["runId"]
    body = json.dumps({"type": "start", "districtId": REFERENCE, "trigger": "api", "runId": reference_run})
    assert handlers["fetch_roster"](sqs_event(load_event("run_start_api"), [body]), lambda_context) == {
        "runIds": [reference_run]
    }
    assert drain(aws_clients, run_queue) == []  # no continue: it had time enough
    _transform_and_apply(
        aws_clients, outputs, handlers, load_event, lambda_context, drain(aws_clients, staging_queue)
    )
    reference = runs.get_run(REFERENCE, reference_run)
    assert reference["status"] == "succeeded" and reference["fetchInvocations"] == 1

    # When the run's fetch gets a second per invocation, and RunQueue's messages are delivered,
    # some twice, and some again once a later checkpoint exists
    run_id = runs.start_run(DISTRICT, trigger="api", mode="full")["runId"]
    bodies = [_start_body(run_id)]
    accepted: list[tuple[float, float]] = []  # (began, seconds) of each invocation that fetched
    continues: list[str] = []
    ignored = 0
    while bodies:
        (body,) = bodies
        lambda_context.set_remaining_time_in_millis(REMAINING_MS)
        began = time.monotonic()
        wall = datetime.now(UTC)
        result = handlers["fetch_roster"](sqs_event(load_event("run_continue"), [body]), lambda_context)
        seconds = time.monotonic() - began
        assert result == {"runIds": [run_id]}
        accepted.append((wall.timestamp(), seconds))
        bodies = [m["Body"] for m in drain(aws_clients, run_queue)]
        assert len(bodies) <= 1
        for stale in (body, *continues[-2:-1]):
            if json.loads(stale)["type"] == "continue":
                # The same message again (SQS delivers at least once), and an older one
                again = handlers["fetch_roster"](
                    sqs_event(load_event("run_continue"), [stale]), lambda_context
                )
                assert again == {"runIds": [None]}
                ignored += 1
        continues.extend(bodies)

    # Then it took several invocations, none past its time
    run = runs.get_run(DISTRICT, run_id)
    assert len(accepted) == run["pagesTotal"] > 3, (len(accepted), run["pagesTotal"])
    assert ignored >= 2 * (len(accepted) - 2)
    assert run["fetchInvocations"] == len(accepted)
    # (That no invocation starts a page it cannot finish in its time is proven on a fake
    # clock in tests/unit/test_fetch_resume.py: wall time on a shared machine is noise.)
    checkpoints = [json.loads(body)["checkpoint"] for body in continues]
    assert [c["seq"] for c in checkpoints] == list(range(1, len(accepted)))
    assert all(c["mode"] == "full" and c["since"] is None for c in checkpoints)

    # And every page was staged exactly once, the manifest last
    staged = drain(aws_clients, staging_queue)
    keys = _staged_keys(staged)
    assert [key for key, times in Counter(keys).items() if times > 1] == []
    assert keys[-1] == manifest_key(DISTRICT, run_id)
    pages = run["fetchCheckpoint"]["pages"]  # the last checkpoint's count, then the rest
    assert run["fetchComplete"] is True and run["pagesTotal"] == len(keys) - 1
    manifest = {
        page_key(DISTRICT, run_id, entity, number)
        for entity, count in json.loads(_manifest(aws_clients, outputs, run_id))["pages"].items()
        for number in range(count)
    }
    assert set(keys) - {manifest_key(DISTRICT, run_id)} == manifest
    assert sum(pages.values()) < run["pagesTotal"]

    # And the run ends with the product of the uninterrupted run
    _transform_and_apply(aws_clients, outputs, handlers, load_event, lambda_context, staged)
    run = runs.get_run(DISTRICT, run_id)
    assert run["status"] == "succeeded"
    assert run["counts"] == reference["counts"]
    assert run["pagesTotal"] == reference["pagesTotal"]
    assert product_of(DISTRICT) == product_of(REFERENCE)

    # And the watermark is the first invocation's fetch start, not a later one's
    watermark = runs.get_district(DISTRICT)["watermark"]
    assert watermark == run["fetchStartedAt"]
    first_began, first_seconds = accepted[0]
    at = datetime.fromisoformat(watermark.replace("Z", "+00:00")).timestamp()
    assert first_began - 0.01 <= at <= first_began + first_seconds

    # And a continue for the finished run is ignored
    assert handlers["fetch_roster"](
        sqs_event(load_event("run_continue"), [continues[-1]]), lambda_context
    ) == {"runIds": [None]}


def _manifest(aws_clients, outputs, run_id: str) -> str:
    answer = aws_clients("s3").get_object(
        Bucket=outputs["StagingBucketName"], Key=manifest_key(DISTRICT, run_id)
    )
    return answer["Body"].read().decode()


def test_a_checkpoint_is_continued_once_unless_its_invocation_died(clean_stack):
    # Given a running fetch that checkpointed (seq 1)
    run_id = runs.start_run(DISTRICT, trigger="api", mode="full")["runId"]
    soon = runs.now_utc() + timedelta(minutes=15)
    assert runs.claim_fetch_start(DISTRICT, run_id, token="a", lease_until=soon, fetch_started_at="t0")
    assert not runs.claim_fetch_start(DISTRICT, run_id, token="b", lease_until=soon, fetch_started_at="t1")
    assert not runs.claim_fetch_continue(DISTRICT, run_id, 1, token="b", lease_until=soon)  # not saved yet
    assert runs.save_fetch_checkpoint(DISTRICT, run_id, 1, {"seq": 1}, token="a")

    # When its continue is delivered twice while the first delivery is still working
    assert runs.claim_fetch_continue(
        DISTRICT, run_id, 1, token="c", lease_until=runs.now_utc() + timedelta(seconds=1)
    )
    assert not runs.claim_fetch_continue(DISTRICT, run_id, 1, token="d", lease_until=soon)
    # Then only the first proceeds; a stale start or checkpoint changes nothing
    assert not runs.save_fetch_checkpoint(DISTRICT, run_id, 2, {"seq": 2}, token="a")
    assert not runs.claim_fetch_continue(DISTRICT, run_id, 0, token="e", lease_until=soon)

    # When the invocation holding it died (its lease has passed), SQS's redelivery takes over
    time.sleep(1.1)
    assert runs.claim_fetch_continue(DISTRICT, run_id, 1, token="f", lease_until=soon)
    assert not runs.claim_fetch_continue(DISTRICT, run_id, 1, token="g", lease_until=soon)
    # and the dead one can no longer checkpoint over it
    assert not runs.save_fetch_checkpoint(DISTRICT, run_id, 2, {"seq": 2}, token="c")
    assert runs.save_fetch_checkpoint(DISTRICT, run_id, 2, {"seq": 2}, token="f")
    run = runs.get_run(DISTRICT, run_id)
    assert run["fetchSeq"] == 2 and run["fetchStartedAt"] == "t0" and run["status"] == "running"
    # A start delivered again never restarts a fetch that has checkpointed
    assert not runs.claim_fetch_start(DISTRICT, run_id, token="h", lease_until=soon, fetch_started_at="t2")


def test_a_start_whose_invocation_died_before_any_checkpoint_starts_over(clean_stack):
    run_id = runs.start_run(DISTRICT, trigger="api", mode="full")["runId"]
    dies = runs.now_utc() + timedelta(seconds=1)
    assert runs.claim_fetch_start(DISTRICT, run_id, token="a", lease_until=dies, fetch_started_at="t0")
    # While it may still be running, the start delivered again is ignored
    assert not runs.claim_fetch_start(DISTRICT, run_id, token="b", lease_until=dies, fetch_started_at="t1")
    time.sleep(1.1)
    # Once its lease has passed, SQS's redelivery starts the fetch over
    assert runs.claim_fetch_start(DISTRICT, run_id, token="c", lease_until=dies, fetch_started_at="t2")
    assert runs.get_run(DISTRICT, run_id)["fetchStartedAt"] == "t2"


def test_direct_push_resumes_at_a_page_without_reading_the_pages_before(clean_stack, aws_clients):
    # Given a completed push of five users pages
    push_id = pushes.open_push(DISTRICT)["pushId"]
    sent = [[{"sourcedId": f"u-{n}-{i}"} for i in range(3)] for n in range(5)]
    for number, records in enumerate(sent):
        etag = store_pushed_page(DISTRICT, push_id, "users", number * 2, records)
        pushes.record_page(DISTRICT, push_id, "users", number * 2, records=len(records), etag=etag)
    pushes.complete_push(DISTRICT, push_id, run_id="r1", mode="full")
    whole = list(DirectPushConnector(DISTRICT, push_id).pages("users"))
    assert [p.records for p in whole] == sent and whole[-1].next_position() == {"page": 5, "end": True}

    for cut in range(1, len(whole) + 1):
        position = json.loads(json.dumps(whole[cut - 1].next_position()))
        # When a new invocation resumes after page `cut - 1`
        rest = list(DirectPushConnector(DISTRICT, push_id).pages("users", None, position))
        # Then it yields the pages after it, numbered as before
        assert [(p.number, p.records) for p in rest] == [(p.number, p.records) for p in whole[cut:]]


def test_sftp_bundle_continue_reads_the_bundle_it_began(tmp_path):
    # Given a bundle on the district's SFTP server, and a newer one uploaded since the run began
    from sshd_server import running_sshd

    from rostersync.errors import SourceError
    from rostersync.local.demo_csv import write_bundle
    from rostersync.sources.factory import build_connector

    with running_sshd() as sshd:
        began = write_bundle(generate_district(schools=2, students_per_school=20), sshd.folder / "a.zip")
        newer = write_bundle(generate_district(schools=2, students_per_school=10), sshd.folder / "b.zip")
        for path, mtime in ((began, 1_700_000_000), (newer, 1_700_000_100)):
            path.chmod(0o644)
            os.utime(path, (mtime, mtime))
        source = {
            "type": "oneroster-csv",
            "pageSize": 9,
            "sftp": {
                "host": "127.0.0.1",
                "port": sshd.port,
                "path": str(sshd.folder),
                "username": sshd.username,
                "hostKey": sshd.host_key,
            },
        }
        credentials = {"password": sshd.password}

        def connect(message: RunMessage):
            return build_connector(source, credentials, district_id=DISTRICT, message=message)

        start = RunMessage(type="start", districtId=DISTRICT)
        connect(start).close()
        assert start.checkpoint["bundleName"] == "b.zip"  # a new run takes the newest
        reference = OneRosterCsvBundle(began, page_size=9)
        whole = list(reference.pages("users"))
        reference.close()

        # When a continue names the bundle it began with
        checkpoint = {"bundleName": "a.zip", "seq": 1, "entity": "users", "position": {"page": 2}}
        connector = connect(
            RunMessage(type="continue", districtId=DISTRICT, runId="r", checkpoint=checkpoint)
        )
        try:
            rest = list(connector.pages("users", None, {"page": 2}))
        finally:
            connector.close()
        # Then it reads that bundle, from that page on
        assert [(p.number, p.records) for p in rest] == [(p.number, p.records) for p in whole[2:]]

        # And a bundle gone from the server fails the continued run
        began.unlink()
        with pytest.raises(SourceError, match=r"'a\.zip' is gone"):
            connect(RunMessage(type="continue", districtId=DISTRICT, runId="r", checkpoint=checkpoint))


def test_a_continuation_that_cannot_be_queued_fails_the_run_instead_of_leaving_it_running(
    clean_stack, aws_clients, handlers, load_event, lambda_context, sis, monkeypatch
):
    from rostersync.pipeline import fetch

    _connect(aws_clients, DISTRICT, sis.url)

    def refused(message: RunMessage) -> None:
        raise RuntimeError("queue unavailable")

    monkeypatch.setattr(fetch, "send_run_message", refused)
    run_id = runs.start_run(DISTRICT, trigger="api", mode="full")["runId"]
    lambda_context.set_remaining_time_in_millis(REMAINING_MS)
    handlers["fetch_roster"](sqs_event(load_event("run_continue"), [_start_body(run_id)]), lambda_context)

    run = runs.get_run(DISTRICT, run_id)
    assert run["status"] == "failed"
    assert run["message"].startswith("fetch failed: its continuation could not be queued (RuntimeError)")
    assert runs.get_district(DISTRICT).get("watermark") is None  # nothing was applied
    assert list(roster.iter_product(DISTRICT, "users")) == []
    # The lock is free: the next run can start
    assert runs.start_run(DISTRICT, trigger="api", mode="full")["runId"] != run_id
