"""The whole pipeline on the embedded stack, driven over HTTP as a district's script would."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def _by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}


def _users(stack: Any, district_id: str, **params: Any) -> dict[str, dict[str, Any]]:
    return _by_id(stack.client.all_items(f"/districts/{district_id}/users", **params))


def _classes(stack: Any, district_id: str, **params: Any) -> dict[str, dict[str, Any]]:
    return _by_id(stack.client.all_items(f"/districts/{district_id}/classes", **params))


def test_full_sync_of_the_demo_district(stack, connect, district_id):
    # Given a district connected to its OneRoster 1.1 SIS with the demo options
    connect("1.1")
    # When it force-syncs
    run = stack.sync(district_id)
    # Then the run succeeded and its record counts every entity
    assert run["status"] == "succeeded", run
    assert run["trigger"] == "api" and run["mode"] == "full"
    assert run["counts"]["schools"]["created"] == 2
    assert run["counts"]["users"]["created"] > 100
    assert run["startedAt"] and run["finishedAt"]
    # every rejected record is listed with its reason
    errors = {(e["entity"], e["sourcedId"]): e["reason"] for e in run["errors"]}
    assert errors[("users", "u-tch-noemail")] == "no email"
    assert errors[("users", "u-stu-noemail")] == "no email"
    assert "duplicate email" in errors[("users", "u-dup-b")]
    assert run["counts"]["users"]["rejected"] == 3
    warnings = {(w["entity"], w["sourcedId"]) for w in run["warnings"]}
    assert ("users", "u-ucoll-2") in warnings  # username conflict
    assert ("users", "u-stu-nouser") in warnings  # empty source username

    schools = stack.client.get(f"/districts/{district_id}/schools")["items"]
    assert {s["id"]: s["name"] for s in schools} == {
        "org-school-1": "Lincoln High School",
        "org-school-2": "Washington Middle School",
    }

    users = _users(stack, district_id)
    assert users["u-tch-multi"]["role"] == "Teacher 1"
    assert users["u-tch-multi"]["username"] == "jsmith"
    assert users["u-aide-teaching"]["role"] == "Teacher 1"
    assert users["u-ucoll-1"]["username"] == "mgarcia"
    assert users["u-ucoll-2"]["username"] == users["u-ucoll-2"]["email"]
    assert users["u-stu-nouser"]["username"] == users["u-stu-nouser"]["email"]
    assert users["u-dup-a"]["email"] == "pat.lee@lincoln.k12.us"
    assert users["u-stu-disabled"]["status"] == "inactive"
    assert users["u-stu-twoschools"]["schoolIds"] == ["org-school-1", "org-school-2"]
    for never in (
        "u-parent",
        "u-guardian",
        "u-relative",
        "u-aide-noclass",
        "u-admin-district",
        "u-admin-principal",
        "u-stu-left",
        "u-dup-b",
        "u-tch-noemail",
    ):
        assert never not in users

    visible = _classes(stack, district_id)
    everything = _classes(stack, district_id, includeHidden="true")
    assert "cls-future" not in visible and "cls-alg1-spring" not in visible
    future = everything["cls-future"]
    assert future["visible"] is False and future["visibleFrom"] < future["startDate"]
    p1, p3 = visible["cls-alg1-p1"], visible["cls-alg1-p3"]
    assert p1["title"] == p3["title"] == "Algebra I"
    assert p1["name"].startswith("Algebra I - Period 1 - Fall ")
    assert p3["name"].startswith("Algebra I - Period 3 - Fall ")
    assert "u-stu-dropped" not in p1["studentIds"] and "u-stu-dropped" in p3["studentIds"]
    assert p1["teacherIds"] == ["u-tch-multi"]
    assert visible["cls-art-noemail"]["teacherIds"] == []


def test_oneroster_1_2_source_gives_the_same_product(stack, connect, district_id, sis):
    connect("1.2")
    run = stack.sync(district_id)
    assert run["status"] == "succeeded", run
    users = _users(stack, district_id)
    assert users["u-tch-multi"]["role"] == "Teacher 1"
    assert users["u-stu-disabled"]["status"] == "inactive"
    assert any("/rostering/v1p2/" in path for _, path, _ in sis.requests)


def test_options_main_location_admins_and_default_usernames(stack, connect, district_id):
    connect(
        "1.1",
        autoCreateSchools=False,
        importAdmins=True,
        usernameSource=False,
        usernameRules=[],
        classNameFields=["classCode"],
        roleMapping={"administrator": "District Admin"},
    )
    run = stack.sync(district_id)
    assert run["status"] == "succeeded", run
    assert stack.client.get(f"/districts/{district_id}/schools")["items"] == [
        {"id": "main", "name": "Main Location"}
    ]
    users = _users(stack, district_id)
    assert users["u-admin-district"]["role"] == "District Admin"
    assert users["u-aide-noclass"]["role"] == "Teacher 2"
    assert users["u-aide-teaching"]["role"] == "Teacher 2"
    assert users["u-tch-multi"]["username"] == users["u-tch-multi"]["email"]
    assert all(u["schoolIds"] == ["main"] for u in users.values())
    assert "u-parent" not in users
    classes = _classes(stack, district_id)
    assert all(c["schoolId"] == "main" for c in classes.values())
    p1 = classes["cls-alg1-p1"]
    assert p1["name"] == (f"Algebra I - {p1['classCode']}" if p1["classCode"] else "Algebra I")


def test_user_filters_and_paging(stack, connect, district_id):
    connect("1.1")
    assert stack.sync(district_id)["status"] == "succeeded"
    page = stack.client.get(f"/districts/{district_id}/users", limit=7)
    assert len(page["items"]) == 7 and page["nextCursor"]
    rest = stack.client.all_items(f"/districts/{district_id}/users")
    walked, cursor = [], None
    while True:
        page = stack.client.get(
            f"/districts/{district_id}/users", limit=25, **({"cursor": cursor} if cursor else {})
        )
        walked.extend(page["items"])
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert [u["id"] for u in walked] == [u["id"] for u in rest]
    found = stack.client.get(f"/districts/{district_id}/users", email="PAT.LEE@lincoln.k12.us")["items"]
    assert [u["id"] for u in found] == ["u-dup-a"]
    teachers = stack.client.all_items(f"/districts/{district_id}/users", role="Teacher 1")
    assert teachers and all(u["role"] == "Teacher 1" for u in teachers)
    inactive = stack.client.all_items(f"/districts/{district_id}/users", status="inactive")
    assert [u["id"] for u in inactive] == ["u-stu-disabled"]
    bad = stack.client.http.get(f"{stack.api_url}/districts/{district_id}/users", params={"limit": 5000})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


def test_one_run_at_a_time(stack, connect, district_id, sis):
    connect("1.1")
    sis.latency_s = 0.3  # a slow SIS keeps the first run busy
    first = stack.client.post(f"/districts/{district_id}/sync")
    assert first.status_code == 202
    run_id = first.json()["runId"]
    second = stack.client.post(f"/districts/{district_id}/sync")
    assert second.status_code == 409
    assert second.json()["error"]["runId"] == run_id
    sis.latency_s = 0.0
    assert stack.client.wait_run(district_id, run_id)["status"] == "succeeded"
    runs = stack.client.get(f"/districts/{district_id}/runs")["items"]
    assert runs[0]["runId"] == run_id


def test_api_errors(stack, connect, district_id):
    missing = stack.client.post("/districts/nobody-here/sync")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    connect("1.1")
    stack.client.force_sync(district_id, {"mode": "full"})  # waits for the settings to land
    for body in ({"mode": "sideways"}, {"dryRun": "yes"}, {"colour": "red"}):
        answer = stack.client.post(f"/districts/{district_id}/sync", body)
        assert answer.status_code in (400, 409), answer.text
        if answer.status_code == 400:
            assert set(answer.json()["error"]) >= {"code", "message"}
    nope = stack.client.http.get(f"{stack.api_url}/districts/{district_id}/runs/20260101T000000000Z-abcdef")
    assert nope.status_code == 404


def test_bad_settings_keep_the_last_good_settings_and_schedule(stack, connect, district_id):
    connect("1.1", dailySyncStart="03:15", timezone="America/New_York")
    scheduler = stack.aws("scheduler")
    schedule = scheduler.get_schedule(Name=f"rostersync-{district_id}")
    assert (
        schedule["ScheduleExpression"] == "cron(15 03 * * ? *)"
        or schedule["ScheduleExpression"] == "cron(15 3 * * ? *)"
    )
    assert schedule["ScheduleExpressionTimezone"] == "America/New_York"

    for bad in (
        '{"source": {"type": "direct"}, "timezone": "Mars/Olympus"}',
        '{"source": {"type": "direct"}, "dailySyncStart": "25:00"}',
        '{"source": {"type": "direct"}, "colour": "red"}',
        "not json",
    ):
        stack.put_settings(district_id, bad)
        stack.scan_settings()
        after = scheduler.get_schedule(Name=f"rostersync-{district_id}")
        assert after["ScheduleExpression"] == schedule["ScheduleExpression"]
        assert after["ScheduleExpressionTimezone"] == "America/New_York"
    # the last good settings still drive runs: the OneRoster source still syncs
    assert stack.sync(district_id)["status"] == "succeeded"


def test_schedule_fires_a_run(stack, connect, district_id):
    connect("1.1")
    fired = stack.client.post(f"/_local/schedules/rostersync-{district_id}/fire")
    assert fired.status_code == 202
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = stack.client.get(f"/districts/{district_id}/runs")["items"]
        if runs and runs[0]["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.3)
    assert runs[0]["trigger"] == "schedule"
    assert runs[0]["status"] == "succeeded"


def test_deleting_settings_deletes_the_schedule(stack, connect, district_id):
    connect("1.1")
    scheduler = stack.aws("scheduler")
    assert scheduler.get_schedule(Name=f"rostersync-{district_id}")
    stack.aws("ssm").delete_parameter(Name=f"/rostersync/districts/{district_id}/settings")
    stack.scan_settings()
    with pytest.raises(scheduler.exceptions.ResourceNotFoundException):
        scheduler.get_schedule(Name=f"rostersync-{district_id}")
    assert stack.client.post(f"/districts/{district_id}/sync").status_code == 404
