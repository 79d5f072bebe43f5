"""Push records of `direct` sources (SPEC 2), in the roster table.

A district (or its SIS vendor) opens a push, sends OneRoster-shaped pages per
entity, and completes it; the completed push becomes a run. The page bodies
live in the staging bucket (see `rostersync.sources.direct`); this module keeps
what the API and the fetch must agree on:

| item            | pk                          | sk                         |
|-----------------|-----------------------------|----------------------------|
| push record     | `DISTRICT#{d}`              | `PUSH#{pushId}`            |
| a pushed page   | `PUSH#{d}#{pushId}`         | `PAGE#{entity}#{page:06d}` |

The push record holds `status` (`open` | `completed`), `pages` and `records`
per entity, and `expiresAt` (epoch seconds, the table's TTL attribute): while
the push is open it is the moment it expires, once completed the moment its
record is forgotten. An expired push is never completed, so its pages never
become a run and nothing is deleted because of it.

A page marker holds the page's record count and the ETag of its S3 object:
the fetch reads exactly the pages recorded while the push was open, and
refuses an object that changed after it was recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError

from rostersync.config import get_config
from rostersync.errors import NotFoundError, RostersyncError
from rostersync.sources.base import ENTITIES
from rostersync.store import keys
from rostersync.store.runs import iso, new_run_id, now_utc, plain
from rostersync.store.table import query_all, table

PushStatus = Literal["open", "completed", "expired"]
PushMode = Literal["full", "incremental"]

# Long enough to push a million-user district page by page; short enough that
# a forgotten push does not linger as something that could still be completed.
PUSH_LIFETIME = timedelta(hours=24)
# A completed push stays readable (with its run id) as long as a run's details do.
COMPLETED_RETENTION = timedelta(days=30)
# Page markers outlive their push long enough for its run's fetch to read them.
PAGE_RETENTION = timedelta(days=7)

# Push ids are made like run ids, so they sort by time too.
_PUSH_ID = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{6}$")


class PushExpiredError(RostersyncError):
    code = "push_expired"
    http_status = 410


class PushCompletedError(RostersyncError):
    code = "push_completed"
    http_status = 409


class PushNotFoundError(NotFoundError):
    pass


class PushConflictError(RostersyncError):
    """Two requests changed the same page at once: the loser is told to send it again."""

    code = "conflict"
    http_status = 409


@dataclass(frozen=True)
class PushedPage:
    number: int
    records: int
    etag: str


def is_push_id(push_id: str) -> bool:
    return bool(_PUSH_ID.match(push_id))


def no_push_message(district_id: str, push_id: str) -> str:
    # A path segment that is no push id is not echoed: it may be anything (an email).
    named = push_id if is_push_id(push_id) else "with that id"
    return f"no push {named} for district {district_id}"


def push_sk(push_id: str) -> str:
    return f"PUSH#{push_id}"


def push_detail_pk(district_id: str, push_id: str) -> str:
    return f"PUSH#{district_id}#{push_id}"


def page_sk(entity: str, number: int) -> str:
    return f"PAGE#{entity}#{number:06d}"


def _key(district_id: str, push_id: str) -> dict[str, str]:
    return {"pk": keys.district_pk(district_id), "sk": push_sk(push_id)}


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def open_push(district_id: str, *, moment: datetime | None = None) -> dict[str, Any]:
    """Create an open push; returns its record."""
    moment = moment or now_utc()
    push_id = new_run_id(moment)
    item = {
        **_key(district_id, push_id),
        "pushId": push_id,
        "districtId": district_id,
        "status": "open",
        "openedAt": iso(moment),
        "expiresAt": _epoch(moment + PUSH_LIFETIME),
        # Every entity present from the start: updates add to nested counters.
        "pages": dict.fromkeys(ENTITIES, 0),
        "records": dict.fromkeys(ENTITIES, 0),
    }
    table().put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
    return plain(item)


def get_push(district_id: str, push_id: str) -> dict[str, Any] | None:
    if not is_push_id(push_id):
        return None
    item = table().get_item(Key=_key(district_id, push_id), ConsistentRead=True).get("Item")
    return plain(item) if item else None


def status_of(push: dict[str, Any], moment: datetime | None = None) -> PushStatus:
    """`expired` is read, not stored: TTL deletes an item late, and no writer runs at expiry."""
    if push["status"] == "open" and int(push["expiresAt"]) <= _epoch(moment or now_utc()):
        return "expired"
    return "completed" if push["status"] == "completed" else "open"


def require_open(district_id: str, push_id: str) -> dict[str, Any]:
    """The push, if pages may still be sent to it and it may be completed."""
    push = get_push(district_id, push_id)
    if push is None:
        raise PushNotFoundError(no_push_message(district_id, push_id))
    status = status_of(push)
    if status == "expired":
        raise PushExpiredError(
            f"push {push_id} expired at {iso_epoch(push['expiresAt'])}; its pages will not be "
            "processed: open a new push"
        )
    if status == "completed":
        raise PushCompletedError(f"push {push_id} is already completed (run {push.get('runId')})")
    return push


def iso_epoch(seconds: int) -> str:
    return iso(datetime.fromtimestamp(int(seconds), tz=UTC))


def _refusal(district_id: str, push_id: str) -> RostersyncError:
    """Why a conditional write on an open push failed, as the error to answer."""
    try:
        require_open(district_id, push_id)
    except RostersyncError as error:
        return error
    # Still open: the condition lost a race with another write to the same page.
    return PushConflictError(f"push {push_id} changed while this request ran: send the request again")


def _open_condition() -> dict[str, Any]:
    return {
        "ConditionExpression": "#status = :open AND expiresAt > :now",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {":open": "open", ":now": _epoch(now_utc())},
    }


def record_page(district_id: str, push_id: str, entity: str, number: int, *, records: int, etag: str) -> bool:
    """Record a page sent to an open push; True if it is new, False if it replaced one.

    One transaction writes the page marker and the push's counters, so the
    counts stay exact however often a page is sent, and a page is recorded
    only while its push is open (PushExpiredError / PushCompletedError else).
    """
    pk = push_detail_pk(district_id, push_id)
    marker_key = {"pk": pk, "sk": page_sk(entity, number)}
    previous = table().get_item(Key=marker_key, ConsistentRead=True).get("Item")
    old_records = int(previous["records"]) if previous else 0
    marker = {
        **marker_key,
        "records": records,
        "etag": etag,
        # Past any moment the push could still be completed, plus the fetch's time.
        "expiresAt": _epoch(now_utc() + PUSH_LIFETIME + PAGE_RETENTION),
    }
    # Replacing a page: only if nobody replaced it since it was read here.
    marker_condition = (
        {"ConditionExpression": "etag = :etag", "ExpressionAttributeValues": {":etag": previous["etag"]}}
        if previous
        else {"ConditionExpression": "attribute_not_exists(pk)"}
    )
    counters = _open_condition()
    counters["ExpressionAttributeNames"].update({"#pages": "pages", "#records": "records", "#e": entity})
    counters["ExpressionAttributeValues"].update({":p": 0 if previous else 1, ":r": records - old_records})
    name = get_config().roster_table_name
    try:
        # The resource's own client, which takes plain Python values like the table does.
        table().meta.client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": name, "Item": marker, **marker_condition}},
                {
                    "Update": {
                        "TableName": name,
                        "Key": _key(district_id, push_id),
                        "UpdateExpression": "SET #pages.#e = #pages.#e + :p, #records.#e = #records.#e + :r",
                        **counters,
                    }
                },
            ]
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "TransactionCanceledException":
            raise
        raise _refusal(district_id, push_id) from None
    return previous is None


def complete_push(district_id: str, push_id: str, *, run_id: str, mode: PushMode) -> None:
    """Mark an open push completed by `run_id`, or raise why it cannot be."""
    moment = now_utc()
    update = _open_condition()
    update["ExpressionAttributeNames"]["#mode"] = "mode"
    update["ExpressionAttributeValues"].update(
        {
            ":completed": "completed",
            ":run": run_id,
            ":mode": mode,
            ":at": iso(moment),
            ":keep": _epoch(moment + COMPLETED_RETENTION),
        }
    )
    try:
        table().update_item(
            Key=_key(district_id, push_id),
            UpdateExpression="SET #status = :completed, runId = :run, #mode = :mode, completedAt = :at, "
            "expiresAt = :keep",
            **update,
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        raise _refusal(district_id, push_id) from None


def reopen_push(district_id: str, push_id: str, *, run_id: str, expires_at: int) -> None:
    """Undo `complete_push` when its run could not be queued, so the push can be completed again."""
    try:
        table().update_item(
            Key=_key(district_id, push_id),
            UpdateExpression="SET #status = :open, expiresAt = :exp REMOVE runId, #mode, completedAt",
            ConditionExpression="runId = :run",
            ExpressionAttributeNames={"#status": "status", "#mode": "mode"},
            ExpressionAttributeValues={":open": "open", ":exp": expires_at, ":run": run_id},
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise


def iter_pages(district_id: str, push_id: str, entity: str) -> Iterator[PushedPage]:
    """The pages of an entity recorded on the push, in page order (bounded memory)."""
    for item in query_all(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :entity)",
        ExpressionAttributeValues={":pk": push_detail_pk(district_id, push_id), ":entity": f"PAGE#{entity}#"},
        ConsistentRead=True,
    ):
        yield PushedPage(
            number=int(item["sk"].rsplit("#", 1)[1]), records=int(item["records"]), etag=item["etag"]
        )


def push_view(push: dict[str, Any]) -> dict[str, Any]:
    """The push as the API answers it."""
    view = {
        "pushId": push["pushId"],
        "districtId": push["districtId"],
        "status": status_of(push),
        "openedAt": push["openedAt"],
        "expiresAt": iso_epoch(push["expiresAt"]),
        "pages": push.get("pages", {}),
        "records": push.get("records", {}),
        "runId": push.get("runId"),
    }
    for optional in ("mode", "completedAt"):
        if push.get(optional) is not None:
            view[optional] = push[optional]
    return view
