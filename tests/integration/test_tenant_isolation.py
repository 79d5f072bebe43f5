"""Tenant isolation (issue 6, security): district A's caller cannot read or
sync district B, and learns nothing about it.

The API handler (functions/api/app.py) is driven with API Gateway REST events
(events/api_*.json) on the moto stack, the caller set as API Gateway sets it
after IAM auth (`requestContext.identity.userArn`). Districts A and B each have
a finished run with a rejected record and a warning, schools, classes, users,
and B an open push. The last test goes through the local HTTP API.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from rostersync.api import access
from rostersync.api.app import app as api_app
from rostersync.config import get_config
from rostersync.local.functions import load_handler
from rostersync.local.http_api import LOCAL_CALLER_HEADER, LOCAL_OPERATOR_ARN, LocalApiServer
from rostersync.pipeline import transform
from rostersync.pipeline.apply import apply_run
from rostersync.settings.model import SettingsRejectedError, parse_settings
from rostersync.staging.layout import PageRef
from rostersync.staging.pages import put_json
from rostersync.store import pushes, runs
from rostersync.store.settings import save_last_good

ACCOUNT = "123456789012"
OPERATOR = "arn:aws:iam::123456789012:user/rostersync-operator"  # tests/conftest.py's operator
# A's settings name its role (with a path); its callers come as role sessions.
A_ROLE = f"arn:aws:iam::{ACCOUNT}:role/districts/district-a-sync"
A_CALLER = f"arn:aws:sts::{ACCOUNT}:assumed-role/district-a-sync/nightly-job"
B_ROLE = f"arn:aws:iam::{ACCOUNT}:role/district-b-sync"
B_CALLER = f"arn:aws:sts::{ACCOUNT}:assumed-role/district-b-sync/admin-console"

Call = Callable[..., tuple[int, dict[str, Any]]]


def _records(prefix: str) -> dict[str, list[dict[str, Any]]]:
    school = {"sourcedId": f"{prefix}-sch", "sourcedIdType": "org"}
    enrol = {"class": {"sourcedId": f"{prefix}-cls"}}
    return {
        "orgs": [{"sourcedId": f"{prefix}-sch", "name": f"{prefix} High", "type": "school"}],
        "academicSessions": [],
        "classes": [{"sourcedId": f"{prefix}-cls", "title": "Biology", "school": school}],
        "users": [
            {
                "sourcedId": f"{prefix}-stu",
                "role": "student",
                "email": f"stu@{prefix}.k12.us",
                "username": "stu",
                "orgs": [school],
            },
            # An empty source username falls back to the email: a warning.
            {
                "sourcedId": f"{prefix}-tch",
                "role": "teacher",
                "email": f"tch@{prefix}.k12.us",
                "username": "",
            },
            # No email: rejected, an error of the run.
            {"sourcedId": f"{prefix}-noemail", "role": "student", "orgs": [school]},
        ],
        "enrollments": [
            {"sourcedId": f"{prefix}-e1", "user": {"sourcedId": f"{prefix}-stu"}, "role": "student", **enrol},
            {"sourcedId": f"{prefix}-e2", "user": {"sourcedId": f"{prefix}-tch"}, "role": "teacher", **enrol},
        ],
    }


def _seed(district_id: str, callers: list[str]) -> str:
    """Settings naming `callers`, and one succeeded run with data; returns its id."""
    settings = {
        "source": {"type": "direct"},
        "timezone": "UTC",
        "usernameSource": True,
        "apiCallers": callers,
    }
    save_last_good(
        district_id, parse_settings(json.dumps(settings)), 1, parameter_modified_at=datetime.now(UTC)
    )
    run_id = runs.start_run(district_id, trigger="api", mode="full")["runId"]
    runs.update_run(district_id, run_id, status="running", mode="full")
    refs = []
    for entity, records in _records(district_id).items():
        ref = PageRef(district_id, run_id, entity, 0)
        put_json(ref.key, {"entity": entity, "page": 0, "records": records})
        refs.append(ref)
    runs.finish_fetch(district_id, run_id, len(refs))
    for ref in refs:
        transform.transform_page(ref)
    apply_run(district_id, run_id)
    run = runs.get_run(district_id, run_id)
    assert run is not None and run["status"] == "succeeded", run
    return run_id


@pytest.fixture(scope="module")
def api_handler() -> Any:
    return load_handler("api")


@pytest.fixture
def call(api_handler, load_event, lambda_context) -> Call:
    """`call(caller, method, path, body=None, query=None)` -> (status, JSON answer)."""

    def invoke(
        caller: str | None, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        event = load_event("api_get_run")
        event["httpMethod"] = event["requestContext"]["httpMethod"] = method
        event["path"] = path
        event["requestContext"]["path"] = f"/v1{path}"
        event["pathParameters"] = None
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
        event["body"] = body if body is None or isinstance(body, str) else json.dumps(body)
        identity = event["requestContext"]["identity"]
        if caller is None:
            for key in ("userArn", "caller", "user", "accountId"):
                identity.pop(key, None)
        else:
            identity["userArn"] = caller
        answer = api_handler(event, lambda_context)
        return answer["statusCode"], json.loads(answer["body"])

    return invoke


@pytest.fixture(scope="module")
def districts(aws_stack) -> Iterator[dict[str, str]]:
    """Seeded once for the module (unique ids, so no other test's data meets them)."""
    suffix = uuid.uuid4().hex[:6]
    a, b = f"iso-a-{suffix}", f"iso-b-{suffix}"
    ids = {"a": a, "b": b, "a_run": _seed(a, [A_ROLE]), "b_run": _seed(b, [B_ROLE])}
    ids["b_push"] = pushes.open_push(b)["pushId"]
    ids["missing"] = f"iso-c-{suffix}"  # has no settings at all
    yield {**aws_stack, **ids}  # and the stack Outputs


def _routes(district_id: str, run_id: str, push_id: str) -> list[tuple[str, str, Any]]:
    """Every /districts/{id}/... route of SPEC 6 and the push API, with a valid request."""
    d = f"/districts/{district_id}"
    page = {"records": [{"sourcedId": "x1", "role": "student", "email": "x1@example.org"}]}
    return [
        ("POST", f"{d}/sync", {"mode": "full", "confirmDeletes": True}),
        ("GET", f"{d}/runs", None),
        ("GET", f"{d}/runs/{run_id}", None),
        ("GET", f"{d}/runs/{run_id}/errors", None),
        ("GET", f"{d}/runs/{run_id}/warnings", None),
        ("GET", f"{d}/schools", None),
        ("GET", f"{d}/classes", None),
        ("GET", f"{d}/users", None),
        ("POST", f"{d}/pushes", None),
        ("GET", f"{d}/pushes/{push_id}", None),
        ("PUT", f"{d}/pushes/{push_id}/users/0", page),
        ("POST", f"{d}/pushes/{push_id}/complete", {"mode": "full"}),
    ]


def test_the_route_list_covers_every_district_route_of_the_api() -> None:
    registered = {
        (route.method, route.path)
        for route in api_app._static_routes + api_app._dynamic_routes
        if route.path.startswith("/districts/<district_id>")
    }
    listed = {
        (method, path.replace("/districts/D", "/districts/<district_id>"))
        for method, path, _ in _routes("D", "<run_id>", "<push_id>")
    }
    normalized = {(m, p.replace("/users/0", "/<entity>/<page>")) for m, p in listed}
    assert registered == normalized


def _b_state(ids: dict[str, str]) -> dict[str, Any]:
    b = ids["b"]
    items, _ = runs.list_runs(b, limit=100, cursor=None)
    push = pushes.get_push(b, ids["b_push"])
    assert push is not None
    return {
        "runs": [(r["runId"], r["status"]) for r in items],
        "lock": runs.active_run_id(b),
        "push": (push["status"], dict(push.get("pages") or {})),
    }


def test_a_caller_of_a_gets_403_on_every_route_of_b_and_b_is_unchanged(districts, call, aws_clients) -> None:
    a, b, missing = districts["a"], districts["b"], districts["missing"]
    before = _b_state(districts)

    # When A's caller tries every route of B, and of a district that does not exist
    for (method, path, body), (_, missing_path, _) in zip(
        _routes(b, districts["b_run"], districts["b_push"]),
        _routes(missing, districts["b_run"], districts["b_push"]),
        strict=True,
    ):
        status, answer = call(A_CALLER, method, path, body)
        # Then each is refused in the one error shape ...
        assert status == 403, (method, path, answer)
        assert answer == {
            "error": {"code": "forbidden", "message": f"the caller may not access district {b}"}
        }
        # ... exactly as for a district that does not exist: no 404-vs-403 oracle
        missing_status, missing_answer = call(A_CALLER, method, missing_path, body)
        assert missing_status == 403
        assert json.dumps(missing_answer).replace(missing, b) == json.dumps(answer)

    # A filter on a known B email answers the same as any other request.
    status, answer = call(A_CALLER, "GET", f"/districts/{b}/users", query={"email": f"stu@{b}.k12.us"})
    assert status == 403 and "k12" not in json.dumps(answer)

    # And B is unchanged: no run started, no lock, no page on its push, nothing queued
    assert _b_state(districts) == before
    sqs = aws_clients("sqs")
    queued = sqs.receive_message(
        QueueUrl=districts["RunQueueUrl"], MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0
    )
    assert not [m for m in queued.get("Messages", []) if b in m["Body"]]
    s3 = aws_clients("s3")
    listed = s3.list_objects_v2(Bucket=districts["StagingBucketName"], Prefix=f"pushes/{b}/")
    assert listed.get("KeyCount", 0) == 0

    # While A's caller reads and syncs A itself
    assert call(A_CALLER, "GET", f"/districts/{a}/users")[0] == 200
    assert call(A_CALLER, "GET", f"/districts/{a}/runs/{districts['a_run']}/errors")[0] == 200
    status, answer = call(A_CALLER, "POST", f"/districts/{a}/sync", {"mode": "full"})
    assert status == 202, answer
    assert runs.active_run_id(a) == answer["runId"]


def test_each_district_caller_reads_its_own_data_only(districts, call) -> None:
    for caller, mine, theirs in ((A_CALLER, "a", "b"), (B_CALLER, "b", "a")):
        status, users = call(caller, "GET", f"/districts/{districts[mine]}/users")
        assert status == 200
        assert {u["sourcedId"] for u in users["items"]} == {
            f"{districts[mine]}-stu",
            f"{districts[mine]}-tch",
        }
        assert call(caller, "GET", f"/districts/{districts[theirs]}/users")[0] == 403


def test_the_operator_reads_every_district(districts, call) -> None:
    for key in ("a", "b"):
        district_id = districts[key]
        status, run = call(OPERATOR, "GET", f"/districts/{district_id}/runs/{districts[key + '_run']}")
        assert status == 200 and run["districtId"] == district_id
        assert [e["sourcedId"] for e in run["errors"]] == [f"{district_id}-noemail"]
        assert [w["sourcedId"] for w in run["warnings"]] == [f"{district_id}-tch"]
        status, schools = call(OPERATOR, "GET", f"/districts/{district_id}/schools")
        assert status == 200 and [s["id"] for s in schools["items"]] == [f"{district_id}-sch"]
    # The operator alone learns that a district has no settings.
    status, answer = call(OPERATOR, "POST", f"/districts/{districts['missing']}/sync")
    assert status == 404 and answer["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "caller",
    [
        None,  # no identity at all
        "",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/district-a-sync-old/nightly-job",  # a longer role name
        "arn:aws:sts::210987654321:assumed-role/district-a-sync/nightly-job",  # the same name, another account
        f"arn:aws:iam::{ACCOUNT}:root",  # the account root is no district's caller
        f"arn:aws:iam::{ACCOUNT}:role/*",
        "district-a-sync",
    ],
)
def test_callers_that_are_not_named_are_refused(districts, call, caller) -> None:
    before, _ = runs.list_runs(districts["a"], limit=100, cursor=None)
    status, answer = call(caller, "GET", f"/districts/{districts['a']}/runs")
    assert status == 403 and answer["error"]["code"] == "forbidden"
    status, _ = call(caller, "POST", f"/districts/{districts['a']}/sync", {"mode": "full"})
    assert status == 403
    assert runs.list_runs(districts["a"], limit=100, cursor=None)[0] == before


def test_a_session_entry_admits_that_session_only() -> None:
    entry = f"arn:aws:sts::{ACCOUNT}:assumed-role/district-a-sync/nightly-job"
    assert access.is_allowed(A_CALLER, operators=(), district_callers=[entry])
    other = f"arn:aws:sts::{ACCOUNT}:assumed-role/district-a-sync/someone-else"
    assert not access.is_allowed(other, operators=(), district_callers=[entry])
    # An IAM user entry admits that user, whatever its path.
    user = f"arn:aws:iam::{ACCOUNT}:user/it/district-a-admin"
    assert access.is_allowed(
        f"arn:aws:iam::{ACCOUNT}:user/it/district-a-admin", operators=(), district_callers=[user]
    )
    assert not access.is_allowed(
        f"arn:aws:iam::{ACCOUNT}:user/it/district-b-admin", operators=(), district_callers=[user]
    )


def test_the_audit_log_names_the_role_but_not_the_session() -> None:
    session = f"arn:aws:sts::{ACCOUNT}:assumed-role/district-a-sync/jane.doe@lincoln.k12.us"
    assert access.for_log(session) == f"arn:aws:iam::{ACCOUNT}:role/district-a-sync"
    assert access.for_log(None) == "none"
    assert access.for_log("jane.doe@lincoln.k12.us") == "unrecognised principal"


@pytest.mark.parametrize(
    "entry",
    [
        "*",
        f"arn:aws:iam::{ACCOUNT}:root",
        f"arn:aws:iam::{ACCOUNT}:role/*",
        "arn:aws:iam::*:role/x",
        "arn:aws:s3:::b",
    ],
)
def test_settings_refuse_an_api_caller_that_is_not_one_principal(entry) -> None:
    with pytest.raises(SettingsRejectedError) as caught:
        parse_settings(json.dumps({"source": {"type": "direct"}, "apiCallers": [entry]}))
    (issue,) = caught.value.errors
    assert issue["key"] == "apiCallers[0]" and "not an IAM principal ARN" in issue["message"]


def test_the_local_http_api_acts_as_the_operator_unless_told_otherwise(
    districts, api_handler, monkeypatch
) -> None:
    # The embedded stack makes the local operator the deployment's operator.
    monkeypatch.setenv("OPERATOR_PRINCIPAL_ARN", LOCAL_OPERATOR_ARN)
    get_config.cache_clear()
    server = LocalApiServer(api_handler, host="127.0.0.1", port=0, local_routes=lambda *_: None)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/districts/{districts['b']}/runs"
        assert requests.get(url, timeout=10).status_code == 200
        as_a = requests.get(url, headers={LOCAL_CALLER_HEADER: A_CALLER}, timeout=10)
        assert as_a.status_code == 403 and as_a.json()["error"]["code"] == "forbidden"
        assert requests.get(url, headers={LOCAL_CALLER_HEADER: ""}, timeout=10).status_code == 403
        own = f"http://127.0.0.1:{server.port}/districts/{districts['a']}/runs"
        assert requests.get(own, headers={LOCAL_CALLER_HEADER: A_CALLER}, timeout=10).status_code == 200
    finally:
        server.stop()
