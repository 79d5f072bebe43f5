"""An apply whose writes would outlive its Lambda invocation continues in a new one (SPEC 8).

A first sync of the largest district writes millions of product items: more than
one 15-minute invocation can. The planned writes are spooled in the working set's
SQLite file (`bounded_changes`), in the order they are written: per kind, creates,
updates, then removals (a user's is its inactive form, another kind's a delete);
last, a full run deletes from the mirror the records its complete read no longer
had (table `absent`).
`write_spool` writes them a chunk at a time from a cursor (kind, action, phase,
seq) and stops, between two chunks, when the invocation's budget is spent: then
the working set goes to the staging bucket (`state/{district}/apply-{run}.sqlite`)
with the cursor and what finishing the run needs (`resume` table), the run item
names the checkpoint (`applyContinue: {seq, key}`) and a `continue` message goes to
ApplyQueue. The next invocation claims exactly that checkpoint (a duplicate or
stale message is dropped), downloads the file, writes on from the cursor, and
either checkpoints again or finishes the run as an uninterrupted apply does.

Every invocation writes at least one chunk, so an apply always advances. Writes
are puts and deletes by key, so a chunk written twice (an invocation that died
after writing it and before its checkpoint) leaves the same product. The reading
before the plan continues the same way, through the same checkpoint
(pipeline/apply_read.py).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aws_lambda_powertools import Logger

from rostersync import aws
from rostersync.config import get_config
from rostersync.pipeline.changes import KINDS
from rostersync.roster.product import Issue
from rostersync.roster.working_set import LEFTOVER_PREFIX, WorkingSet
from rostersync.store import roster, runs

logger = Logger(service="rostersync", child=True)

# Items per chunk: one budget check per chunk (tests make it small)
WRITE_CHUNK = 5000
# Lambda's own limit, and what an invocation keeps back to upload its checkpoint
LAMBDA_MAX_S = 900.0


@dataclass
class WriteCursor:
    """Where the spooled writes stand: the next chunk is after (phase, seq) of this action."""

    kind: int = 0
    action: int = 0
    phase: int = -1
    seq: int = -1
    written: int = 0
    issue: int = 0  # the rowid of the last issue (error or warning) recorded
    issues_done: bool = False


class ApplyBudget:
    """The time an apply invocation may spend before it must checkpoint its writes."""

    def __init__(self, remaining_ms: int | None) -> None:
        config = get_config()
        remaining = LAMBDA_MAX_S if remaining_ms is None else max(0.0, remaining_ms / 1000)
        seconds = remaining - min(float(config.apply_time_reserve_s), remaining / 4)
        if config.apply_time_budget_s is not None:
            seconds = min(seconds, config.apply_time_budget_s)
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds  # the whole budget
        self.advanced = False  # a step was taken in this invocation

    def spent(self) -> bool:
        return time.monotonic() >= self.deadline

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def go_on(self) -> bool:
        """May the invocation take another step? Its first, always (every invocation
        advances); then while the budget lasts."""
        if self.advanced and self.spent():
            return False
        self.advanced = True
        return True


def _actions(kind: str, deletions: bool) -> tuple[str, ...]:
    return ("create", "update", "removal") if deletions else ("create", "update")


def write_spool(
    district_id: str,
    working_set: WorkingSet,
    cursor: WriteCursor,
    *,
    deletions: bool,
    spent: Callable[[], bool],
    run_id: str | None = None,
    products: bool = True,
) -> bool:
    """Write on from `cursor` (moved as it goes): the run's errors and warnings (given its
    `run_id`), then, with `products`, the spooled plan; False when the budget ran out first.
    The first chunk is written whatever the budget, so every call advances."""
    db = working_set.db
    first = True
    while run_id is not None and not cursor.issues_done:
        rows = db.execute(
            "SELECT rowid, kind, entity, sid, reason FROM issues WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (cursor.issue, WRITE_CHUNK),
        ).fetchall()
        if not rows:
            cursor.issues_done = True
            break
        if not first and spent():
            return False
        first = False
        for kind in ("ERR", "WARN"):
            issues = [Issue(entity=e, sourcedId=sid, reason=r) for _, k, e, sid, r in rows if k == kind]
            runs.add_issues(district_id, run_id, kind, issues)
        cursor.issue = rows[-1][0]
    if not products:
        return True
    db.execute("CREATE INDEX IF NOT EXISTS plan_order ON plan(kind, action, phase, seq)")
    while cursor.kind < len(KINDS):
        kind = KINDS[cursor.kind]
        actions = _actions(kind, deletions)
        while cursor.action < len(actions):
            action = actions[cursor.action]
            while True:
                rows = db.execute(
                    "SELECT phase, seq, doc FROM plan WHERE kind = ? AND action = ? AND (phase, seq) > (?, ?)"
                    " ORDER BY phase, seq LIMIT ?",
                    (kind, action, cursor.phase, cursor.seq, WRITE_CHUNK),
                ).fetchall()
                if not rows:
                    break
                if not first and spent():
                    return False
                first = False
                docs = [json.loads(doc) for _, _, doc in rows]
                if action == "removal" and kind != "users":
                    cursor.written += roster.delete_product(district_id, kind, docs)
                else:
                    cursor.written += roster.write_product(district_id, kind, docs)
                cursor.phase, cursor.seq = rows[-1][0], rows[-1][1]
            cursor.action, cursor.phase, cursor.seq = cursor.action + 1, -1, -1
        cursor.kind, cursor.action = cursor.kind + 1, 0
    if deletions:
        return _delete_absent(district_id, db, first=first, spent=spent)
    return True


def _delete_absent(district_id: str, db: Any, *, first: bool, spent: Callable[[], bool]) -> bool:
    """Last, the records a complete read no longer had leave the mirror, a chunk at a time:
    each chunk deleted leaves table `absent` too, so a checkpoint carries what is left (a
    rollover's full run may drop millions)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'absent'").fetchone() is None:
        return True
    while rows := db.execute(
        "SELECT entity, sid FROM absent ORDER BY entity, sid LIMIT ?", (WRITE_CHUNK,)
    ).fetchall():
        if not first and spent():
            return False
        first = False
        for entity in dict.fromkeys(entity for entity, _ in rows):
            roster.delete_mirror(district_id, entity, [sid for e, sid in rows if e == entity])
        db.execute("BEGIN")
        db.executemany("DELETE FROM absent WHERE entity = ? AND sid = ?", rows)
        db.execute("COMMIT")
    return True


def checkpoint_key(district_id: str, run_id: str) -> str:
    return f"state/{district_id}/apply-{run_id}.sqlite"


def write_state(cursor: WriteCursor, finish: dict[str, Any], working_set: WorkingSet) -> dict[str, Any]:
    """A write checkpoint's state: the cursor, and `finish` (what ending the run needs)."""
    return {"cursor": asdict(cursor), "finish": finish, "scoped": working_set.scoped}


def save_checkpoint(district_id: str, run_id: str, working_set: WorkingSet, state: dict[str, Any]) -> str:
    """Keep the working set and `state` (where the apply stands: `write_state`, or a read's
    cursor, pipeline/apply_read.py) in S3."""
    db = working_set.db
    db.execute("CREATE TABLE IF NOT EXISTS resume(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID")
    db.execute("INSERT OR REPLACE INTO resume VALUES ('state', ?)", (json.dumps(state, default=str),))
    key = checkpoint_key(district_id, run_id)
    aws.client("s3").upload_file(working_set.path, get_config().staging_bucket_name, key)
    return key


def delete_checkpoint(key: str) -> None:
    """The run is finished: its checkpoint (the district's roster) goes at once, not at expiry."""
    try:
        aws.client("s3").delete_object(Bucket=get_config().staging_bucket_name, Key=key)
    except Exception as error:  # the 30-day expiry of state/ removes it anyway
        logger.warning("apply checkpoint not deleted", reason=type(error).__name__)


def load_checkpoint(key: str, working_set_args: tuple[Any, Any]) -> tuple[WorkingSet, dict[str, Any]]:
    """The working set a checkpoint kept, and its state (see `save_checkpoint`)."""
    handle, path = tempfile.mkstemp(prefix=f"{LEFTOVER_PREFIX}{os.getpid()}-", suffix=".sqlite")
    os.close(handle)
    try:
        aws.client("s3").download_file(get_config().staging_bucket_name, key, path)
        working_set = WorkingSet.resume(path, *working_set_args)
    finally:
        if os.path.exists(path):
            os.remove(path)
    try:
        (value,) = working_set.db.execute("SELECT value FROM resume WHERE key = 'state'").fetchone()
        state = json.loads(value)
    except Exception:
        working_set.close()
        raise
    working_set.scoped = bool(state.get("scoped"))
    return working_set, state
