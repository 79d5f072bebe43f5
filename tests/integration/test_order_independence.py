"""SPEC 4: "The outcome of a run does not depend on the order in which staged
pages are processed, nor on a page being delivered twice."

Hypothesis draws a small district (schools, terms, classes, users with shared,
missing and unusable emails, enrollments, records that cannot be read, records
re-sent with another version) and the district's options, stages its pages to
the staging bucket, and runs the real stages against the template's stack on
moto: `transform_page` per page and `apply_run`, with the fetch stage's
bookkeeping (`finish_fetch`, then the fetch's own `claim_apply`) where the fetch
would do it. Once with every page in order, once in a drawn order with pages
delivered again (some after later pages) and the fetch completing at a drawn
point. Both runs must end with the same product records, the same rejected
records and warnings, the same counts, and apply queued exactly once.

Each run gets its own district id, so examples never see each other's records.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rostersync import aws
from rostersync.config import get_config
from rostersync.pipeline import transform
from rostersync.pipeline.apply import apply_run
from rostersync.settings.model import DistrictSettings
from rostersync.staging.layout import PageRef, run_prefix
from rostersync.staging.pages import put_json
from rostersync.store import keys, roster, runs
from rostersync.store import settings as settings_store
from rostersync.store.table import query_all, table

# Noon in the district's zone (America/Chicago): its "today" is TODAY.
NOW = datetime(2026, 10, 1, 17, 0, tzinfo=UTC)
TODAY = date(2026, 10, 1)
ENTITIES = ("orgs", "academicSessions", "classes", "users", "enrollments")
PRODUCT_KINDS = ("schools", "classes", "users", "enrollments")
STAMPS = tuple(f"2026-09-{day:02d}T08:00:00.000Z" for day in (1, 5, 9, 20))


def day(offset: int | None) -> str | None:
    return None if offset is None else (TODAY + timedelta(days=offset)).isoformat()


@pytest.fixture
def stack(aws_stack: dict[str, str]) -> Iterator[dict[str, str]]:
    """The deployed stack, with every cached boto3 client pointed at it (and forgotten after)."""
    aws.reset()
    yield aws_stack
    aws.reset()


# ---- the district -----------------------------------------------------------------


@dataclass(frozen=True)
class District:
    """Raw records per entity, already cut into pages, and the district's options."""

    pages: dict[str, list[list[dict[str, Any]]]]
    options: dict[str, Any]

    def refs(self, district_id: str, run_id: str) -> list[PageRef]:
        return [
            PageRef(district_id, run_id, entity, number)
            for entity in ENTITIES
            for number in range(len(self.pages[entity]))
        ]


ROLES = ("student",) * 5 + ("teacher", "teacher", "aide", "administrator", "principal", "parent")
ENR_ROLES = ("student", "student", "teacher", "aide")
OPTIONS = st.fixed_dictionaries(
    {
        "autoCreateSchools": st.booleans(),
        "importAdmins": st.booleans(),
        "usernameSource": st.booleans(),
        "usernameRules": st.sampled_from(
            [
                [],
                [{"op": "lowercase"}, {"op": "stripDomain"}],
                [{"op": "truncate", "length": 3}],
                [{"op": "regex", "pattern": "[0-9]", "replacement": ""}, {"op": "prefix", "value": "u-"}],
            ]
        ),
        "classNameFields": st.sampled_from([[], ["period", "term"], ["term", "classCode", "sourcedId"]]),
        "futureClassLeadDays": st.sampled_from([0, 15]),
    }
)


@st.composite
def districts(draw: st.DrawFn) -> District:
    stamp = st.sampled_from(STAMPS)
    n_schools = draw(st.integers(1, 2))
    schools = [f"s{i}" for i in range(1, n_schools + 1)]
    orgs: list[dict[str, Any]] = [
        {
            "sourcedId": "d",
            "status": "active",
            "name": "District",
            "type": "district",
            "dateLastModified": draw(stamp),
        }
    ]
    for sid in schools:
        orgs.append(
            {
                "sourcedId": sid,
                "status": draw(st.sampled_from(["active"] * 7 + ["tobedeleted"])),
                "name": f"School {sid}",
                "type": "school",
                "parent": {"sourcedId": "d"},
                "dateLastModified": draw(stamp),
            }
        )

    terms = [
        {
            "sourcedId": f"t{i}",
            "status": "active",
            "title": f"Term {i}",
            "type": "term",
            "startDate": day(draw(st.sampled_from([-60, -5, 10, 16, 40]))),
            "dateLastModified": draw(stamp),
        }
        for i in range(draw(st.integers(1, 2)))
    ]

    classes = []
    for i in range(draw(st.integers(1, 3))):
        classes.append(
            {
                "sourcedId": f"c{i}",
                "status": draw(st.sampled_from(["active"] * 9 + ["tobedeleted"])),
                "title": f"Class {i}",
                "classCode": f"C{i}",
                "school": {"sourcedId": draw(st.sampled_from([*schools * 4, "s-unknown"]))},
                "terms": [{"sourcedId": t["sourcedId"]} for t in terms if draw(st.booleans())],
                "periods": draw(st.sampled_from([[], ["1"], ["2", "3"], "4"])),
                "dateLastModified": draw(stamp),
            }
        )

    users = []
    # Numeric and text ids, so "lowest sourcedId" compares numbers as numbers.
    user_ids = draw(
        st.sampled_from([["9", "10", "100", "u1", "u2", "u3", "u4", "u5"], [f"u{i}" for i in range(8)]])
    )
    for i in range(draw(st.integers(3, 7))):
        sid = user_ids[i]
        role = draw(st.sampled_from(ROLES))
        raw: dict[str, Any] = {
            "sourcedId": sid,
            "status": draw(st.sampled_from(["active"] * 8 + ["tobedeleted", "inactive"])),
            "username": draw(st.sampled_from(["", f"User{sid}", "JSmith@X.org", "jsmith"])),
            "enabledUser": draw(st.sampled_from([True, False, "true", "false", None])),
            "givenName": f"G{sid}",
            "familyName": f"F{sid}",
            "email": draw(
                st.sampled_from([f"{sid}@x.org"] * 8 + ["dup@x.org", "DUP@X.org", None, "", "not-an-email"])
            ),
            "orgs": [{"sourcedId": o} for o in ["d", *schools] if draw(st.booleans())],
            "dateLastModified": draw(stamp),
        }
        if draw(st.booleans()):
            raw["role"] = role
        else:  # 1.2 shape
            raw["roles"] = [{"roleType": "secondary", "role": "aide"}, {"roleType": "primary", "role": role}]
        users.append(raw)

    enrollments = []
    user_choices = [u["sourcedId"] for u in users] * 3 + ["ghost-user"]
    class_choices = [c["sourcedId"] for c in classes] * 3 + ["ghost-class"]
    for i in range(draw(st.integers(2, 10))):
        enrollments.append(
            {
                "sourcedId": f"e{i}",
                "status": draw(st.sampled_from(["active"] * 9 + ["tobedeleted"])),
                "user": {"sourcedId": draw(st.sampled_from(user_choices))},
                "class": draw(st.sampled_from(class_choices)),  # a bare id, as some sources send
                "role": draw(st.sampled_from(ENR_ROLES)),
                "primary": draw(st.sampled_from(["true", "false", False])),
                "beginDate": day(draw(st.sampled_from([None, -30, 10, 20]))),
                "endDate": day(draw(st.sampled_from([None] * 4 + [-1, 0, 30]))),
                "dateLastModified": draw(stamp),
            }
        )

    # Records that cannot be read: rejected with a reason, whatever the page order.
    if draw(st.booleans()):
        users.append(
            {"sourcedId": "bad-bool", "role": "student", "email": "bb@x.org", "enabledUser": "maybe"}
        )
    if draw(st.booleans()):
        enrollments.append({"user": {"sourcedId": user_ids[0]}, "class": "c0", "role": "student"})  # no id
    if draw(st.booleans()):
        classes.append({"sourcedId": "bad-date", "title": "X", "school": "s1", "dateLastModified": "someday"})

    # A record sent again in a later page with other content (the source changed
    # while it was paged); the newer dateLastModified wins, the content breaks ties.
    for record in draw(st.lists(st.sampled_from(users), max_size=2, unique_by=lambda u: u["sourcedId"])):
        users.append({**record, "givenName": "Resent", "dateLastModified": draw(stamp)})

    records = {
        "orgs": orgs,
        "academicSessions": terms,
        "classes": classes,
        "users": users,
        "enrollments": enrollments,
    }
    pages = {}
    for entity, entity_records in records.items():
        size = draw(st.integers(2, 4))
        pages[entity] = [entity_records[i : i + size] for i in range(0, len(entity_records), size)]
    return District(pages=pages, options=draw(OPTIONS))


@st.composite
def deliveries(draw: st.DrawFn, n_pages: int) -> tuple[list[int], int]:
    """A delivery order of page indexes (each at least once, some twice or more) and
    the number of deliveries processed before the fetch completes."""
    order = list(draw(st.permutations(range(n_pages))))
    for page in draw(st.lists(st.integers(0, n_pages - 1), max_size=3)):
        # Anywhere after its first delivery: a redelivery, possibly after later pages.
        first = order.index(page)
        order.insert(draw(st.integers(first + 1, len(order))), page)
    return order, draw(st.integers(0, len(order)))


# ---- running the pipeline ---------------------------------------------------------


def run_pipeline(
    district: District, order: list[int] | None = None, fetch_done_after: int | None = None
) -> dict:
    """One run of a new district: stage its pages, transform them in `order`, apply;
    answer the outcome (and forget the district)."""
    district_id = new_district(district.options)
    run_ids: list[str] = []
    try:
        return sync(district_id, district, order, fetch_done_after, run_ids=run_ids)
    finally:
        forget_district(district_id, run_ids)


def new_district(options: dict[str, Any]) -> str:
    district_id = f"prop-{uuid.uuid4().hex[:16]}"
    settings_store.save_last_good(
        district_id,
        DistrictSettings.model_validate({"source": {"type": "direct"}, **options}),
        1,
        parameter_modified_at=NOW,
    )
    return district_id


def sync(
    district_id: str,
    district: District,
    order: list[int] | None = None,
    fetch_done_after: int | None = None,
    *,
    run_ids: list[str],
    moment: datetime = NOW,
) -> dict[str, Any]:
    """A full run of `district_id` that fetches `district`'s pages; answers its outcome."""
    run_id = runs.start_run(district_id, trigger="api", mode="full", moment=moment)["runId"]
    run_ids.append(run_id)
    runs.update_run(district_id, run_id, status="running", mode="full", fetchStartedAt=runs.iso(moment))
    refs = district.refs(district_id, run_id)
    for ref in refs:
        put_json(
            ref.key,
            {"entity": ref.entity, "page": ref.number, "records": district.pages[ref.entity][ref.number]},
        )
    order = list(range(len(refs))) if order is None else order
    fetch_done_after = len(order) if fetch_done_after is None else fetch_done_after
    apply_claims = transform_pages(district_id, run_id, [refs[i] for i in order], fetch_done_after)

    assert len(apply_claims) == 1, f"apply must be queued exactly once, got {apply_claims}"
    apply_run(district_id, run_id, now=moment)
    return outcome(district_id, run_id)


def transform_pages(
    district_id: str, run_id: str, deliveries: list[PageRef], fetch_done_after: int
) -> list[str]:
    """Transform the deliveries in turn, the fetch completing after `fetch_done_after` of them;
    answer who queued the apply stage."""
    apply_claims: list[str] = []

    def fetch_completes() -> None:
        # What the fetch stage does once every page is staged.
        runs.finish_fetch(district_id, run_id, len(set(deliveries)))
        if runs.claim_apply(district_id, run_id):
            apply_claims.append("fetch")

    def queue_apply(d: str, r: str) -> None:
        apply_claims.append(f"transform {d} {r}")

    # The apply message is recorded, not sent: apply runs below, and the shared
    # ApplyQueue stays empty for the tests that read it.
    with patch.object(transform, "send_apply_message", queue_apply):
        for position, ref in enumerate(deliveries):
            if position == fetch_done_after:
                fetch_completes()
            transform.transform_page(ref)
        if fetch_done_after >= len(deliveries):
            fetch_completes()
    return apply_claims


def forget_district(district_id: str, run_ids: list[str]) -> None:
    """Delete the district's items and pages: moto copies the whole table on every
    transaction, so a table that only grows would slow every later test."""
    partitions = [
        keys.district_pk(district_id),
        *(keys.run_detail_pk(district_id, run_id) for run_id in run_ids),
        *(keys.source_pk(district_id, entity) for entity in ENTITIES),
        *(keys.product_pk(district_id, kind) for kind in roster.PRODUCT_KIND.values()),
    ]
    with table().batch_writer() as batch:
        for pk in partitions:
            for item in query_all(
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": pk},
                ProjectionExpression="pk, sk",
            ):
                batch.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})
    s3 = aws.client("s3")
    bucket = get_config().staging_bucket_name
    listed = [
        obj
        for run_id in run_ids
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix=run_prefix(district_id, run_id)).get(
            "Contents", []
        )
    ]
    if listed:
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed], "Quiet": True}
        )


def outcome(district_id: str, run_id: str) -> dict[str, Any]:
    run = runs.get_run(district_id, run_id)
    assert run is not None
    result: dict[str, Any] = {
        kind: sorted(roster.iter_product(district_id, kind), key=lambda item: item["id"])
        for kind in PRODUCT_KINDS
    }
    result["errors"] = sorted(runs.list_issues(district_id, run_id, "ERR"), key=lambda i: sorted(i.items()))
    result["warnings"] = sorted(
        runs.list_issues(district_id, run_id, "WARN"), key=lambda i: sorted(i.items())
    )
    result["run"] = {k: run.get(k) for k in ("status", "counts", "pagesTotal", "pagesDone", "fetchComplete")}
    return result


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), district=districts())
def test_outcome_does_not_depend_on_page_order_or_duplicate_delivery(
    stack: dict[str, str], data: st.DataObject, district: District
) -> None:
    # Given the district's pages processed once, in order
    expected = run_pipeline(district)
    n_pages = len(district.refs("-", "-"))
    assert expected["run"]["status"] == "succeeded"
    assert expected["run"]["pagesDone"] == n_pages

    # When the same pages are processed in another order, some more than once
    order, fetch_done_after = data.draw(deliveries(n_pages), label="deliveries")
    got = run_pipeline(district, order, fetch_done_after)

    # Then the product, the rejected records, the warnings and the counts are the same
    for key in (*PRODUCT_KINDS, "errors", "warnings", "run"):
        assert got[key] == expected[key], key


def test_pipeline_outcome_is_the_roster_rules_outcome(stack: dict[str, str]) -> None:
    """A fixed district through the same harness: the comparison above compares real outcomes."""
    district = District(
        pages={
            "orgs": [[{"sourcedId": "s1", "name": "Lincoln High", "type": "school"}]],
            "academicSessions": [
                [{"sourcedId": "t1", "title": "Fall 2026", "type": "term", "startDate": day(-30)}]
            ],
            "classes": [
                [{"sourcedId": "c1", "title": "Algebra I", "school": "s1", "terms": "t1", "periods": ["3"]}],
                [{"sourcedId": "c2", "title": "Lost", "school": "s-unknown"}],
            ],
            "users": [
                [
                    {"sourcedId": "10", "role": "student", "email": "Pat@X.org", "orgs": ["s1"]},
                    {"sourcedId": "9", "role": "student", "email": "pat@x.org", "orgs": ["s1"]},
                ],
                [
                    {"sourcedId": "t1", "role": "teacher", "email": "t1@x.org", "orgs": ["s1"]},
                    {"sourcedId": "x", "role": "student", "enabledUser": "maybe"},
                ],
            ],
            "enrollments": [
                [
                    {
                        "sourcedId": "e1",
                        "user": "t1",
                        "class": "c1",
                        "role": "teacher",
                        "beginDate": day(-30),
                    },
                    {"sourcedId": "e2", "user": "9", "class": "c1", "role": "student"},
                    {"sourcedId": "e3", "user": "10", "class": "c1", "role": "student"},
                ]
            ],
        },
        options={"classNameFields": ["period", "term"]},
    )

    first = run_pipeline(district)
    again = run_pipeline(district, [6, 5, 4, 3, 6, 2, 1, 0, 3, 5], fetch_done_after=3)

    assert first == again
    assert first["schools"] == [{"id": "s1", "name": "Lincoln High"}]
    assert [(c["id"], c["name"], c["teacherIds"], c["studentIds"]) for c in first["classes"]] == [
        ("c1", "Algebra I - Period 3 - Fall 2026", ["t1"], ["9"])
    ]
    assert [(u["id"], u["role"]) for u in first["users"]] == [("9", "Student"), ("t1", "Teacher 1")]
    assert sorted(e["id"] for e in first["enrollments"]) == ["e1", "e2"]
    assert first["errors"] == [
        {"entity": "classes", "sourcedId": "c2", "reason": "unknown school 's-unknown'"},
        {"entity": "users", "sourcedId": "10", "reason": "duplicate email: sourcedId 9 has it"},
        {"entity": "users", "sourcedId": "x", "reason": "enabledUser: not a boolean: 'maybe'"},
    ]
    assert first["run"]["status"] == "succeeded"
    assert first["run"]["pagesDone"] == first["run"]["pagesTotal"] == 7


def test_rejection_reason_does_not_depend_on_page_order(stack: dict[str, str]) -> None:
    # Two unreadable copies of one sourcedId in two pages: both reasons are listed, in any order.
    district = District(
        pages={
            "orgs": [],
            "academicSessions": [],
            "classes": [],
            "users": [
                [{"sourcedId": "u1", "role": "student", "email": "u1@x.org", "enabledUser": "maybe"}],
                [{"sourcedId": "u1", "role": "student", "email": "u1@x.org", "dateLastModified": "someday"}],
            ],
            "enrollments": [],
        },
        options={},
    )

    in_order = run_pipeline(district, [0, 1])
    reversed_order = run_pipeline(district, [1, 0])

    assert in_order["errors"] == reversed_order["errors"]
    assert [(e["sourcedId"], e["reason"].split(":")[0]) for e in in_order["errors"]] == [
        ("u1", "dateLastModified"),
        ("u1", "enabledUser"),
    ]


def test_two_copies_of_a_record_in_one_page_with_mixed_timestamp_forms_are_read() -> None:
    records = [
        {"sourcedId": "u1", "role": "student", "dateLastModified": "2026-09-01T08:00:00"},
        {
            "sourcedId": "u1",
            "role": "student",
            "givenName": "Newer",
            "dateLastModified": "2026-09-02T08:00:00Z",
        },
    ]

    kept, rejected = transform.normalize_page("users", records, "users/000000")

    assert [(r.sourcedId, r.givenName) for r in kept] == [("u1", "Newer")]
    assert rejected == []


def one_entity(entity: str, pages: list[list[dict[str, Any]]]) -> District:
    return District(pages={e: (pages if e == entity else []) for e in ENTITIES}, options={})


def test_second_run_with_two_versions_of_a_stored_record_does_not_depend_on_page_order(
    stack: dict[str, str],
) -> None:
    newest = {
        "sourcedId": "u1",
        "role": "student",
        "email": "u1@x.org",
        "givenName": "Newest",
        "dateLastModified": "2026-09-05T08:00:00Z",
    }
    older = {**newest, "givenName": "Older", "dateLastModified": "2026-09-01T08:00:00Z"}
    first_run = one_entity("users", [[newest]])
    # The next run receives the stored version again, and an older one in another page.
    second_run = one_entity("users", [[newest], [older]])

    names = []
    for order in ([0, 1], [1, 0]):
        district_id = new_district({})
        run_ids: list[str] = []
        try:
            sync(district_id, first_run, run_ids=run_ids)
            result = sync(district_id, second_run, order, run_ids=run_ids, moment=NOW + timedelta(hours=1))
        finally:
            forget_district(district_id, run_ids)
        names.append([u["givenName"] for u in result["users"]])

    assert names == [["Newest"], ["Newest"]]


def test_page_redelivered_after_queueing_apply_failed_queues_apply(stack: dict[str, str]) -> None:
    # Given a run whose fetch is complete and whose one page is transformed, but
    # queueing the apply stage fails (SQS throttles), so the page is delivered again
    district_id = new_district({})
    run_ids: list[str] = []
    try:
        run_id = runs.start_run(district_id, trigger="api", mode="full", moment=NOW)["runId"]
        run_ids.append(run_id)
        runs.update_run(district_id, run_id, status="running", mode="full", fetchStartedAt=runs.iso(NOW))
        ref = PageRef(district_id, run_id, "users", 0)
        put_json(ref.key, {"entity": "users", "page": 0, "records": [{"sourcedId": "u1", "role": "student"}]})
        runs.finish_fetch(district_id, run_id, 1)
        sent: list[str] = []

        def unavailable(d: str, r: str) -> None:
            raise RuntimeError("SQS unavailable")

        with patch.object(transform, "send_apply_message", unavailable), pytest.raises(RuntimeError):
            transform.transform_page(ref)

        # When SQS delivers the page again
        with patch.object(transform, "send_apply_message", lambda d, r: sent.append(r)):
            transform.transform_page(ref)

        # Then the apply stage is queued: otherwise the run never ends and holds the lock
        assert sent == [run_id]
    finally:
        forget_district(district_id, run_ids)
