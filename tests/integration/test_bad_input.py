"""The bad-input catalogue (issue 6, docs/bad-input.md): every bad input a district,
an SIS or a caller can send, answered with a clear error, and nothing else lost.

- Settings: each bad document goes through the settings function (the sample
  event `settings_change`) on the moto server; it is refused naming the key,
  and the last good settings and the schedule stay exactly as they were.
- API: each bad request goes through the API handler; it answers 4xx in the
  error shape and changes nothing (no run, no lock, nothing queued).
- Records: bad records ride in a few real runs among good ones, through the
  real handlers (fetch, transform, apply) on the moto server: a direct push
  (OneRoster REST 1.1 and 1.2 JSON shapes), a OneRoster CSV bundle uploaded to
  the inbox, and a PowerSchool server (`PowerSchoolSis`) answering bad
  students. Each bad record is rejected and listed in the run record (entity,
  sourcedId, reason naming the field, never its value), and every good record
  of the run is in the product.

Tables of cases are module constants: docs/bad-input.md lists them by id.
"""

from __future__ import annotations

import io
import json
import time
import unicodedata
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from queues import drain, sqs_event

from rostersync.local.demo import demo_settings
from rostersync.local.demo_data import generate_district
from rostersync.local.functions import load_handler
from rostersync.roster.models import RecordError, normalize
from rostersync.settings.model import apply_regex, parse_settings, settings_parameter_name
from rostersync.store import runs
from rostersync.store.settings import load_last_good, load_settings_error, save_last_good

DISTRICT = "lincoln"  # the district of the sample events
API = Callable[..., tuple[int, dict[str, Any]]]
BIG = "x" * 1_000_000  # a 1 MB given name


@pytest.fixture(scope="module")
def handlers() -> dict[str, Any]:
    names = ("api", "fetch_roster", "transform_page", "apply_run", "settings_changed")
    return {name: load_handler(name) for name in names}


@pytest.fixture
def api(handlers, load_event, lambda_context) -> API:
    """`api(method, path, body, query=, headers=)` -> (status, JSON answer), via the API handler."""

    def call(
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        event = load_event("api_push_page" if method == "PUT" else "api_force_sync")
        event["httpMethod"] = event["requestContext"]["httpMethod"] = method
        event["path"] = path
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
        if headers:
            event["headers"] = {**(event.get("headers") or {}), **headers}
        event["body"] = body if body is None or isinstance(body, str) else json.dumps(body)
        answer = handlers["api"](event, lambda_context)
        return answer["statusCode"], json.loads(answer["body"])

    return call


def _connect(source: dict[str, Any]) -> None:
    settings = demo_settings("http://sis.invalid")
    settings["source"] = source
    save_last_good(DISTRICT, parse_settings(json.dumps(settings)), 1, parameter_modified_at=datetime.now(UTC))


def _run_queued(stack, aws_clients, handlers, load_event, lambda_context, api: API) -> dict[str, Any]:
    """Run what RunQueue holds through fetch, transform and apply; the run record as the API answers it."""
    started = drain(aws_clients, stack["RunQueueUrl"])
    assert started, "nothing was queued"
    (run_id,) = handlers["fetch_roster"](sqs_event(load_event("run_start_api"), started), lambda_context)[
        "runIds"
    ]
    staged = [m for m in drain(aws_clients, stack["StagingQueueUrl"]) if "Records" in json.loads(m["Body"])]
    if staged:
        failures = handlers["transform_page"](sqs_event(load_event("staged_page"), staged), lambda_context)
        assert failures == {"batchItemFailures": []}
    applies = drain(aws_clients, stack["ApplyQueueUrl"])
    if applies:
        handlers["apply_run"](sqs_event(load_event("apply_run"), applies), lambda_context)
    status, run = api("GET", f"/districts/{DISTRICT}/runs/{run_id}")
    assert status == 200, run
    return run


def _product(api: API, kind: str) -> dict[str, dict[str, Any]]:
    query = {"limit": "1000", "includeHidden": "true"} if kind == "classes" else {"limit": "1000"}
    status, body = api("GET", f"/districts/{DISTRICT}/{kind}", query=query)
    assert status == 200 and body["nextCursor"] is None, body
    return {item["id"]: item for item in body["items"]}


def _reasons(run: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(e["entity"], e["sourcedId"]): e["reason"] for e in run["errors"]}


def _assert_private(run: dict[str, Any], secrets: list[str]) -> None:
    """No rejection or warning quotes a name or an email value."""
    text = json.dumps(run["errors"] + run["warnings"], ensure_ascii=False)
    for secret in secrets:
        assert secret not in text, secret


# =========================================================== settings ===

GOOD_SETTINGS: dict[str, Any] = {
    "source": {
        "type": "oneroster",
        "baseUrl": "https://sis.example.org/ims/oneroster/v1p1",
        "version": "1.1",
        "auth": "oauth2",
        "tokenUrl": "https://sis.example.org/oauth/token",
        "credentialsParameter": "/rostersync/districts/lincoln/credentials",
    },
    "dailySyncStart": "02:00",
    "timezone": "America/Chicago",
}
SOURCE = GOOD_SETTINGS["source"]

# (case id, the document or changes to the good one, what the error must name)
BAD_SETTINGS = [
    pytest.param("{not json", "not valid JSON", id="settings-not-json"),
    pytest.param("[1, 2]", "expected a JSON object", id="settings-not-an-object"),
    pytest.param({"syncMod": "full"}, "syncMod", id="settings-unknown-key"),
    pytest.param({"source": {**SOURCE, "baseUrl": "ftp://sis"}}, "source.baseUrl", id="settings-bad-url"),
    pytest.param({"source": {**SOURCE, "type": "banner"}}, "source.type", id="settings-unknown-source"),
    pytest.param({"source": {"type": "oneroster"}}, "source.baseUrl", id="settings-missing-fields"),
    pytest.param({"timezone": "Mars/Olympus"}, "timezone", id="settings-unknown-zone"),
    pytest.param({"dailySyncStart": "25:00"}, "dailySyncStart", id="settings-bad-time"),
    pytest.param({"dailySyncStart": "2am"}, "dailySyncStart", id="settings-time-not-hh-mm"),
    pytest.param({"maxDeletePercent": -5}, "maxDeletePercent", id="settings-negative-percent"),
    pytest.param({"maxDeletePercent": 1e9}, "maxDeletePercent", id="settings-huge-percent"),
    pytest.param(
        '{"maxDeletePercent": NaN, "source": ' + json.dumps(SOURCE) + "}",
        "maxDeletePercent",
        id="settings-nan-percent",
    ),
    pytest.param({"importAdmins": "maybe"}, "importAdmins", id="settings-wrong-type"),
    pytest.param({"usernameRules": "lowercase"}, "usernameRules", id="settings-list-given-as-text"),
    pytest.param({"roleMapping": {"teacher": "Wizard"}}, "roleMapping.teacher", id="settings-unknown-role"),
    pytest.param({"usernameRules": [{"op": "shout"}]}, "usernameRules", id="settings-unknown-rule-op"),
    pytest.param(
        {"usernameRules": [{"op": "regex", "pattern": "(a", "replacement": ""}]},
        "usernameRules[0].pattern",
        id="settings-regex-does-not-compile",
    ),
    pytest.param(
        {"usernameRules": [{"op": "regex", "pattern": "(a)\\1", "replacement": ""}]},
        "usernameRules[0].pattern",
        id="settings-regex-backreference",
    ),
    pytest.param(
        {"usernameRules": [{"op": "truncate", "length": 0}]},
        "usernameRules[0].length",
        id="settings-truncate-zero",
    ),
    pytest.param({"futureClassLeadDays": 100000}, "futureClassLeadDays", id="settings-lead-days-huge"),
    pytest.param({"source": {**SOURCE, "pageSize": 0}}, "source.pageSize", id="settings-page-size-zero"),
    pytest.param({"classNameFields": ["period", "period"]}, "classNameFields", id="settings-duplicate-field"),
]


def _settings_event(load_event, operation: str = "Update") -> dict[str, Any]:
    event = load_event("settings_change")
    event["detail"]["name"] = settings_parameter_name(DISTRICT)
    event["detail"]["operation"] = operation
    return event


@pytest.mark.parametrize(("bad", "named"), BAD_SETTINGS)
def test_bad_settings_are_refused_and_the_last_good_stay_in_force(
    clean_stack, aws_clients, handlers, load_event, lambda_context, bad, named
):
    ssm, scheduler = aws_clients("ssm"), aws_clients("scheduler")
    name = settings_parameter_name(DISTRICT)
    # Given good settings in force, with their schedule
    ssm.put_parameter(Name=name, Value=json.dumps(GOOD_SETTINGS), Type="String", Overwrite=True)
    outcome = handlers["settings_changed"](_settings_event(load_event, "Create"), lambda_context)
    assert outcome["action"] == "applied", outcome
    good = load_last_good(DISTRICT)
    group = clean_stack.get("SchedulerGroupName", "default")
    schedule = scheduler.get_schedule(Name=f"rostersync-{DISTRICT}", GroupName=group)["ScheduleExpression"]

    # When a bad document replaces them
    text = bad if isinstance(bad, str) else json.dumps({**GOOD_SETTINGS, **bad})
    ssm.put_parameter(Name=name, Value=text, Type="String", Overwrite=True)
    outcome = handlers["settings_changed"](_settings_event(load_event), lambda_context)

    # Then it is refused naming the key, and nothing the district relies on moved
    assert outcome["action"] == "rejected", outcome
    assert named in outcome["message"], outcome["message"]
    assert load_last_good(DISTRICT) == good
    assert (
        scheduler.get_schedule(Name=f"rostersync-{DISTRICT}", GroupName=group)["ScheduleExpression"]
        == schedule
    )
    error = load_settings_error(DISTRICT)
    assert error is not None and named in error["message"]


def test_a_backtracking_regex_rule_is_accepted_and_runs_in_linear_time():
    # The classic catastrophic pattern: a backtracking engine takes ~2^n steps here.
    settings = parse_settings(
        json.dumps(
            {**GOOD_SETTINGS, "usernameRules": [{"op": "regex", "pattern": "(a+)+$", "replacement": "x"}]}
        )
    )
    assert settings.username_rules
    started = time.perf_counter()
    assert apply_regex("(a+)+$", "x", "a" * 50_000 + "!") == "a" * 50_000 + "!"
    assert time.perf_counter() - started < 1.0


# ================================================================ API ===

# (case id, method, path, body, query, headers, status, code, what the message names)
D = f"/districts/{DISTRICT}"
BAD_REQUESTS = [
    pytest.param("POST", f"{D}/sync", "{", None, None, 400, "bad_request", "json", id="api-body-not-json"),
    pytest.param("POST", f"{D}/sync", "[1]", None, None, 400, "bad_request", "body", id="api-body-a-list"),
    pytest.param("POST", f"{D}/sync", '{"dryRun": "yes"}', None, None, 400, "bad_request", "dryRun",
                 id="api-body-wrong-type"),
    pytest.param("POST", f"{D}/sync", '{"dry_run": true}', None, None, 400, "bad_request", "dry_run",
                 id="api-body-unknown-key"),
    pytest.param("POST", f"{D}/sync", '{"mode": "sometimes"}', None, None, 400, "bad_request", "mode",
                 id="api-body-bad-mode"),
    pytest.param("POST", f"{D}/sync", json.dumps({"mode": BIG}), None, None, 400, "bad_request", "mode",
                 id="api-body-enormous"),
    pytest.param("POST", f"{D}/sync", "mode=full&dryRun=true", None,
                 {"Content-Type": "application/x-www-form-urlencoded"}, 400, "bad_request", "json",
                 id="api-wrong-content-type"),
    pytest.param("POST", "/districts/" + "d" * 300 + "/sync", None, None, None, 400, "bad_request", "districtId",
                 id="api-path-id-300-chars"),
    pytest.param("POST", "/districts/../sync", None, None, None, 400, "bad_request", "districtId",
                 id="api-path-id-dotdot"),
    pytest.param("POST", "/districts/a/b/sync", None, None, None, 404, "not_found", "route",
                 id="api-path-id-with-slash"),
    pytest.param("POST", "/districts/bad%00id/sync", None, None, None, 400, "bad_request", "districtId",
                 id="api-path-id-control-char"),
    pytest.param("GET", f"{D}/runs/" + "r" * 300, None, None, None, 404, "not_found", "no run",
                 id="api-run-id-300-chars"),
    pytest.param("GET", f"{D}/users", None, {"limit": "0"}, None, 400, "bad_request", "limit", id="api-limit-0"),
    pytest.param("GET", f"{D}/users", None, {"limit": "1001"}, None, 400, "bad_request", "limit",
                 id="api-limit-over-max"),
    pytest.param("GET", f"{D}/users", None, {"limit": "-1"}, None, 400, "bad_request", "limit",
                 id="api-limit-negative"),
    pytest.param("GET", f"{D}/users", None, {"limit": "ten"}, None, 400, "bad_request", "limit",
                 id="api-limit-not-a-number"),
    pytest.param("GET", f"{D}/users", None, {"cursor": "!!not-a-cursor"}, None, 400, "bad_request", "cursor",
                 id="api-cursor-malformed"),
    pytest.param("GET", f"{D}/users", None, {"cursor": "eyJwayI6ICJvdGhlciJ9"}, None, 400, "bad_request",
                 "cursor", id="api-cursor-of-another-list"),
    pytest.param("GET", f"{D}/users", None, {"role": "Wizard"}, None, 400, "bad_request", "role",
                 id="api-unknown-role-filter"),
    pytest.param("GET", f"{D}/users", None, {"status": "deleted"}, None, 400, "bad_request", "status",
                 id="api-unknown-status-filter"),
    pytest.param("GET", f"{D}/classes", None, {"includeHidden": "maybe"}, None, 400, "bad_request",
                 "includeHidden", id="api-bad-boolean-query"),
    pytest.param("POST", f"{D}/pushes/not-a-push/users/0", None, None, None, 404, "not_found", "route",
                 id="api-push-page-wrong-method"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "headers", "status", "code", "named"), BAD_REQUESTS
)
def test_bad_requests_are_answered_4xx_and_change_nothing(
    clean_stack, aws_clients, api, method, path, body, query, headers, status, code, named
):
    _connect({"type": "direct"})
    before = runs.list_runs(DISTRICT, limit=10, cursor=None)[0]

    got, answer = api(method, path, body, query=query, headers=headers)

    assert got == status, answer
    assert set(answer) == {"error"} and answer["error"]["code"] == code, answer
    assert named.lower() in answer["error"]["message"].lower(), answer
    assert len(answer["error"]["message"]) < 500  # an enormous input is not echoed back
    assert runs.list_runs(DISTRICT, limit=10, cursor=None)[0] == before
    assert runs.active_run_id(DISTRICT) is None
    assert drain(aws_clients, clean_stack["RunQueueUrl"]) == []


PUSH_PAGES = [
    pytest.param({"records": {"a": 1}}, 400, "array", id="push-records-not-a-list"),
    pytest.param(
        {"records": [{"sourcedId": "u1"}, "Ada Lovelace"]}, 400, "records[1]", id="push-record-not-an-object"
    ),
    pytest.param(
        {"records": [{"sourcedId": "u1", "note": "x" * 10_000_000}]}, 413, "6000000", id="push-page-10-mb"
    ),
]


@pytest.mark.parametrize(("body", "status", "named"), PUSH_PAGES)
def test_bad_push_pages_are_refused_and_the_push_keeps_its_pages(clean_stack, api, body, status, named):
    _connect({"type": "direct"})
    opened, push = api("POST", f"{D}/pushes")
    assert opened == 201
    page = f"{D}/pushes/{push['pushId']}/users"
    assert api("PUT", f"{page}/0", {"records": [{"sourcedId": "u1"}]})[0] == 200
    got, answer = api("PUT", f"{page}/1", body)
    assert got == status and named in answer["error"]["message"], answer
    assert "Lovelace" not in answer["error"]["message"]
    view = api("GET", f"{D}/pushes/{push['pushId']}")[1]
    assert view["pages"]["users"] == 1 and view["records"]["users"] == 1  # the good page is kept


# ============================================ records: OneRoster JSON push ===

STAMP = "2026-09-01T08:00:00.000Z"


def _user(sid: Any, email: str | None, **fields: Any) -> dict[str, Any]:
    record = {"sourcedId": sid, "status": "active", "role": "student", "dateLastModified": STAMP,
              "givenName": "Pat", "familyName": "Doe", "orgs": [{"sourcedId": "s1"}], **fields}  # fmt: skip
    if email is not None:
        record["email"] = email
    return record


def _enr(sid: str, user: str, cls: str, role: str = "student", **fields: Any) -> dict[str, Any]:
    return {"sourcedId": sid, "status": "active", "dateLastModified": STAMP, "user": {"sourcedId": user},
            "class": {"sourcedId": cls}, "school": {"sourcedId": "s1"}, "role": role, **fields}  # fmt: skip


NFC_NAME = unicodedata.normalize("NFC", "José Ñúñez")
NFD_NAME = unicodedata.normalize("NFD", "José Ñúñez")

GOOD_ORGS = [
    {"sourcedId": "d", "status": "active", "name": "District", "type": "district"},
    # s1's parent is unknown; s2 and s3 are each other's parent (a cycle)
    {"sourcedId": "s1", "status": "active", "name": "North", "type": "school", "parent": {"sourcedId": "nowhere"}},
    {"sourcedId": "s2", "status": "active", "name": "South", "type": "school", "parent": {"sourcedId": "s3"}},
    {"sourcedId": "s3", "status": "active", "name": "East", "type": "school", "parent": {"sourcedId": "s2"}},
]  # fmt: skip
GOOD_TERMS = [{"sourcedId": "t1", "status": "active", "title": "Fall", "type": "term",
               "startDate": "2026-08-15", "endDate": "2026-12-20"}]  # fmt: skip
GOOD_CLASSES = [
    {"sourcedId": "c1", "status": "active", "title": "Algebra", "school": {"sourcedId": "s1"},
     "terms": [{"sourcedId": "t1"}], "periods": ["3"]},
    # control characters and a bidi override in a title: kept, cleaned
    {"sourcedId": "c2", "status": "active", "title": "Bio\u202elogy\x07", "school": {"sourcedId": "s2"},
     "terms": "t1", "periods": 4},
]  # fmt: skip
# Good users, some with hard but valid names: all must arrive, as data
GOOD_USERS = [
    _user("u01", "u01@example.org"),
    _user("u02", "u02@example.org", givenName="=HYPERLINK(\"http://evil.example/\",\"click\")"),
    _user("u03", "u03@example.org", givenName="+1+1", familyName="-2-2"),
    _user("u04", "u04@example.org", givenName="@SUM(A1:A9)"),
    _user("u05", "u05@example.org", givenName=NFD_NAME),  # combining marks, stored NFC
    _user("u06", "u06@example.org", givenName="مريم", familyName="العلي"),  # right-to-left
    _user("u07", "u07@example.org", givenName="Zoë 🦊", familyName="O'Brien-Smith"),
    _user("u08", "u08@example.org", givenName="Ann\x00ie", familyName="Lee\nKim"),  # NUL, newline
    _user("u09", "u09@example.org", username="jo\u202eeci", givenName="\u2066Jo\u2069"),  # bidi override
    # a 1.2 record: roles[] and primaryOrg
    {"sourcedId": "u10", "status": "active", "email": "U10@Example.org", "givenName": "Kai", "familyName": "Ito",
     "roles": [{"roleType": "primary", "role": "teacher", "org": {"sourcedId": "s1"}}],
     "enabledUser": "true", "dateLastModified": STAMP},
    # a duplicate sourcedId in one run: the later dateLastModified wins
    _user("u11", "u11@example.org", givenName="Older", dateLastModified="2026-08-01T00:00:00Z"),
    _user("u11", "u11@example.org", givenName="Newer", dateLastModified="2026-09-02T00:00:00Z"),
]  # fmt: skip

# (case id, the bad record, entity, sourcedId named in the run record, words its reason must hold)
BAD_JSON_RECORDS = [
    ("json-missing-sourcedid", "users", _user(None, "nosid@example.org"), None, "sourcedId: missing"),
    ("json-sourcedid-300-chars", "users", _user("u" * 300, "long@example.org"), "u" * 255, "sourcedId"),
    ("json-sourcedid-control-char", "users", _user("ub\x00ad", "ctl@example.org"), "ub\ufffdad",
     "sourcedId: contains control characters"),
    ("json-invalid-email", "users", _user("ub01", "not-an-email"), "ub01", "invalid email"),
    ("json-email-display-form", "users", _user("ub02", "Pat Doe <pat@example.org>"), "ub02", "invalid email"),
    ("json-email-two-addresses", "users", _user("ub03", "a@example.org,b@example.org"), "ub03", "invalid email"),
    ("json-no-email", "users", _user("ub04", None), "ub04", "no email"),
    ("json-email-control-char", "users", _user("ub05", "p\x00t@example.org"), "ub05",
     "email: contains control characters"),
    ("json-email-not-text", "users", _user("ub06", ["x@example.org"]), "ub06", "email: expected text"),
    ("json-duplicate-email", "users", _user("ub07", "u01@example.org"), "ub07", "duplicate email: sourcedId u01"),
    ("json-duplicate-email-nfd", "users", _user("ub08", unicodedata.normalize("NFD", "josé@example.org")), "ub08",
     "duplicate email: sourcedId u12"),
    ("json-1mb-given-name", "users", _user("ub10", "big@example.org", givenName=BIG), "ub10",
     "givenName: longer than 255"),
    ("json-long-username", "users", _user("ub11", "lu@example.org", username="z" * 300), "ub11",
     "username: longer than 255"),
    ("json-name-not-text", "users", _user("ub12", "nt@example.org", givenName={"first": "Pat"}), "ub12",
     "givenName: expected text"),
    ("json-bad-boolean", "users", _user("ub13", "bb@example.org", enabledUser="maybe"), "ub13",
     "enabledUser: not a boolean"),
    ("json-unknown-role", "users", _user("ub14", "ur@example.org", role="wizard"), "ub14", "role: unknown role"),
    ("json-role-wrong-type", "users", _user("ub15", "rt@example.org", role=["student"]), "ub15",
     "role: expected text"),
    ("json-bad-timestamp", "users", _user("ub16", "ts@example.org", dateLastModified="yesterday"), "ub16",
     "dateLastModified"),
    ("json-unknown-status", "users", _user("ub17", "st@example.org", status="archived"), "ub17",
     "status: unknown status"),
    ("json-class-unknown-school", "classes", {"sourcedId": "cb1", "title": "Art", "school": "nowhere"}, "cb1",
     "unknown school 'nowhere'"),
    ("json-class-missing-title", "classes", {"sourcedId": "cb2", "school": "s1"}, "cb2", "title: missing"),
    ("json-class-periods-object", "classes", {"sourcedId": "cb3", "title": "Art", "school": "s1",
     "periods": {"p": 1}}, "cb3", "periods: expected a list or text"),
    ("json-enrollment-unknown-user", "enrollments", _enr("eb1", "ghost", "c1"), "eb1", "unknown user 'ghost'"),
    ("json-enrollment-unknown-class", "enrollments", _enr("eb2", "u01", "cghost"), "eb2",
     "unknown or rejected class 'cghost'"),
    ("json-enrollment-rejected-class", "enrollments", _enr("eb3", "u01", "cb2"), "eb3",
     "unknown or rejected class 'cb2'"),
    ("json-enrollment-impossible-date", "enrollments", _enr("eb4", "u01", "c1", beginDate="2026-02-30"), "eb4",
     "beginDate"),
    ("json-enrollment-ends-before-begins", "enrollments",
     _enr("eb5", "u01", "c1", beginDate="2026-09-01", endDate="2026-08-01"), "eb5", "endDate: before beginDate"),
    ("json-enrollment-unknown-role", "enrollments", _enr("eb6", "u01", "c1", role="overlord"), "eb6",
     "role: unknown role"),
    ("json-term-bad-date", "academicSessions", {"sourcedId": "tb1", "title": "Spring", "type": "term",
     "startDate": "next week"}, "tb1", "startDate"),
    ("json-org-name-not-text", "orgs", {"sourcedId": "sb1", "name": ["North"], "type": "school"}, "sb1",
     "name: expected text"),
    ("json-enormous-reference", "classes", {"sourcedId": "cb4", "title": "Art", "school": "s" * 1_000_000},
     "cb4", "school: reference longer than 255 characters"),
    ("json-too-many-references", "users", _user("ub18", "many@example.org", orgs=[f"s{n}" for n in range(5000)]),
     "ub18", "orgs: more than 256 references"),
    ("json-too-many-periods", "classes", {"sourcedId": "cb5", "title": "Art", "school": "s1",
     "periods": list(range(1000))}, "cb5", "periods: more than 64"),
]  # fmt: skip
# The NFC twin of ub08, which keeps the email (lower sourcedId)
NFC_TWIN = _user("u12", "josé@example.org")
GOOD_ENROLLMENTS = [_enr(f"e{n:02d}", f"u{n:02d}", "c1") for n in range(1, 10)] + [
    _enr("e10", "u10", "c1", role="teacher"),
    _enr("e11", "u11", "c2"),
]


def test_bad_oneroster_records_are_rejected_and_every_good_one_arrives(
    clean_stack, aws_clients, handlers, load_event, lambda_context, api
):
    _connect({"type": "direct"})
    by_entity: dict[str, list[Any]] = {
        "orgs": list(GOOD_ORGS),
        "academicSessions": list(GOOD_TERMS),
        "classes": list(GOOD_CLASSES),
        "users": [*GOOD_USERS, NFC_TWIN],
        "enrollments": list(GOOD_ENROLLMENTS),
    }
    for _case, entity, record, _sid, _words in BAD_JSON_RECORDS:
        by_entity[entity].append(record)

    # Given a push of good and bad records, bad ones in the middle of their pages
    status, push = api("POST", f"{D}/pushes")
    assert status == 201
    for entity, records in by_entity.items():
        half = len(records) // 2
        for number, page in enumerate((records[:half], records[half:])):
            got, answer = api("PUT", f"{D}/pushes/{push['pushId']}/{entity}/{number}", {"records": page})
            assert got == 200, answer
    assert api("POST", f"{D}/pushes/{push['pushId']}/complete")[0] == 202

    # When it runs through fetch, transform and apply
    run = _run_queued(clean_stack, aws_clients, handlers, load_event, lambda_context, api)

    # Then every bad record is in the run record, by entity and sourcedId, with its reason
    assert run["status"] == "succeeded", run.get("message")
    reasons = _reasons(run)
    for case, entity, _record, sid, words in BAD_JSON_RECORDS:
        if sid is None:  # no id to name it by: the page and position name it
            sid = next(s for (e, s), r in reasons.items() if e == entity and "sourcedId: missing" in r)
            assert "#" in sid, sid
        assert (entity, sid) in reasons, (case, sorted(reasons))
        assert words in reasons[(entity, sid)], (case, reasons[(entity, sid)])
    assert len(reasons) == len(BAD_JSON_RECORDS)
    _assert_private(run, ["Pat", "Doe", "example.org", "jos", BIG[:50], "North"])

    # And every good record arrived, hard names stored as data (never evaluated)
    schools = _product(api, "schools")
    assert set(schools) == {"s1", "s2", "s3"}  # unknown parent and a parent cycle: no loop, no loss
    classes = _product(api, "classes")
    assert set(classes) == {"c1", "c2"}
    assert classes["c2"]["title"] == "Biology" and classes["c2"]["periods"] == ["4"]
    users = _product(api, "users")
    assert set(users) == {f"u{n:02d}" for n in range(1, 13)}
    assert users["u02"]["givenName"] == '=HYPERLINK("http://evil.example/","click")'
    assert (users["u03"]["givenName"], users["u03"]["familyName"]) == ("+1+1", "-2-2")
    assert users["u04"]["givenName"] == "@SUM(A1:A9)"
    assert users["u05"]["givenName"] == NFC_NAME
    assert users["u06"]["givenName"] == "مريم"
    assert users["u07"]["givenName"] == "Zoë 🦊"
    assert (users["u08"]["givenName"], users["u08"]["familyName"]) == ("Annie", "Lee Kim")
    assert users["u09"]["givenName"] == "Jo"
    assert users["u10"]["email"] == "u10@example.org" and users["u10"]["role"] == "Teacher 1"
    assert users["u11"]["givenName"] == "Newer"
    assert users["u12"]["email"] == "josé@example.org"
    assert classes["c1"]["studentIds"] == [f"u{n:02d}" for n in range(1, 10)]
    assert classes["c1"]["teacherIds"] == ["u10"] and classes["c2"]["studentIds"] == ["u11"]
    assert run["counts"]["users"]["created"] == 12
    assert run["counts"]["enrollments"]["created"] == len(GOOD_ENROLLMENTS)


def test_a_username_that_rules_make_too_long_falls_back_to_the_email(
    clean_stack, aws_clients, handlers, load_event, lambda_context, api
):
    settings = demo_settings("http://sis.invalid")
    settings["source"] = {"type": "direct"}
    settings["usernameSource"] = True
    settings["usernameRules"] = [{"op": "prefix", "value": "p" * 200}]
    save_last_good(DISTRICT, parse_settings(json.dumps(settings)), 1, parameter_modified_at=datetime.now(UTC))
    _status, push = api("POST", f"{D}/pushes")
    records = [
        _user("u1", "u1@example.org", username="short"),
        _user("u2", "u2@example.org", username="y" * 100),
    ]
    assert api("PUT", f"{D}/pushes/{push['pushId']}/users/0", {"records": records})[0] == 200
    assert api("PUT", f"{D}/pushes/{push['pushId']}/orgs/0", {"records": GOOD_ORGS[:2]})[0] == 200
    assert api("POST", f"{D}/pushes/{push['pushId']}/complete")[0] == 202

    run = _run_queued(clean_stack, aws_clients, handlers, load_event, lambda_context, api)

    assert run["status"] == "succeeded" and run["errors"] == []
    assert [(w["sourcedId"], w["reason"]) for w in run["warnings"]] == [
        ("u2", "username longer than 255 characters: the email is the username")
    ]
    users = _product(api, "users")
    assert users["u1"]["username"] == "p" * 200 + "short" and users["u2"]["username"] == "u2@example.org"


# ============================================== records: OneRoster CSV ===

CSV_FILES = {
    "manifest.csv": "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\nfile.orgs,bulk\n"
    "file.academicSessions,bulk\nfile.classes,bulk\nfile.users,bulk\nfile.enrollments,bulk\n",
    "orgs.csv": "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId\n"
    "s1,active,,North,school,,\n",
    "academicSessions.csv": "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,"
    "schoolYear\nt1,active,,Fall,term,2026-08-15,2026-12-20,,2027\n"
    "tb1,active,,Bad,term,2026-13-01,2026-12-20,,2027\n",  # line 3
    "classes.csv": "sourcedId,status,dateLastModified,title,schoolSourcedId,termSourcedIds,periods\n"
    "c1,active,,Algebra,s1,t1,3\n"
    "cb1,active,,Art,nowhere,t1,1\n",  # unknown school
    "users.csv": "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,givenName,"
    "familyName,email\n"
    "u1,active,,true,s1,student,u1,Ann,Lee,u1@example.org\n"
    'u2,active,,true,s1,student,u2,"=HYPERLINK(""http://evil.example/"",""x"")",-Lee,u2@example.org\n'
    'u3,active,,true,s1,student,u3,"Multi\nLine",@Lee,u3@example.org\n'  # lines 4-5
    "ub1,active,,true,s1,student,ub1,Ann,Lee\n"  # line 6: a field short
    "ub2,active,,maybe,s1,student,ub2,Ann,Lee,ub2@example.org\n"  # line 7
    "ub3,active,,true,s1,student,ub3,Ann,Lee,ub3 at example.org\n"  # line 8
    "ub4,active,,true,s1,student,ub4,Ann,Lee,u1@example.org\n"  # line 9: u1's email
    "ub5,active,,true,s1,sorcerer,ub5,Ann,Lee,ub5@example.org\n"  # line 10
    f"ub6,active,,true,s1,student,ub6,{'A' * 5000},Lee,ub6@example.org\n",  # line 11
    "enrollments.csv": "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,"
    "primary,beginDate,endDate\n"
    "e1,active,,c1,s1,u1,student,false,,\n"
    "e2,active,,c1,s1,u2,student,false,,\n"
    "e3,active,,c1,s1,u3,student,false,,\n"
    "eb1,active,,c1,s1,u1,student,false,2026-02-30,\n"  # line 5
    "eb2,active,,c1,s1,ghost,student,false,,\n",
}
# (case id, entity, sourcedId, words of the reason)
BAD_CSV_RECORDS = [
    ("csv-bad-date", "academicSessions", "tb1", "academicSessions.csv line 3: startDate"),
    ("csv-class-unknown-school", "classes", "cb1", "unknown school 'nowhere'"),
    ("csv-ragged-row", "users", "ub1", "users.csv line 6: 9 fields, header has 10"),
    ("csv-bad-boolean", "users", "ub2", "users.csv line 7: enabledUser: not a boolean"),
    ("csv-invalid-email", "users", "ub3", "invalid email"),
    ("csv-duplicate-email", "users", "ub4", "duplicate email: sourcedId u1"),
    ("csv-unknown-role", "users", "ub5", "users.csv line 10: role: unknown role"),
    ("csv-enormous-name", "users", "ub6", "users.csv line 11: givenName: longer than 255"),
    ("csv-impossible-date", "enrollments", "eb1", "enrollments.csv line 5: beginDate"),
    ("csv-unknown-user", "enrollments", "eb2", "unknown user 'ghost'"),
]


def _zip(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def _upload(stack, aws_clients, name: str, body: bytes) -> None:
    key = f"inbox/{DISTRICT}/{name}"
    aws_clients("s3").put_object(Bucket=stack["StagingBucketName"], Key=key, Body=body)
    queued = drain(aws_clients, stack["RunQueueUrl"])
    # The bucket notifies RunQueue itself; the message is put back as the queue would hold it.
    note = {"Records": [{"eventSource": "aws:s3", "s3": {"object": {"key": key}}}]}
    bodies = [m["Body"] for m in queued] or [json.dumps(note)]
    sqs = aws_clients("sqs")
    for text in bodies:
        sqs.send_message(QueueUrl=stack["RunQueueUrl"], MessageBody=text)


def test_bad_csv_rows_are_rejected_by_file_and_line_and_a_broken_bundle_deletes_nothing(
    clean_stack, aws_clients, handlers, load_event, lambda_context, api
):
    _connect({"type": "oneroster-csv"})
    _upload(clean_stack, aws_clients, "bundle-1.zip", _zip(CSV_FILES))
    run = _run_queued(clean_stack, aws_clients, handlers, load_event, lambda_context, api)

    assert run["status"] == "succeeded", run.get("message")
    reasons = _reasons(run)
    for case, entity, sid, words in BAD_CSV_RECORDS:
        assert words in reasons.get((entity, sid), ""), (case, reasons)
    assert len(reasons) == len(BAD_CSV_RECORDS)
    _assert_private(run, ["Ann", "Lee", "example.org", "AAAA"])
    users = _product(api, "users")
    assert set(users) == {"u1", "u2", "u3"}
    assert users["u2"]["givenName"] == '=HYPERLINK("http://evil.example/","x")'  # data, as sent
    assert users["u2"]["familyName"] == "-Lee" and users["u3"]["familyName"] == "@Lee"
    assert users["u3"]["givenName"] == "Multi Line"
    assert _product(api, "classes")["c1"]["studentIds"] == ["u1", "u2", "u3"]

    # A bundle that is not UTF-8 fails its run, names file and line, and deletes nothing
    broken = dict(CSV_FILES, **{"users.csv": CSV_FILES["users.csv"].encode().replace(b"Ann", b"\xc1nn", 1)})
    _upload(clean_stack, aws_clients, "bundle-2.zip", _zip(broken))
    failed = _run_queued(clean_stack, aws_clients, handlers, load_event, lambda_context, api)
    assert failed["status"] == "failed"
    assert "users.csv line 2: not UTF-8" in failed["message"]
    assert _product(api, "users") == users


# ============================================= records: PowerSchool data ===


def test_bad_powerschool_students_are_rejected_and_the_district_arrives(
    clean_stack, aws_clients, handlers, load_event, lambda_context, api
):
    from rostersync.local.powerschool_sis import PS_CLIENT_ID, PS_CLIENT_SECRET, PowerSchoolSis

    # A small district: the bad students, not the volume, are the point here
    district = generate_district(schools=2, students_per_school=10, periods=2, class_size=5)
    with PowerSchoolSis(district) as sis:
        tables = sis.tables()
        students = next(rows for (_, kind), rows in tables.by_school.items() if kind == "student")
        template = next(
            s for s in students if s["contact_info"] and s["school_enrollment"]["enroll_status"] == "A"
        )
        bad = {  # PowerSchool id -> (change, words of the reason)
            990001: ({"contact_info": {"email": "pat.doe at example.org"}}, "invalid email"),
            990002: ({"name": {"first_name": BIG, "last_name": "Doe"}}, "givenName: longer than 255"),
            990003: ({"student_username": "q" * 300}, "username: longer than 255"),
            990004: ({"contact_info": {"email": "p\x00d@example.org"}}, "email: contains control characters"),
        }
        for number, (change, _words) in bad.items():
            students.append({**template, "id": number, "local_id": number, **change})
        students.append({**template, "id": 990005, "local_id": 990005,  # control characters: cleaned, kept
                         "contact_info": {"email": "ctl@example.org"},
                         "name": {"first_name": "Pat\x1b[31m", "last_name": "Doe\u202e"}})  # fmt: skip
        expected = {  # the students the district holds as active or inactive
            f"ps-student-{s['id']}"
            for (_, kind), rows in tables.by_school.items()
            if kind == "student"
            for s in rows
            if s["school_enrollment"]["enroll_status"] in ("A", "I")
        }

        credentials = f"/rostersync/districts/{DISTRICT}/ps-credentials"
        aws_clients("ssm").put_parameter(
            Name=credentials, Type="SecureString", Overwrite=True,
            Value=json.dumps({"clientId": PS_CLIENT_ID, "clientSecret": PS_CLIENT_SECRET}),
        )  # fmt: skip
        _connect({"type": "powerschool", "baseUrl": sis.url, "credentialsParameter": credentials})
        assert api("POST", f"{D}/sync")[0] == 202
        run = _run_queued(clean_stack, aws_clients, handlers, load_event, lambda_context, api)

    assert run["status"] == "succeeded", run.get("message")
    reasons = _reasons(run)
    for number, (_change, words) in bad.items():
        reason = reasons.get(("users", f"ps-student-{number}"), "")
        assert words in reason, (number, reasons)
    _assert_private(run, [BIG[:50], "pat.doe", "Pat"])
    users = _product(api, "users")
    assert users["ps-student-990005"]["givenName"] == "Pat[31m"
    assert users["ps-student-990005"]["familyName"] == "Doe"
    # every other student of the district arrived, as the same district does without the bad ones
    rejected_students = {sid for (entity, sid) in reasons if entity == "users"}
    assert {f"ps-student-{n}" for n in bad} <= rejected_students
    assert not (expected - rejected_students - set(users)), "a good student was lost"


# ======================================== any JSON at all, any field ===

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
FIELDS = ("sourcedId", "status", "dateLastModified", "name", "type", "parent", "title", "startDate", "endDate",
          "school", "terms", "periods", "course", "classCode", "username", "enabledUser", "givenName",
          "familyName", "role", "roles", "email", "orgs", "primaryOrg", "user", "class", "primary",
          "beginDate")  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    entity=st.sampled_from(("orgs", "academicSessions", "classes", "users", "enrollments")),
    record=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=8),
)
def test_any_json_in_any_field_is_read_or_rejected_never_a_crash(entity: str, record: dict[str, Any]) -> None:
    # A crash here would fail the whole staged page (a poison page) instead of one record.
    try:
        normalize(entity, {"sourcedId": "x1", "status": "active", **record})
    except RecordError as error:
        assert error.reason and len(error.reason) < 500
