"""The `direct` source (SPEC 2): pushes through the API handler, the connector
that reads them, and a pushed district synced through every handler.

The API is driven with the sample events events/api_push_*.json, the other
functions as tests/integration/test_handlers.py drives them.

A district whose source is not `direct` has no push endpoint: opening (or
completing) a push there answers 404 with a message that names its source type.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from queues import drain, sqs_event

from rostersync import aws
from rostersync.config import get_config
from rostersync.errors import SourceError
from rostersync.local.demo import demo_settings
from rostersync.local.demo_data import generate_district
from rostersync.local.functions import load_handler
from rostersync.settings.model import parse_settings
from rostersync.sources.direct import DirectPushConnector, push_page_key
from rostersync.store import pushes, runs
from rostersync.store.settings import save_last_good
from rostersync.store.table import table

DISTRICT = "lincoln"  # the district of the sample events
API = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture(scope="module")
def handlers() -> dict[str, Any]:
    return {name: load_handler(name) for name in ("api", "fetch_roster", "transform_page", "apply_run")}


def _connect(source: dict[str, Any], district_id: str = DISTRICT) -> None:
    settings = demo_settings("http://sis.invalid")
    settings["source"] = source
    save_last_good(
        district_id, parse_settings(json.dumps(settings)), 1, parameter_modified_at=datetime.now(UTC)
    )


@pytest.fixture
def direct(clean_stack) -> dict[str, str]:
    """A clean stack whose district `lincoln` takes pushes."""
    _connect({"type": "direct"})
    return clean_stack


@pytest.fixture
def api(handlers, load_event, lambda_context) -> API:
    """`api(method, path, body)` -> (status, JSON answer), through the API handler."""
    templates = {"POST": "api_push_open", "PUT": "api_push_page", "GET": "api_push_open"}

    def call(method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        event = load_event(templates[method])
        event["httpMethod"] = event["requestContext"]["httpMethod"] = method
        event["path"] = path
        event["body"] = body if body is None or isinstance(body, str) else json.dumps(body)
        answer = handlers["api"](event, lambda_context)
        return answer["statusCode"], json.loads(answer["body"])

    return call


def _open(api: API, district_id: str = DISTRICT) -> str:
    status, body = api("POST", f"/districts/{district_id}/pushes")
    assert status == 201, body
    return str(body["pushId"])


def _page_path(push_id: str, entity: str, page: int | str) -> str:
    return f"/districts/{DISTRICT}/pushes/{push_id}/{entity}/{page}"


def _complete_path(push_id: str) -> str:
    return f"/districts/{DISTRICT}/pushes/{push_id}/complete"


def _user(n: int) -> dict[str, Any]:
    return {"sourcedId": f"u-{n:04d}", "status": "active", "role": "student", "email": f"s{n}@example.org"}


def _assert_error(status: int, body: dict[str, Any], expected_status: int, code: str) -> str:
    assert status == expected_status, body
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return str(body["error"]["message"])


# ------------------------------------------------------------------ the API ---


def test_sample_events_open_page_and_complete(direct, handlers, load_event, lambda_context, aws_clients):
    # The sample events name one push id; the store makes its own, so it is swapped in.
    opened = handlers["api"](load_event("api_push_open"), lambda_context)
    assert opened["statusCode"] == 201
    push_id = json.loads(opened["body"])["pushId"]
    for name, expected in (("api_push_page", 200), ("api_push_complete", 202)):
        event = load_event(name)
        event["path"] = event["path"].replace("20261130T020000000Z-a1b2c3", push_id)
        answer = handlers["api"](event, lambda_context)
        assert answer["statusCode"] == expected, answer["body"]
    (message,) = drain(aws_clients, direct["RunQueueUrl"])
    assert json.loads(message["Body"])["checkpoint"] == {"pushId": push_id}


def test_open_pages_complete_queues_a_push_run(direct, api, aws_clients):
    # Given an open push
    status, opened = api("POST", f"/districts/{DISTRICT}/pushes")
    assert status == 201 and set(opened) == {"pushId", "expiresAt"}
    push_id = opened["pushId"]
    assert pushes.is_push_id(push_id)

    # When pages are sent, one of them twice (the second replaces the first)
    assert api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1), _user(2)]}) == (
        200,
        {"pushId": push_id, "entity": "users", "page": 0, "records": 2},
    )
    assert api("PUT", _page_path(push_id, "users", 1), {"users": [_user(3)]})[0] == 200
    assert api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1), _user(2), _user(4)]})[0] == 200
    assert api("PUT", _page_path(push_id, "orgs", 0), {"orgs": []})[0] == 200

    # Then the push counts each page once, with its latest records
    status, view = api("GET", f"/districts/{DISTRICT}/pushes/{push_id}")
    assert status == 200
    assert view["status"] == "open" and view["runId"] is None
    assert view["pages"] == {"orgs": 1, "academicSessions": 0, "classes": 0, "users": 2, "enrollments": 0}
    assert view["records"]["users"] == 4 and view["records"]["orgs"] == 0
    # ...and its pages wait outside staging/, so nothing is transformed yet
    s3 = aws_clients("s3")
    staged = s3.list_objects_v2(Bucket=direct["StagingBucketName"], Prefix="staging/").get("KeyCount")
    assert staged == 0
    assert s3.head_object(
        Bucket=direct["StagingBucketName"], Key=push_page_key(DISTRICT, push_id, "users", 1)
    )

    # When it is completed (full by default)
    status, completed = api("POST", _complete_path(push_id))
    assert status == 202, completed
    run_id = completed["runId"]
    assert completed == {"runId": run_id, "status": "queued", "pushId": push_id}

    # Then one run starts like a force sync, and RunQueue carries the push id
    run = runs.get_run(DISTRICT, run_id)
    assert run["trigger"] == "push" and run["mode"] == "full" and run["status"] == "queued"
    assert runs.active_run_id(DISTRICT) == run_id
    (message,) = drain(aws_clients, direct["RunQueueUrl"])
    body = json.loads(message["Body"])
    assert body == {
        "type": "start",
        "districtId": DISTRICT,
        "trigger": "push",
        "runId": run_id,
        "mode": "full",
        "confirmDeletes": False,
        "dryRun": False,
        "checkpoint": {"pushId": push_id},
    }
    status, view = api("GET", f"/districts/{DISTRICT}/pushes/{push_id}")
    assert view["status"] == "completed" and view["runId"] == run_id and view["mode"] == "full"


def test_incremental_push_with_the_flags_of_a_force_sync(direct, api, aws_clients):
    push_id = _open(api)
    api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1)]})
    body = {"mode": "incremental", "confirmDeletes": True, "dryRun": True}
    status, completed = api("POST", _complete_path(push_id), body)
    assert status == 202
    run = runs.get_run(DISTRICT, completed["runId"])
    assert (run["mode"], run["confirmDeletes"], run["dryRun"]) == ("incremental", True, True)
    message = json.loads(drain(aws_clients, direct["RunQueueUrl"])[0]["Body"])
    assert (message["mode"], message["confirmDeletes"], message["dryRun"]) == ("incremental", True, True)
    connector = DirectPushConnector(DISTRICT, push_id)
    assert connector.run_mode() == "incremental" and connector.complete_entities() == frozenset()


def test_connector_yields_the_pushed_records_in_page_order(direct, api):
    # Given pages sent out of order and with gaps, one of them replaced
    push_id = _open(api)
    pages = {7: [_user(70), _user(71)], 0: [_user(1)], 3: [_user(30)]}
    for number, records in pages.items():
        assert api("PUT", _page_path(push_id, "users", number), {"records": records})[0] == 200
    pages[3] = [_user(31), _user(32)]
    api("PUT", _page_path(push_id, "users", 3), {"records": pages[3]})
    api("PUT", _page_path(push_id, "classes", 0), {"records": [{"sourcedId": "c-1"}]})

    # An open push is no run's source
    with pytest.raises(SourceError, match="open"):
        list(DirectPushConnector(DISTRICT, push_id).pages("users"))
    assert api("POST", _complete_path(push_id))[0] == 202

    # Then the connector yields exactly those records, pages renumbered 0..n-1
    connector = DirectPushConnector(DISTRICT, push_id)
    got = list(connector.pages("users"))
    assert [p.number for p in got] == [0, 1, 2]
    assert [p.records for p in got] == [pages[0], pages[3], pages[7]]
    assert all(p.entity == "users" for p in got)
    assert list(connector.pages("enrollments")) == []
    # A full push makes complete only the entities it sent pages of
    assert connector.run_mode() == "full"
    assert connector.complete_entities() == frozenset({"users", "classes"})
    connector.close()


def test_a_page_changed_after_it_was_recorded_fails_the_read(direct, api, aws_clients):
    push_id = _open(api)
    api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1)]})
    assert api("POST", _complete_path(push_id))[0] == 202
    aws_clients("s3").put_object(
        Bucket=direct["StagingBucketName"],
        Key=push_page_key(DISTRICT, push_id, "users", 0),
        Body=json.dumps({"records": [_user(1), _user(2)]}),
    )
    with pytest.raises(SourceError, match="changed after it was recorded"):
        list(DirectPushConnector(DISTRICT, push_id).pages("users"))


def test_an_unknown_push_is_no_source(direct):
    with pytest.raises(SourceError, match="not found"):
        DirectPushConnector(DISTRICT, "20261130T020000000Z-000000").run_mode()


BAD_PAGES = [
    pytest.param("people", 0, {"records": []}, 400, "bad_request", "entity", id="unknown entity"),
    pytest.param("users", -1, {"records": []}, 400, "bad_request", "page", id="negative page"),
    pytest.param("users", 1_000_000, {"records": []}, 400, "bad_request", "page", id="page too high"),
    pytest.param("users", "first", {"records": []}, 400, "bad_request", "page", id="page not a number"),
    pytest.param("users", 0, '{"records": [', 400, "bad_request", "not valid JSON", id="bad JSON"),
    pytest.param("users", 0, "", 400, "bad_request", "body", id="empty body"),
    pytest.param("users", 0, [_user(1)], 400, "bad_request", "body", id="bare list"),
    pytest.param("users", 0, {"orgs": []}, 400, "bad_request", "body", id="envelope of another entity"),
    pytest.param("users", 0, {"records": [], "users": []}, 400, "bad_request", "body", id="two record lists"),
    pytest.param("users", 0, {"records": {"a": 1}}, 400, "bad_request", "array", id="records not a list"),
    pytest.param(
        "users",
        0,
        {"records": [_user(1), "Ada Lovelace"]},
        400,
        "bad_request",
        "records[1]",
        id="not an object",
    ),
    pytest.param(
        "users", 0, {"records": [{}] * 10_001}, 413, "page_too_large", "10000", id="too many records"
    ),
    pytest.param(
        "users", 0, {"records": [{"note": "x" * 6_000_000}]}, 413, "page_too_large", "6000000", id="too big"
    ),
]


@pytest.mark.parametrize(("entity", "page", "body", "status", "code", "named"), BAD_PAGES)
def test_bad_pages_are_answered_with_the_error_shape(direct, api, entity, page, body, status, code, named):
    push_id = _open(api)
    answer = api("PUT", _page_path(push_id, entity, page), body)
    message = _assert_error(*answer, status, code)
    assert named in message
    assert "Lovelace" not in message and "example.org" not in message  # no record data echoed
    assert api("GET", f"/districts/{DISTRICT}/pushes/{push_id}")[1]["pages"]["users"] == 0


def test_unknown_pushes_and_districts(direct, api):
    unknown = "20261130T020000000Z-000000"
    _assert_error(*api("PUT", _page_path(unknown, "users", 0), {"records": []}), 404, "not_found")
    _assert_error(*api("PUT", _page_path("not-a-push", "users", 0), {"records": []}), 404, "not_found")
    _assert_error(*api("GET", f"/districts/{DISTRICT}/pushes/not-a-push"), 404, "not_found")
    _assert_error(*api("POST", _complete_path(unknown)), 404, "not_found")
    _assert_error(*api("POST", "/districts/bad%20id!/pushes"), 400, "bad_request")
    # A push is bound to its district: another district does not know it
    push_id = _open(api)
    _connect({"type": "direct"}, "jefferson")
    status, body = api("PUT", f"/districts/jefferson/pushes/{push_id}/users/0", {"records": []})
    _assert_error(status, body, 404, "not_found")


def test_complete_body_is_validated(direct, api):
    push_id = _open(api)
    api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1)]})
    for body in ({"mode": "sometimes"}, {"dry_run": True}, {"confirmDeletes": "yes"}, "not json", [1]):
        _assert_error(*api("POST", _complete_path(push_id), body), 400, "bad_request")
    assert pushes.get_push(DISTRICT, push_id)["status"] == "open"


def test_a_push_without_pages_is_not_completed(direct, api, aws_clients):
    push_id = _open(api)
    message = _assert_error(*api("POST", _complete_path(push_id)), 400, "bad_request")
    assert "no pages" in message
    assert runs.active_run_id(DISTRICT) is None
    assert drain(aws_clients, direct["RunQueueUrl"]) == []


def _expire(push_id: str) -> None:
    table().update_item(
        Key={"pk": f"DISTRICT#{DISTRICT}", "sk": f"PUSH#{push_id}"},
        UpdateExpression="SET expiresAt = :past",
        ExpressionAttributeValues={":past": int(datetime.now(UTC).timestamp()) - 1},
    )


def test_an_expired_push_is_refused_and_never_becomes_a_run(direct, api, aws_clients):
    # Given a push with a page, left to expire
    push_id = _open(api)
    api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1)]})
    _expire(push_id)

    # Then it takes no more pages and cannot be completed
    message = _assert_error(
        *api("PUT", _page_path(push_id, "users", 1), {"records": []}), 410, "push_expired"
    )
    assert "open a new push" in message
    _assert_error(*api("POST", _complete_path(push_id)), 410, "push_expired")
    status, view = api("GET", f"/districts/{DISTRICT}/pushes/{push_id}")
    assert status == 200 and view["status"] == "expired" and view["pages"]["users"] == 1

    # And nothing ran, nothing was queued, and its pages are no source
    assert runs.active_run_id(DISTRICT) is None
    assert runs.list_runs(DISTRICT, limit=10, cursor=None)[0] == []
    assert drain(aws_clients, direct["RunQueueUrl"]) == []
    with pytest.raises(SourceError, match="expired"):
        DirectPushConnector(DISTRICT, push_id).run_mode()


def test_a_completed_push_takes_nothing_more(direct, api, aws_clients):
    push_id = _open(api)
    api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1)]})
    status, completed = api("POST", _complete_path(push_id))
    assert status == 202
    run_id = completed["runId"]

    # Completing twice is refused, even once the first run has ended
    message = _assert_error(*api("POST", _complete_path(push_id)), 409, "push_completed")
    assert run_id in message
    runs.finish_run(DISTRICT, run_id, "succeeded")
    _assert_error(*api("POST", _complete_path(push_id)), 409, "push_completed")
    _assert_error(*api("PUT", _page_path(push_id, "users", 1), {"records": []}), 409, "push_completed")
    assert len(drain(aws_clients, direct["RunQueueUrl"])) == 1
    assert [r["runId"] for r in runs.list_runs(DISTRICT, limit=10, cursor=None)[0]] == [run_id]


def test_a_district_that_does_not_take_pushes(clean_stack, api):
    # No settings at all
    message = _assert_error(*api("POST", f"/districts/{DISTRICT}/pushes"), 404, "not_found")
    assert "no settings" in message
    # A OneRoster REST district: no push endpoint, and the answer says why
    _connect(
        {
            "type": "oneroster",
            "baseUrl": "https://sis.example.org/ims/oneroster/v1p1",
            "version": "1.1",
            "auth": "oauth2",
            "tokenUrl": "https://sis.example.org/oauth/token",
            "credentialsParameter": f"/rostersync/districts/{DISTRICT}/credentials",
        }
    )
    message = _assert_error(*api("POST", f"/districts/{DISTRICT}/pushes"), 404, "not_found")
    assert "'oneroster'" in message and "'direct'" in message


def test_a_push_opened_before_the_source_changed_is_not_completed(direct, api):
    push_id = _open(api)
    api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1)]})
    _connect({"type": "oneroster-csv"})
    _assert_error(*api("POST", _complete_path(push_id)), 404, "not_found")
    assert runs.active_run_id(DISTRICT) is None


def test_completing_while_a_run_is_active_answers_409_with_its_id(direct, api, aws_clients):
    push_id = _open(api)
    api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1)]})
    active = runs.start_run(DISTRICT, trigger="api", mode="full")["runId"]

    status, body = api("POST", _complete_path(push_id))
    _assert_error(status, body, 409, "run_active")
    assert body["error"]["runId"] == active
    # The push stays open: it can be completed once that run has ended
    assert pushes.get_push(DISTRICT, push_id)["status"] == "open"
    runs.finish_run(DISTRICT, active, "succeeded")
    status, completed = api("POST", _complete_path(push_id))
    assert status == 202 and completed["runId"] != active


def test_a_run_that_cannot_be_queued_leaves_the_push_open(direct, api, monkeypatch):
    push_id = _open(api)
    api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1)]})

    def unreachable(message: Any) -> None:
        raise ConnectionError("queue unreachable")

    monkeypatch.setattr("rostersync.api.push.send_run_message", unreachable)
    _assert_error(*api("POST", _complete_path(push_id)), 500, "internal_error")
    (failed,) = runs.list_runs(DISTRICT, limit=10, cursor=None)[0]
    assert failed["status"] == "failed" and failed["message"] == "the run could not be queued"
    assert runs.active_run_id(DISTRICT) is None
    push = pushes.get_push(DISTRICT, push_id)
    assert pushes.status_of(push) == "open" and "runId" not in push


# ---------------------------------------------------------- end to end ---


def _push_district(api: API, district: Any, page_size: int = 100) -> str:
    push_id = _open(api)
    for entity in ("orgs", "academicSessions", "classes", "users", "enrollments"):
        records = district.records(entity)
        for number, start in enumerate(range(0, len(records), page_size)):
            page = {"records": records[start : start + page_size]}
            status, body = api("PUT", _page_path(push_id, entity, number), page)
            assert status == 200, body
    return push_id


def test_a_pushed_district_is_synced_through_the_handlers(
    direct, api, aws_clients, handlers, load_event, lambda_context
):
    outputs = direct
    district = generate_district()

    # Given the demo district pushed in pages of 100 and completed
    push_id = _push_district(api, district)
    status, completed = api("POST", _complete_path(push_id))
    assert status == 202, completed
    run_id = completed["runId"]

    # The fetch function takes the run message and stages the pushed pages
    started = drain(aws_clients, outputs["RunQueueUrl"])
    result = handlers["fetch_roster"](sqs_event(load_event("run_start_api"), started), lambda_context)
    assert result == {"runIds": [run_id]}
    run = runs.get_run(DISTRICT, run_id)
    assert run["fetchComplete"] is True, run.get("message")
    pushed = pushes.get_push(DISTRICT, push_id)["pages"]
    assert run["pagesTotal"] == sum(pushed.values())

    # The transform function takes the staged pages' notifications
    staged = drain(aws_clients, outputs["StagingQueueUrl"])
    notes = [m for m in staged if "Records" in json.loads(m["Body"])]
    keys = [r["s3"]["object"]["key"] for m in notes for r in json.loads(m["Body"])["Records"]]
    assert not any(k.startswith("pushes") for k in keys)  # pushed pages trigger nothing themselves
    failures = handlers["transform_page"](sqs_event(load_event("staged_page"), notes), lambda_context)
    assert failures == {"batchItemFailures": []}

    # The last page queued the apply stage, exactly once
    applies = drain(aws_clients, outputs["ApplyQueueUrl"])
    assert len(applies) == 1
    handlers["apply_run"](sqs_event(load_event("apply_run"), applies), lambda_context)

    # Then the run ends as the same district fetched from the demo SIS does
    run = runs.get_run(DISTRICT, run_id)
    assert run["status"] == "succeeded", run.get("message")
    assert run["trigger"] == "push" and run["mode"] == "full"
    assert run["counts"]["users"]["created"] == 137
    errors = runs.list_issues(DISTRICT, run_id, "ERR")
    assert {e["sourcedId"] for e in errors} == {"u-dup-b", "u-stu-noemail", "u-tch-noemail"}
    assert runs.active_run_id(DISTRICT) is None


def test_a_pushed_page_is_stored_as_sent(direct, api):
    push_id = _open(api)
    api("PUT", _page_path(push_id, "users", 0), {"records": [_user(1)]})
    s3 = aws.client("s3")
    body = s3.get_object(
        Bucket=get_config().staging_bucket_name, Key=push_page_key(DISTRICT, push_id, "users", 0)
    )
    assert json.loads(body["Body"].read()) == {"entity": "users", "page": 0, "records": [_user(1)]}
