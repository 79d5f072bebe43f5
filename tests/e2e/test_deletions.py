"""SPEC 5 on the embedded stack, over HTTP: incremental runs, deletions, the
safeguard and the dry run, as a district's IT administrator would see them."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ALL_ENTITIES = ("schools", "classes", "users", "enrollments")


def _users(stack: Any, district_id: str) -> dict[str, dict[str, Any]]:
    return {u["id"]: u for u in stack.client.all_items(f"/districts/{district_id}/users")}


def _classes(stack: Any, district_id: str) -> dict[str, dict[str, Any]]:
    return {
        c["id"]: c for c in stack.client.all_items(f"/districts/{district_id}/classes", includeHidden="true")
    }


def _product(stack: Any, district_id: str) -> dict[str, Any]:
    return {
        "schools": stack.client.get(f"/districts/{district_id}/schools")["items"],
        "classes": _classes(stack, district_id),
        "users": _users(stack, district_id),
    }


def _filters(sis: Any) -> list[str]:
    return [query.get("filter", "") for _, _, query in sis.requests]


def test_item_writes_first_sync_unchanged_resync_and_small_delta(stack, connect, district_id, sis):
    connect("1.1", syncMode="full")
    first = stack.sync(district_id)
    assert first["status"] == "succeeded"
    assert first["itemWrites"] >= sum(first["counts"][e]["created"] for e in ALL_ENTITIES)

    # An unchanged re-sync writes no roster item at all
    again = stack.sync(district_id)
    assert again["status"] == "succeeded"
    assert again["itemWrites"] == 0, again
    assert all(again["counts"][e]["created"] == again["counts"][e]["updated"] == 0 for e in ALL_ENTITIES)
    assert again["counts"]["users"]["unchanged"] == first["counts"]["users"]["created"]

    # A small delta writes about what changed: two source records, two product records
    sis.district.touch("users", "stu-1-00001", givenName="Renamed")
    sis.district.touch("users", "stu-1-00002", familyName="Changed")
    delta = stack.sync(district_id, {"mode": "incremental"})
    assert delta["status"] == "succeeded" and delta["mode"] == "incremental"
    assert delta["counts"]["users"]["updated"] == 2
    assert delta["itemWrites"] == 4, delta  # 2 source mirror records + 2 product users


def test_incremental_sends_the_filter_and_honours_it(stack, connect, district_id, sis):
    connect("1.1")  # syncMode incremental
    first = stack.sync(district_id)
    assert first["mode"] == "full"  # a district's first run is always full
    assert not any(_filters(sis))

    sis.requests.clear()
    sis.district.touch("users", "stu-1-00003", givenName="Ines")
    second = stack.sync(district_id)
    assert second["mode"] == "incremental"
    filters = [f for f in _filters(sis) if f]
    assert filters and all(f.startswith("dateLastModified>'") for f in filters)
    assert second["counts"]["users"]["updated"] == 1
    assert _users(stack, district_id)["stu-1-00003"]["givenName"] == "Ines"
    # only what changed was fetched: one user page, nothing unchanged re-sent
    assert second["counts"]["users"]["unchanged"] == first["counts"]["users"]["created"] - 1
    # and the apply built on the working set the first run saved, reading only that user
    assert first["applyRead"] == {"savedState": False}  # a full run reads the district whole
    assert second["applyRead"] == {"savedState": True, "changedRecords": 1}, second


def test_a_source_refusing_the_filter_gets_a_full_run_said_so(stack, connect, district_id, sis):
    connect("1.1")
    assert stack.sync(district_id)["status"] == "succeeded"
    sis.filters = False  # this SIS answers 400 to any filter
    run = stack.sync(district_id, {"mode": "incremental"})
    assert run["status"] == "succeeded" and run["mode"] == "full"
    assert any("refused the dateLastModified filter" in w["reason"] for w in run["warnings"])


def test_tobedeleted_for_each_entity_and_reactivation(stack, connect, district_id, sis):
    connect("1.1", maxDeletePercent=100)
    assert stack.sync(district_id)["status"] == "succeeded"
    before = _product(stack, district_id)
    assert before["users"]["stu-1-00004"]["status"] == "active"

    sis.district.touch("users", "stu-1-00004", status="tobedeleted")
    sis.district.touch("classes", "cls-alg1-p3", status="tobedeleted")
    sis.district.touch("enrollments", "enr-cls-alg1-p1-u-stu-twoschools", status="tobedeleted")
    sis.district.touch("academicSessions", "as-spring", status="tobedeleted")
    sis.district.touch("orgs", "org-school-2", status="tobedeleted")
    run = stack.sync(district_id)
    assert run["status"] == "succeeded" and run["mode"] == "incremental"

    after = _product(stack, district_id)
    assert after["users"]["stu-1-00004"]["status"] == "inactive"  # kept, deactivated
    assert "cls-alg1-p3" not in after["classes"]
    assert "u-stu-twoschools" not in after["classes"]["cls-alg1-p1"]["studentIds"]
    assert after["classes"]["cls-alg1-spring"]["terms"] == []  # its only term is gone
    assert [s["id"] for s in after["schools"]] == ["org-school-1"]
    assert not any(c["schoolId"] == "org-school-2" for c in after["classes"].values())
    assert run["counts"]["users"]["deleted"] >= 1 and run["counts"]["classes"]["deleted"] >= 1
    assert run["counts"]["schools"]["deleted"] == 1 and run["counts"]["enrollments"]["deleted"] >= 1

    # The user comes back: reactivated, the same product user
    sis.district.touch("users", "stu-1-00004", status="active")
    assert stack.sync(district_id)["status"] == "succeeded"
    back = _users(stack, district_id)["stu-1-00004"]
    assert back["status"] == "active" and back["id"] == before["users"]["stu-1-00004"]["id"]


def test_absence_deletes_on_full_runs_only(stack, connect, district_id, sis):
    connect("1.1")
    assert stack.sync(district_id)["status"] == "succeeded"
    gone = sis.district.remove("users", "stu-1-00005")

    incremental = stack.sync(district_id, {"mode": "incremental"})
    assert incremental["counts"]["users"]["deleted"] == 0
    assert _users(stack, district_id)["stu-1-00005"]["status"] == "active"

    full = stack.sync(district_id, {"mode": "full"})
    assert full["status"] == "succeeded"
    assert full["counts"]["users"]["deleted"] == 1
    assert _users(stack, district_id)["stu-1-00005"]["status"] == "inactive"

    sis.district.add("users", gone)
    assert stack.sync(district_id, {"mode": "full"})["status"] == "succeeded"
    assert _users(stack, district_id)["stu-1-00005"]["status"] == "active"


def test_a_fetch_failing_half_way_deletes_nothing(stack, connect, district_id, sis):
    connect("1.1", maxDeletePercent=100)
    assert stack.sync(district_id)["status"] == "succeeded"
    before = _product(stack, district_id)
    for user in [u["sourcedId"] for u in sis.district.users if u["sourcedId"].startswith("stu-2-")]:
        sis.district.remove("users", user)
    sis.fail_next(403, count=1000, path_contains="enrollments")  # orgs..users read, then the SIS breaks

    run = stack.sync(district_id, {"mode": "full"})
    assert run["status"] == "failed"
    assert "enrollments" in run["message"] and "403" in run["message"]
    assert _product(stack, district_id) == before


def test_the_safeguard_halts_and_confirm_deletes_applies(stack, connect, district_id, sis):
    connect("1.1", maxDeletePercent=10)
    assert stack.sync(district_id)["status"] == "succeeded"
    active_before = [u for u in _users(stack, district_id).values() if u["status"] == "active"]
    # The SIS "loses" school 2's students (a rollover gone wrong), and one user is renamed
    lost = [u["sourcedId"] for u in sis.district.users if u["sourcedId"].startswith("stu-2-")]
    for user in lost:
        sis.district.remove("users", user)
    sis.district.touch("users", "stu-1-00006", givenName="Still Synced")

    halted = stack.sync(district_id, {"mode": "full"})
    assert halted["status"] == "halted", halted.get("message")
    guard = halted["safeguard"]["entities"]["users"]
    assert guard["tripped"] and guard["wouldDelete"] == len(lost) and guard["active"] == len(active_before)
    assert guard["percent"] > 10 and set(guard["sample"]) <= set(lost)
    assert "confirmDeletes" in halted["message"]
    users = _users(stack, district_id)
    assert all(users[u]["status"] == "active" for u in lost)  # nothing deleted
    assert users["stu-1-00006"]["givenName"] == "Still Synced"  # the other changes applied
    assert halted["counts"]["users"]["deleted"] == 0

    confirmed = stack.sync(district_id, {"mode": "full", "confirmDeletes": True})
    assert confirmed["status"] == "succeeded"
    assert confirmed["counts"]["users"]["deleted"] == len(lost)
    users = _users(stack, district_id)
    assert all(users[u]["status"] == "inactive" for u in lost)


def test_dry_run_previews_and_changes_nothing(stack, connect, district_id, sis):
    connect("1.1", maxDeletePercent=100)
    assert stack.sync(district_id)["status"] == "succeeded"
    before = _product(stack, district_id)
    sis.district.remove("users", "stu-1-00007")
    sis.district.touch("users", "stu-1-00008", givenName="Preview")
    sis.district.touch("classes", "cls-alg1-p1", title="Algebra One")

    preview = stack.sync(district_id, {"mode": "full", "dryRun": True})
    assert preview["status"] == "previewed" and preview["dryRun"] is True
    assert preview["itemWrites"] == 0
    assert preview["counts"]["users"]["deleted"] == 1 and preview["counts"]["users"]["updated"] >= 1
    assert "stu-1-00007" in preview["preview"]["users"]["deleted"]
    assert "stu-1-00008" in preview["preview"]["users"]["updated"]
    assert "cls-alg1-p1" in preview["preview"]["classes"]["updated"]
    assert _product(stack, district_id) == before

    # The preview did not touch the mirror either: the real run finds the same changes
    real = stack.sync(district_id, {"mode": "full"})
    assert real["counts"]["users"] == preview["counts"]["users"]
    assert _users(stack, district_id)["stu-1-00008"]["givenName"] == "Preview"
