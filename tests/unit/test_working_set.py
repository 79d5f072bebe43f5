"""The bounded-memory apply engine equals the in-memory one, exactly.

- Every rule test of test_compute.py is run again here with `compute` going
  through the disk-backed `WorkingSet` (the same expected records, errors and
  warnings), so each rule's edge is covered by the test written for it.
- A hypothesis property: for random snapshots, options and stored product
  states, the working set's product state, errors and warnings equal
  `compute_product`'s, and the merge-join plan equals `changes.plan_kind`'s
  (creates, updates, removals in order, unchanged, active_before, counts,
  samples).
- Edge tests the rule tests do not reach: stored items out of order, users
  giving up an email, usernames that are another user's email.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from unittest.mock import patch

import pytest
import test_compute as rules  # the rule tests of compute_product, re-run below on the working set
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compute import *  # noqa: F403  (collects every rule test into this module)

from rostersync.pipeline import changes
from rostersync.pipeline.apply_memory import SNAPSHOT_FIELDS
from rostersync.pipeline.bounded_changes import UnsortedStoredItemsError, plan_bounded, plan_kind_bounded
from rostersync.roster.compute import ProductState, RosterOptions, Snapshot, compute_product
from rostersync.roster.models import normalize
from rostersync.roster.product import PRODUCT_KINDS
from rostersync.roster.usernames import sourced_id_order
from rostersync.roster.working_set import WorkingSet, order_key


def mirror_rows(snap: Snapshot, entity: str) -> list[tuple[str, str, str]]:
    """The snapshot as store.roster.iter_mirror yields it: (sourcedId, JSON, version), sorted."""
    records = getattr(snap, SNAPSHOT_FIELDS[entity])
    return [(sid, rec.model_dump_json(), "v") for sid, rec in sorted(records.items())]


def load(ws: WorkingSet, snap: Snapshot) -> WorkingSet:
    for entity in SNAPSHOT_FIELDS:
        ws.load(entity, mirror_rows(snap, entity))
    ws.compute()
    return ws


def state_of(ws: WorkingSet) -> ProductState:
    state = ProductState()
    for kind, model in PRODUCT_KINDS.items():
        items = list(ws.iter_items(kind))
        ids = [item["id"] for item in items]
        assert ids == sorted(ids), f"{kind} not in id order"
        setattr(state, kind, {item["id"]: model.model_validate(item) for item in items})
    state.errors = list(ws.iter_errors())
    state.warnings = list(ws.iter_warnings())
    return state


def compute_bounded(snap: Snapshot, options: RosterOptions, today: date) -> ProductState:
    with WorkingSet(options, today) as ws:
        return state_of(load(ws, snap))


@pytest.fixture(autouse=True)
def _rules_through_the_working_set() -> Iterator[None]:
    def compute(snap: Snapshot, **options: Any) -> ProductState:
        return compute_bounded(snap, RosterOptions(**options), rules.TODAY)

    with patch.object(rules, "compute", compute):
        yield


# ---- random districts ----------------------------------------------------------------

TODAY = date(2026, 10, 1)
ROLES = ("student",) * 5 + ("teacher", "teacher", "aide", "administrator", "principal", "parent")


def ends_from(begin: int | None) -> list[int | None]:
    """End dates an enrollment beginning then may have (never before it begins)."""
    return [e for e in (None, None, -1, 0, 30) if e is None or begin is None or e >= begin]


def day(n: int | None) -> str | None:
    return None if n is None else (TODAY + timedelta(days=n)).isoformat()


OPTIONS = st.builds(
    RosterOptions,
    auto_create_schools=st.booleans(),
    class_name_fields=st.sampled_from([(), ("period", "term"), ("term", "classCode", "sourcedId")]),
    username_source=st.booleans(),
    username_rules=st.sampled_from(
        [
            (),
            ({"op": "lowercase"}, {"op": "stripDomain"}),
            ({"op": "truncate", "length": 3},),
            ({"op": "prefix", "value": "x" * 250},),  # too long: falls back to the email
            ({"op": "regex", "pattern": "[0-9]", "replacement": ""}, {"op": "prefix", "value": "u-"}),
        ]
    ),
    import_admins=st.booleans(),
    future_class_lead_days=st.sampled_from([0, 15]),
)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    schools = [f"s{i}" for i in range(1, draw(st.integers(1, 3)) + 1)]
    orgs = [{"sourcedId": "d", "name": "District", "type": "district"}]
    orgs += [
        {
            "sourcedId": sid,
            "status": draw(st.sampled_from(["active"] * 5 + ["tobedeleted"])),
            "name": f"School {sid}",
            "type": "school",
        }
        for sid in schools
    ]
    terms = [
        {
            "sourcedId": f"t{i}",
            "status": draw(st.sampled_from(["active"] * 5 + ["tobedeleted"])),
            "title": draw(st.sampled_from([f"Term {i}", ""])),
            "type": "term",
            "startDate": day(draw(st.sampled_from([None, -60, -5, 10, 16, 40]))),
        }
        for i in range(draw(st.integers(0, 3)))
    ]
    term_ids = [t["sourcedId"] for t in terms] + ["t-unknown"]
    classes = [
        {
            "sourcedId": cid,
            "status": draw(st.sampled_from(["active"] * 8 + ["tobedeleted"])),
            "title": f"Class {cid}",
            "classCode": draw(st.sampled_from(["", f"C{cid}"])),
            "school": {"sourcedId": draw(st.sampled_from([*schools * 3, "d", "s-unknown"]))},
            "terms": [{"sourcedId": t} for t in draw(st.lists(st.sampled_from(term_ids), max_size=3))],
            "periods": draw(st.sampled_from([[], ["1"], ["2", "3"], "4"])),
        }
        for cid in draw(
            st.lists(st.sampled_from(["c1", "c2", "c10", "7", "12", "Ca"]), unique=True, max_size=5)
        )
    ]
    # Numeric and text ids, so "lowest sourcedId" compares numbers as numbers.
    user_ids = draw(
        st.lists(
            st.sampled_from(["9", "10", "100", "u1", "u2", "u3", "U3", "u10", "é1", "2"]),
            unique=True,
            max_size=9,
        )
    )
    users = []
    for sid in user_ids:
        other = draw(st.sampled_from(user_ids))
        users.append(
            {
                "sourcedId": sid,
                "status": draw(st.sampled_from(["active"] * 8 + ["tobedeleted"])),
                "role": draw(st.sampled_from(ROLES)),
                "username": draw(
                    st.sampled_from(
                        ["", f"User{sid}", "JSmith@X.org", "jsmith", "JSMITH", f"{other}@x.org", "9"]
                    )
                ),
                "enabledUser": draw(st.booleans()),
                "givenName": f"G{sid}",
                "familyName": f"F{sid}",
                "email": draw(
                    st.sampled_from(
                        [f"{sid}@x.org"] * 6
                        + [f"{other}@x.org", "dup@x.org", "jsmith@x.org", None, "", "bad"]
                    )
                ),
                "orgs": [{"sourcedId": o} for o in ["d", *schools, "s-unknown"] if draw(st.booleans())],
            }
        )
    enrollments = []
    user_choices = [*user_ids, "ghost-user"]
    class_choices = [c["sourcedId"] for c in classes] + ["ghost-class"]
    for i in range(draw(st.integers(0, 14))):
        begin = draw(st.sampled_from([None, -30, 10, 20]))
        enrollments.append(
            {
                "sourcedId": draw(st.sampled_from([f"e{i}", str(i)])),
                "status": draw(st.sampled_from(["active"] * 8 + ["tobedeleted"])),
                "user": {"sourcedId": draw(st.sampled_from(user_choices))},
                "class": {"sourcedId": draw(st.sampled_from(class_choices))},
                "role": draw(st.sampled_from(["student", "student", "teacher", "aide", "administrator"])),
                "beginDate": day(begin),
                "endDate": day(draw(st.sampled_from(ends_from(begin)))),
            }
        )

    def read(entity: str, raws: list[dict[str, Any]]) -> dict[str, Any]:
        records = [normalize(entity, raw) for raw in raws]
        return {r.sourcedId: r for r in records}

    return Snapshot(
        orgs=read("orgs", orgs),
        academic_sessions=read("academicSessions", terms),
        classes=read("classes", classes),
        users=read("users", users),
        enrollments=read("enrollments", enrollments),
    )


@st.composite
def stored_states(draw: st.DrawFn, computed: ProductState) -> dict[str, list[dict[str, Any]]]:
    """A stored product: some computed items as they are, some changed, some gone, some extra."""
    stored: dict[str, list[dict[str, Any]]] = {}
    for kind in PRODUCT_KINDS:
        items: dict[str, dict[str, Any]] = {}
        for item_id, model in getattr(computed, kind).items():
            fate = draw(st.sampled_from(["same", "same", "changed", "absent"]))
            doc = model.model_dump(mode="json")
            if fate == "absent":
                continue
            if fate == "changed":
                field = "name" if kind == "schools" else ("role" if kind == "enrollments" else "id")
                doc = {**doc, field: doc[field] + "-old"} if field != "id" else {**doc, "extra": 1}
            items[item_id] = doc
        emails = [u.email for u in computed.users.values()] + ["gone@x.org", ""]
        for extra in draw(
            st.lists(st.sampled_from(["0", "a", "u2", "zz", "9", "é"]), unique=True, max_size=3)
        ):
            extra_id = f"{extra}-stored"
            if kind == "users":
                items[extra_id] = {
                    "id": extra_id,
                    "sourcedId": extra_id,
                    "email": draw(st.sampled_from(emails)),
                    "username": "old",
                    "givenName": "G",
                    "familyName": "F",
                    "role": "Student",
                    "status": draw(st.sampled_from(["active", "inactive"])),
                    "schoolIds": [],
                }
            else:
                items[extra_id] = {"id": extra_id, "name": "gone"}
        stored[kind] = [items[i] for i in sorted(items)]
    return stored


def old_plan(kind: str, computed: ProductState, stored: list[dict[str, Any]]) -> changes.KindPlan:
    with patch.object(changes.roster, "iter_product", lambda _district, _kind: iter(stored)):
        return changes.plan_kind("d1", kind, getattr(computed, kind))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snap=snapshots(), options=OPTIONS, data=st.data())
def test_working_set_and_plan_equal_compute_product_and_plan_kind(
    snap: Snapshot, options: RosterOptions, data: st.DataObject
) -> None:
    # Given a random district and stored product
    expected = compute_product(snap, options, TODAY)
    stored = data.draw(stored_states(expected))
    # When the bounded engine computes and plans it
    with WorkingSet(options, TODAY) as ws:
        result = plan_bounded(
            {e: mirror_rows(snap, e) for e in SNAPSHOT_FIELDS}, lambda kind: iter(stored[kind]), ws
        )
        got = state_of(ws)
        # Then the product state, the errors and the warnings are compute_product's
        assert got.schools == expected.schools
        assert got.classes == expected.classes
        assert got.users == expected.users
        assert got.enrollments == expected.enrollments
        assert got.errors == expected.errors
        assert got.warnings == expected.warnings
        # and the plan of every kind is plan_kind's, list by list
        for kind in PRODUCT_KINDS:
            want, have = old_plan(kind, expected, stored[kind]), result.kinds[kind]
            assert list(have.iter_creates()) == want.creates, kind
            assert list(have.iter_updates()) == want.updates, kind
            assert list(have.iter_removals()) == want.removals, kind
            assert have.unchanged == want.unchanged
            assert have.active_before == want.active_before
            assert have.counts() == want.counts()
            assert have.samples() == want.samples()
            assert have.removal_sample() == sorted(want.removal_ids())[:10]


# ---- edges the rule tests do not reach -------------------------------------------------


def test_order_key_sorts_as_sourced_id_order() -> None:
    ids = [
        "10",
        "9",
        "009x",
        "0",
        "00",
        "u1",
        "U1",
        "é",
        "100000000000000000000000000000000000000000000",
        "7",
    ]
    assert sorted(ids, key=order_key) == sorted(ids, key=sourced_id_order)


def test_stored_items_out_of_id_order_are_refused() -> None:
    with WorkingSet(RosterOptions(), TODAY) as ws:
        load(ws, Snapshot())
        with pytest.raises(UnsortedStoredItemsError):
            plan_kind_bounded("schools", ws, [{"id": "b", "name": "B"}, {"id": "a", "name": "A"}])


def users_snapshot(*raws: dict[str, Any]) -> Snapshot:
    return Snapshot(users={r["sourcedId"]: normalize("users", r) for r in raws})


def raw_user(sid: str, email: str, username: str = "") -> dict[str, Any]:
    return {"sourcedId": sid, "role": "student", "email": email, "username": username}


def test_a_deactivated_user_gives_up_an_email_another_user_now_has() -> None:
    snap = users_snapshot(raw_user("new", "ann@x.org"))
    stored = [
        {"id": "old", "sourcedId": "old", "email": "ann@x.org", "username": "ann@x.org", "givenName": "",
         "familyName": "", "role": "Student", "status": "active", "schoolIds": []},
        {"id": "older", "sourcedId": "older", "email": "bob@x.org", "username": "b", "givenName": "",
         "familyName": "", "role": "Student", "status": "inactive", "schoolIds": []},
    ]  # fmt: skip
    with WorkingSet(RosterOptions(auto_create_schools=False), TODAY) as ws:
        result = plan_bounded(
            {"users": mirror_rows(snap, "users")}, lambda kind: stored if kind == "users" else [], ws
        )
        plan = result.kinds["users"]
        assert [r["id"] for r in plan.iter_removals()] == ["old"]
        assert next(plan.iter_removals())["email"] == ""
        assert next(plan.iter_removals())["status"] == "inactive"
        assert plan.unchanged == 1  # already inactive, email nobody holds: not written again
        assert plan.counts()["created"] == 1


def test_a_username_that_is_another_users_email_yields_to_that_user() -> None:
    snap = users_snapshot(raw_user("1", "one@x.org", "TWO@x.org"), raw_user("2", "two@x.org", "two@x.org"))
    options = RosterOptions(username_source=True)
    state = compute_bounded(snap, options, TODAY)
    assert state.users["1"].username == "one@x.org"
    assert state.users["2"].username == "two@x.org"
    assert [w.reason for w in state.warnings] == [
        "username is the email of sourcedId 2: the email is the username"
    ]
    assert state == compute_product(snap, options, TODAY)


def test_emails_that_differ_only_in_case_resolve_usernames_as_resolve_usernames_does() -> None:
    # The mirror stores emails lower-cased; records built without normalize may not be. With two
    # imported users whose emails differ only in case, resolve_usernames' email owner is the later.
    from rostersync.roster.models import User

    users = [
        User(sourcedId="1", role="student", email="Ann@x.org", username="ann@x.org"),
        User(sourcedId="2", role="student", email="ann@x.org", username="x"),
        User(sourcedId="3", role="student", email="c@x.org", username="ANN@x.org"),
    ]
    snap = Snapshot(users={u.sourcedId: u for u in users})
    options = RosterOptions(username_source=True, auto_create_schools=False)
    assert compute_bounded(snap, options, TODAY) == compute_product(snap, options, TODAY)


def test_the_bench_district_is_planned_exactly_as_in_memory() -> None:
    # The synthetic district of `make bench`'s engine figures (duplicate and missing emails,
    # username conflicts, parents, ended enrollments, a ghost class, hidden future classes),
    # at 3,000 users.
    from rostersync.bench.apply_engine import District

    district = District(3000, 7, username_pool=1000, shared_email_every=500)
    options = RosterOptions(username_source=True, class_name_fields=("period", "term"))
    snap = Snapshot(
        **{
            name: {sid: normalize_json(entity, doc) for sid, doc, _ in district.mirror(entity)}
            for entity, name in SNAPSHOT_FIELDS.items()
        }
    )
    expected = compute_product(snap, options, TODAY)
    assert expected.errors and expected.warnings and expected.classes
    with WorkingSet(options, TODAY) as ws:
        result = plan_bounded(district.mirror, lambda kind: district.stored(kind), ws)
        assert state_of(ws) == expected
        for kind in PRODUCT_KINDS:
            want, have = old_plan(kind, expected, list(district.stored(kind))), result.kinds[kind]
            assert list(have.iter_creates()) == want.creates
            assert list(have.iter_updates()) == want.updates
            assert list(have.iter_removals()) == want.removals
            assert (have.unchanged, have.active_before) == (want.unchanged, want.active_before)


def normalize_json(entity: str, doc: str) -> Any:
    from rostersync.roster.models import ENTITY_MODELS

    return ENTITY_MODELS[entity].model_validate_json(doc)


@pytest.mark.parametrize("deletions", [True, False])
def test_the_spooled_writes_are_plan_kinds_writes(deletions: bool) -> None:
    # Given a plan with creates, updates and removals of every kind
    snap = users_snapshot(raw_user("1", "one@x.org"), raw_user("2", "two@x.org"))
    stored = {
        "users": [
            {**product_doc("2"), "givenName": "old"},
            {**product_doc("3"), "email": "three@x.org"},
        ],
        "schools": [{"id": "gone", "name": "Gone"}],
    }
    expected = compute_product(snap, RosterOptions(auto_create_schools=False), TODAY)
    with WorkingSet(RosterOptions(auto_create_schools=False), TODAY) as ws:
        result = plan_bounded(
            {"users": mirror_rows(snap, "users")}, lambda kind: iter(stored.get(kind, [])), ws
        )
        # When both plans are written
        have, want = (
            record_writes(result, deletions),
            record_writes(
                changes.ChangePlan({k: old_plan(k, expected, stored.get(k, [])) for k in changes.KINDS}),
                deletions,
            ),
        )
    # Then the same items are put and deleted, in the same order
    assert have == want
    assert any(call[0] == "delete" and call[2] for call in have) is deletions


def product_doc(sid: str) -> dict[str, Any]:
    return {"id": sid, "sourcedId": sid, "email": f"{sid}@x.org", "username": f"{sid}@x.org",
            "givenName": "", "familyName": "", "role": "Student", "status": "active", "schoolIds": ["main"]}  # fmt: skip


def record_writes(plan: Any, deletions: bool) -> list[tuple[str, str, list[Any]]]:
    calls: list[tuple[str, str, list[Any]]] = []

    def put(_district: str, kind: str, items: Any) -> int:
        calls.append(("put", kind, list(items)))
        return len(calls[-1][2])

    def delete(_district: str, kind: str, ids: Any) -> int:
        calls.append(("delete", kind, list(ids)))
        return len(calls[-1][2])

    with (
        patch.object(changes.roster, "write_product", put),
        patch.object(changes.roster, "delete_product", delete),
    ):
        plan.write("d1", deletions=deletions)
    return calls


def test_a_saved_working_set_computes_as_a_fresh_one_of_the_same_records(tmp_path: Any) -> None:
    # Given a district computed and saved (as apply_state saves it)
    import shutil

    from rostersync.roster.working_set import SCHEMA_VERSION

    def row(entity: str, raw: dict[str, Any]) -> tuple[str, str, str]:
        record = normalize(entity, raw)
        return record.sourcedId, record.model_dump_json(), "v"

    mirror = {
        "orgs": [row("orgs", {"sourcedId": "s1", "name": "One", "type": "school"})],
        "academicSessions": [],
        "classes": [row("classes", {"sourcedId": "c1", "title": "Art", "school": {"sourcedId": "s1"}})],
        "users": [
            row(
                "users", {"sourcedId": f"u{n}", "role": "student", "email": f"u{n}@x.org", "username": "same"}
            )
            for n in range(3)
        ],
        "enrollments": [
            row("enrollments", {"sourcedId": f"e{n}", "role": "student", "user": f"u{n}", "class": "c1"})
            for n in range(3)
        ],
    }
    options = RosterOptions(username_source=True)
    first = WorkingSet(options, TODAY)
    result = plan_bounded(mirror, lambda kind: iter(()), first)
    assert result.counts()["users"]["created"] == 3
    first.prepare_to_save()
    saved = str(tmp_path / "saved.sqlite")
    first.db.close()
    shutil.copy(first.path, saved)
    first.close()

    # When it is reopened, a user changes (now a duplicate email) and an enrollment is deleted
    changes = {
        "users": [row("users", {"sourcedId": "u2", "role": "student", "email": "u0@x.org"})],
        "enrollments": [row("enrollments", {"sourcedId": "e1", "status": "tobedeleted"})],
    }
    reopened = WorkingSet(options, TODAY, saved=saved)
    for entity, rows in changes.items():
        reopened.change(entity, rows)
    reopened.compute()
    stored = {kind: list(reopened.iter_stored(kind)) for kind in PRODUCT_KINDS}
    assert [u["id"] for u in stored["users"]] == ["u0", "u1", "u2"]

    # Then it computes exactly what a fresh working set of the changed records does
    changed = {
        "users": [mirror["users"][0], mirror["users"][1], changes["users"][0]],
        "enrollments": [mirror["enrollments"][0], mirror["enrollments"][2]],
    }
    with WorkingSet(options, TODAY) as fresh:
        for entity in mirror:
            fresh.load(entity, changed.get(entity, mirror[entity]))
        fresh.compute()
        for kind in PRODUCT_KINDS:
            assert list(reopened.iter_items(kind)) == list(fresh.iter_items(kind)), kind
        assert list(reopened.iter_errors()) == list(fresh.iter_errors())
        assert list(reopened.iter_warnings()) == list(fresh.iter_warnings())
    assert any("duplicate email" in issue.reason for issue in reopened.iter_errors())
    reopened.close()

    # And a file of another layout is refused, not misread
    other = str(tmp_path / "other.sqlite")
    import sqlite3

    with sqlite3.connect(other) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ValueError, match="layout"):
        WorkingSet(options, TODAY, saved=other)


def test_leftover_working_sets_of_this_process_and_of_dead_ones_are_swept(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    from rostersync.roster.working_set import LEFTOVER_PREFIX, sweep_leftovers

    # Given the leftovers of this process (a killed invocation's, as Lambda restarts with the
    # same pid), of a process that has ended, and the live working set of another process
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        names = {
            "mine": f"{LEFTOVER_PREFIX}{os.getpid()}-abc",
            "dead": f"{LEFTOVER_PREFIX}{int(dead.stdout)}-def",
            "live": f"{LEFTOVER_PREFIX}{live.pid}-ghi",
            "other": "rostersync-something-else",
        }
        for name in names.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / "working.db").write_bytes(b"x" * 10)
        (tmp_path / f"{LEFTOVER_PREFIX}{os.getpid()}-jkl.sqlite").write_bytes(b"x")  # a download

        # When an apply starts
        assert sweep_leftovers(str(tmp_path)) == 3

        # Then only the live process's working set and what is not a working set remain
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["live"], names["other"]])
    finally:
        live.kill()
        live.wait()
