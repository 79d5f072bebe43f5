"""Run records, the one-run-at-a-time lock, page bookkeeping and run issues."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from botocore.exceptions import ClientError

from rostersync import observability
from rostersync.errors import RunActiveError
from rostersync.roster.product import Issue
from rostersync.store import keys
from rostersync.store.table import decode_cursor, encode_cursor, query_all, table

RunStatus = Literal["queued", "running", "succeeded", "failed", "halted", "previewed"]
FINAL_STATUSES = frozenset({"succeeded", "failed", "halted", "previewed"})
ENTITY_COUNTS = ("schools", "classes", "users", "enrollments")

# A lock older than this belongs to a run that died without releasing it.
LOCK_LIFETIME = timedelta(hours=6)
# Run issues kept in the run record, per kind (the rest are counted, not listed).
MAX_LISTED_ISSUES = 1000


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id(moment: datetime) -> str:
    """Sorts by time, so the newest run comes first when read backwards."""
    return f"{moment:%Y%m%dT%H%M%S}{moment.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; answers want plain JSON numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [plain(v) for v in value]
    return value


def empty_counts() -> dict[str, dict[str, int]]:
    fields = ("created", "updated", "deleted", "unchanged", "rejected")
    return {entity: dict.fromkeys(fields, 0) for entity in ENTITY_COUNTS}


def start_run(
    district_id: str,
    *,
    trigger: str,
    mode: str | None,
    confirm_deletes: bool = False,
    dry_run: bool = False,
    moment: datetime | None = None,
) -> dict[str, Any]:
    """Create a queued run and take the district's lock, or raise RunActiveError."""
    moment = moment or now_utc()
    run_id = new_run_id(moment)
    pk = keys.district_pk(district_id)
    run = {
        "pk": pk,
        "sk": keys.run_sk(run_id),
        "runId": run_id,
        "districtId": district_id,
        "trigger": trigger,
        "mode": mode,
        "status": "queued",
        "startedAt": iso(moment),
        "finishedAt": None,
        "confirmDeletes": confirm_deletes,
        "dryRun": dry_run,
        "counts": empty_counts(),
        "pagesTotal": 0,
        "pagesDone": 0,
        "fetchComplete": False,
    }
    lock = {
        "pk": pk,
        "sk": keys.LOCK_SK,
        "runId": run_id,
        "takenAt": iso(moment),
        "expiresAt": int((moment + LOCK_LIFETIME).timestamp()),
    }
    tbl = table()
    previous = tbl.get_item(Key={"pk": pk, "sk": keys.LOCK_SK}, ConsistentRead=True).get("Item")
    try:
        tbl.put_item(
            Item=lock,
            ConditionExpression="attribute_not_exists(pk) OR expiresAt < :now",
            ExpressionAttributeValues={":now": int(moment.timestamp())},
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        raise RunActiveError(active_run_id(district_id) or "unknown") from None
    try:
        tbl.put_item(Item=run)
    except Exception:
        release_lock(district_id, run_id)
        raise
    if previous and previous.get("runId") != run_id:
        _fail_stalled_run(district_id, str(previous["runId"]))
    return run


def _fail_stalled_run(district_id: str, run_id: str) -> None:
    """The run whose expired lock was just taken over died unfinished: say so on its record."""
    stalled = get_run(district_id, run_id)
    if stalled and stalled.get("status") not in FINAL_STATUSES:
        # Ended like any run (once, with its run-end event); its lock is already the new run's.
        finish_run(
            district_id,
            run_id,
            "failed",
            message=f"stalled: unfinished after {LOCK_LIFETIME.total_seconds() / 3600:g} hours; "
            "a new run took over",
        )


def active_run_id(district_id: str) -> str | None:
    item = table().get_item(Key={"pk": keys.district_pk(district_id), "sk": keys.LOCK_SK}).get("Item")
    return str(item["runId"]) if item else None


def release_lock(district_id: str, run_id: str) -> None:
    try:
        table().delete_item(
            Key={"pk": keys.district_pk(district_id), "sk": keys.LOCK_SK},
            ConditionExpression="runId = :run",
            ExpressionAttributeValues={":run": run_id},
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise


def get_run(district_id: str, run_id: str, *, consistent: bool = False) -> dict[str, Any] | None:
    key = {"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)}
    item = table().get_item(Key=key, ConsistentRead=consistent).get("Item")
    return plain(item) if item else None


def list_runs(district_id: str, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    kwargs: dict[str, Any] = {
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :run)",
        "ExpressionAttributeValues": {":pk": keys.district_pk(district_id), ":run": "RUN#"},
        "ScanIndexForward": False,
        "Limit": limit,
    }
    start = decode_cursor(cursor, pk=keys.district_pk(district_id))
    if start:
        kwargs["ExclusiveStartKey"] = start
    page = table().query(**kwargs)
    return [plain(i) for i in page.get("Items", [])], encode_cursor(page.get("LastEvaluatedKey"))


def storable(value: Any) -> Any:
    """DynamoDB takes no floats: numbers go in as Decimal."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def update_run(district_id: str, run_id: str, **fields: Any) -> None:
    names = {f"#{k}": k for k in fields}
    values = {f":{k}": storable(v) for k, v in fields.items()}
    table().update_item(
        Key={"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
        UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in fields),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )


def finish_run(district_id: str, run_id: str, status: RunStatus, **fields: Any) -> bool:
    """End the run: its final status, its lock released, its end announced (observability).

    Once per run: the write is conditional on the run not having ended, so a
    finish that is retried or races another changes nothing, announces nothing
    and answers False. The lock is released either way (only if still this run's).
    """
    values = {"status": status, "finishedAt": iso(now_utc()), **fields}
    final = {f":final{i}": s for i, s in enumerate(sorted(FINAL_STATUSES))}
    try:
        answer = table().update_item(
            Key={"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in values),
            ConditionExpression=f"attribute_exists(pk) AND NOT (#status IN ({', '.join(final)}))",
            ExpressionAttributeNames={f"#{k}": k for k in values},
            ExpressionAttributeValues={**{f":{k}": storable(v) for k, v in values.items()}, **final},
            ReturnValues="ALL_NEW",
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        release_lock(district_id, run_id)
        return False
    release_lock(district_id, run_id)
    observability.run_finished(plain(answer["Attributes"]))
    return True


def finish_fetch(district_id: str, run_id: str, pages_total: int) -> None:
    update_run(
        district_id, run_id, pagesTotal=pages_total, fetchComplete=True, fetchFinishedAt=iso(now_utc())
    )


def mark_page_done(district_id: str, run_id: str, page_key: str) -> bool:
    """Count a page once, however often it is delivered. False if it was counted before.

    The page's marker says whether its count was added, so a retry after a
    crash between the two writes adds it again rather than losing it; a
    count that ends up too high is caught by `claim_apply`'s exact check.
    """
    key = {"pk": keys.run_detail_pk(district_id, run_id), "sk": f"PAGE#{page_key}"}
    tbl = table()
    try:
        tbl.put_item(
            Item={**key, "counted": False, "expiresAt": int((now_utc() + timedelta(days=30)).timestamp())},
            ConditionExpression="attribute_not_exists(pk)",
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        marker = tbl.get_item(Key=key, ConsistentRead=True).get("Item") or {}
        if marker.get("counted"):
            return False
    tbl.update_item(
        Key={"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
        UpdateExpression="ADD pagesDone :one",
        ExpressionAttributeValues={":one": 1},
    )
    tbl.update_item(Key=key, UpdateExpression="SET counted = :t", ExpressionAttributeValues={":t": True})
    return True


def _pages_counted(district_id: str, run_id: str) -> int:
    total = 0
    kwargs: dict[str, Any] = {
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :page)",
        "ExpressionAttributeValues": {":pk": keys.run_detail_pk(district_id, run_id), ":page": "PAGE#"},
        "Select": "COUNT",
        "ConsistentRead": True,
    }
    while True:
        answer = table().query(**kwargs)
        total += int(answer["Count"])
        if "LastEvaluatedKey" not in answer:
            return total
        kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def claim_apply(district_id: str, run_id: str) -> bool:
    """True for exactly one caller, once the fetch is complete and every page is done."""
    key = {"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)}
    try:
        table().update_item(
            Key=key,
            UpdateExpression="SET applyClaimed = :t",
            ConditionExpression="fetchComplete = :t AND pagesDone >= pagesTotal "
            "AND attribute_not_exists(applyClaimed)",
            ExpressionAttributeValues={":t": True},
        )
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    run = get_run(district_id, run_id) or {}
    if _pages_counted(district_id, run_id) < int(run.get("pagesTotal", 0)):
        # The running count was high after a retried page: not every page is in yet.
        table().update_item(Key=key, UpdateExpression="REMOVE applyClaimed")
        return False
    return True


def add_source_writes(district_id: str, run_id: str, count: int) -> None:
    table().update_item(
        Key={"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
        UpdateExpression="ADD sourceWrites :n",
        ExpressionAttributeValues={":n": count},
    )


def release_apply_claim(district_id: str, run_id: str) -> None:
    table().update_item(
        Key={"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
        UpdateExpression="REMOVE applyClaimed",
    )


# An apply running longer than a Lambda invocation can has died: another may take over.
APPLY_LEASE = timedelta(minutes=16)


def begin_apply(district_id: str, run_id: str) -> bool:
    """One apply at a time per run, even when its message is delivered twice; none once the
    run's writes continue from a checkpoint (only its continue message goes on)."""
    now = now_utc()
    return _claimed(
        {
            "Key": {"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
            "UpdateExpression": "SET applyStartedAt = :now ADD applyInvocations :one",
            "ConditionExpression": "attribute_not_exists(applyContinue) AND "
            "(attribute_not_exists(applyStartedAt) OR applyStartedAt < :stale)",
            "ExpressionAttributeValues": {":now": iso(now), ":stale": iso(now - APPLY_LEASE), ":one": 1},
        }
    )


def checkpoint_apply(district_id: str, run_id: str, seq: int, key: str, *, writing: bool) -> None:
    """The apply continues from checkpoint `seq` (kept at `key`) in a new invocation: its
    reading (pipeline/apply_read.py), or its writes (`writing`)."""
    table().update_item(
        Key={"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
        UpdateExpression="SET applyContinue = :checkpoint REMOVE applyStartedAt",
        ExpressionAttributeValues={":checkpoint": {"seq": seq, "key": key, "writing": writing}},
    )


def claim_apply_continue(district_id: str, run_id: str, seq: int) -> bool:
    """Claim checkpoint `seq` of an apply. False for a duplicate or stale continue message,
    or while another invocation holds it (unless it is past its lease: it died)."""
    now = now_utc()
    return _claimed(
        {
            "Key": {"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
            "UpdateExpression": "SET applyStartedAt = :now ADD applyInvocations :one",
            "ConditionExpression": "applyContinue.seq = :seq AND #status = :running AND "
            "(attribute_not_exists(applyStartedAt) OR applyStartedAt < :stale)",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":now": iso(now),
                ":stale": iso(now - APPLY_LEASE),
                ":one": 1,
                ":seq": seq,
                ":running": "running",
            },
        }
    )


# ---- fetch invocations: one at a time, each continuing exactly one checkpoint ----
#
# A fetch may take several invocations (it checkpoints before the Lambda time
# limit). The run record holds `fetchSeq`, the number of the checkpoint the
# next invocation must continue (0: the start), and the claim of the
# invocation working on it (`fetchClaimSeq`, `fetchClaimToken`, and
# `fetchLeaseUntil`, when it will surely have stopped). A continue message
# delivered twice, or a stale one, fails its claim and is dropped.


def _claimed(update: dict[str, Any]) -> bool:
    try:
        table().update_item(**update)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def claim_fetch_start(
    district_id: str, run_id: str, *, token: str, lease_until: datetime, fetch_started_at: str
) -> bool:
    """Move a queued run to running for the invocation holding `token`. False if it is
    not queued, unless its first invocation died before any checkpoint (its lease
    has passed): SQS then delivers the start again, and the fetch starts over."""
    return _claimed(
        {
            "Key": {"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
            "UpdateExpression": "SET #status = :running, fetchStartedAt = :started, fetchSeq = :zero, "
            "fetchClaimSeq = :zero, fetchClaimToken = :token, fetchLeaseUntil = :lease, fetchInvocations = :one",
            "ConditionExpression": "#status = :queued "
            "OR (#status = :running AND fetchSeq = :zero AND fetchLeaseUntil < :now)",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":running": "running",
                ":queued": "queued",
                ":now": iso(now_utc()),
                ":started": fetch_started_at,
                ":zero": 0,
                ":one": 1,
                ":token": token,
                ":lease": iso(lease_until),
            },
        }
    )


def claim_fetch_continue(
    district_id: str, run_id: str, seq: int, *, token: str, lease_until: datetime
) -> bool:
    """Claim checkpoint `seq` of a running fetch. False for a duplicate or stale continue.

    Checkpoint `seq` is claimed once; again only when the invocation that
    claimed it is past its lease (it died without checkpointing: SQS then
    delivers the same continue again, after its visibility timeout).
    """
    now = now_utc()
    return _claimed(
        {
            "Key": {"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
            "UpdateExpression": "SET fetchClaimSeq = :seq, fetchClaimToken = :token, fetchLeaseUntil = :lease "
            "ADD fetchInvocations :one",
            "ConditionExpression": "#status = :running AND fetchSeq = :seq "
            "AND (fetchClaimSeq < :seq OR fetchLeaseUntil < :now)",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":running": "running",
                ":seq": seq,
                ":token": token,
                ":lease": iso(lease_until),
                ":now": iso(now),
                ":one": 1,
            },
        }
    )


def save_fetch_checkpoint(
    district_id: str, run_id: str, seq: int, checkpoint: dict[str, Any], *, token: str
) -> bool:
    """Record checkpoint `seq` (the one the next invocation continues). False if this
    invocation lost its claim (it ran past its lease and another took over)."""
    return _claimed(
        {
            "Key": {"pk": keys.district_pk(district_id), "sk": keys.run_sk(run_id)},
            "UpdateExpression": "SET fetchSeq = :seq, fetchCheckpoint = :checkpoint",
            "ConditionExpression": "#status = :running AND fetchClaimToken = :token AND fetchSeq = :previous",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":running": "running",
                ":seq": seq,
                ":previous": seq - 1,
                ":token": token,
                ":checkpoint": storable(checkpoint),
            },
        }
    )


def _issue_sk(kind: str, issue: Issue) -> str:
    # The reason is part of the key: two different problems with one sourcedId
    # are both listed, and the list does not depend on which page came last.
    digest = hashlib.sha1(issue.reason.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{kind}#{issue.entity}#{issue.sourcedId}#{digest}"


def add_issues(district_id: str, run_id: str, kind: Literal["ERR", "WARN"], issues: Iterable[Issue]) -> None:
    """Record rejected records (ERR) or warnings; keyed so a redelivered page adds nothing."""
    pk = keys.run_detail_pk(district_id, run_id)
    expires = int((now_utc() + timedelta(days=90)).timestamp())
    with table().batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
        for issue in issues:
            batch.put_item(
                Item={"pk": pk, "sk": _issue_sk(kind, issue), "expiresAt": expires, **issue.model_dump()}
            )


def issue_counts(district_id: str, run_id: str, kind: Literal["ERR", "WARN"]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in query_all(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :kind)",
        ExpressionAttributeValues={":pk": keys.run_detail_pk(district_id, run_id), ":kind": f"{kind}#"},
        ProjectionExpression="entity",
    ):
        counts[item["entity"]] = counts.get(item["entity"], 0) + 1
    return counts


def page_issues(
    district_id: str, run_id: str, kind: Literal["ERR", "WARN"], *, limit: int, cursor: str | None
) -> tuple[list[dict[str, str]], str | None]:
    """One page of a run's rejected records (ERR) or warnings, in key order."""
    pk = keys.run_detail_pk(district_id, run_id)
    kwargs: dict[str, Any] = {
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :kind)",
        "ExpressionAttributeValues": {":pk": pk, ":kind": f"{kind}#"},
        "Limit": limit,
    }
    start = decode_cursor(cursor, pk=pk)
    if start:
        kwargs["ExclusiveStartKey"] = start
    issues: list[dict[str, str]] = []
    while len(issues) < limit:
        kwargs["Limit"] = limit - len(issues)
        page = table().query(**kwargs)
        issues.extend(
            {"entity": i["entity"], "sourcedId": i["sourcedId"], "reason": i["reason"]}
            for i in page.get("Items", [])
        )
        start = page.get("LastEvaluatedKey")
        if not start:
            break
        kwargs["ExclusiveStartKey"] = start
    return issues, encode_cursor(start)


def list_issues(district_id: str, run_id: str, kind: Literal["ERR", "WARN"]) -> list[dict[str, str]]:
    """Every issue of the kind (tests and tools; the API pages them)."""
    issues, cursor = page_issues(district_id, run_id, kind, limit=MAX_LISTED_ISSUES, cursor=None)
    while cursor:
        more, cursor = page_issues(district_id, run_id, kind, limit=MAX_LISTED_ISSUES, cursor=cursor)
        issues.extend(more)
    return issues


def get_district(district_id: str) -> dict[str, Any]:
    item = table().get_item(Key={"pk": keys.district_pk(district_id), "sk": keys.DISTRICT_SK}).get("Item")
    return plain(item) if item else {}


def mark_bundle_processed(district_id: str, name: str) -> None:
    """An SFTP bundle read to the end is not picked again."""
    table().update_item(
        Key={"pk": keys.district_pk(district_id), "sk": keys.DISTRICT_SK},
        UpdateExpression="ADD processedBundles :name",
        ExpressionAttributeValues={":name": {name}},
    )


def set_watermark(district_id: str, watermark: str, run_id: str) -> None:
    table().update_item(
        Key={"pk": keys.district_pk(district_id), "sk": keys.DISTRICT_SK},
        UpdateExpression="SET watermark = :w, lastSuccessfulRunId = :r",
        ExpressionAttributeValues={":w": watermark, ":r": run_id},
    )


# ---- the apply state: the working set a run left, which the next incremental run reuses ----


def set_apply_state(district_id: str, state: dict[str, Any] | None) -> None:
    """Record the saved working set (`{"runId", "key", "schema"}`), or forget it (None)."""
    key = {"pk": keys.district_pk(district_id), "sk": keys.DISTRICT_SK}
    if state is None:
        table().update_item(Key=key, UpdateExpression="REMOVE applyState")
    else:
        table().update_item(
            Key=key, UpdateExpression="SET applyState = :s", ExpressionAttributeValues={":s": state}
        )


def runs_since(district_id: str, run_id: str) -> list[dict[str, Any]]:
    """The district's runs other than `run_id` started at or after its start (run ids sort by
    start time to the millisecond; one started in the same millisecond counts as after)."""
    return [
        plain(item)
        for item in query_all(
            KeyConditionExpression="pk = :pk AND sk BETWEEN :after AND :last",
            ExpressionAttributeValues={
                ":pk": keys.district_pk(district_id),
                ":after": keys.run_sk(run_id.split("-")[0]),
                ":last": keys.run_sk("~"),  # after every run id (digits, letters, '-')
            },
            ProjectionExpression="runId, dryRun, #s",
            ExpressionAttributeNames={"#s": "status"},
        )
        if item.get("runId") != run_id
    ]
