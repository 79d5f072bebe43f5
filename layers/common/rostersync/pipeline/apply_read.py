"""A run's reading continues across invocations, as its writes do (SPEC 8).

Before the bounded engine computes a run that does not build on a saved working set
(a full run, a dry run, an incremental run without one, the replan of a run the
safeguard halted), it reads into the run's working set, in stages:

- `pages`: the sourcedIds each of the run's staged pages holds (table `seen`);
- `overlay`: a dry run's own records (table `overlay`);
- `mirror`: the mirror, filtered by those (`apply_bounded.mirror_rows`), loaded for the rules;
- `product`: the product as stored (table `stored`), for the plan's merge join;

then `plan`: compute the rules and plan every kind, in SQLite only.

At the largest district (1 M users, 7 M enrollments) that is ~8 M staged records,
8 M mirror records and 8 M product items before ~7 minutes of computing: more than
one 15-minute invocation can hold. So the stages go a step at a time (one staged
page, or `READ_CHUNK` rows) from a `ReadCursor` (stage, entity or kind, part, the
last key done). When the invocation's budget is spent, the working set is
checkpointed as a write's is (`apply_continue.save_checkpoint`, with the cursor) and
a continue message resumes it: the page listing starts after the last page key
(StartAfter), each DynamoDB Query after the last key read (ExclusiveStartKey).

The plan step runs in an invocation only if the time left covers `PLAN_S_PER_ROW`
per row read (the benchmark measured 13.8 to 39.2 µs at XL), or if it
is the invocation's first step; otherwise it is the next invocation's first.
Likewise an incremental run's plan on the saved working set (`plan_on_saved`:
its download, the scoped compute and plan) starts only with half the budget
left, or first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from rostersync.pipeline.apply_bounded import MirrorPosition, SeenIds, load_overlay, mirror_rows
from rostersync.pipeline.bounded_changes import UnsortedStoredItemsError
from rostersync.pipeline.changes import KINDS
from rostersync.sources.base import ENTITIES
from rostersync.staging.layout import PageRef
from rostersync.staging.pages import get_json, iter_run_pages
from rostersync.store import roster

# Rows per step of the mirror and product stages: one budget check each (tests make it small)
READ_CHUNK = 5000
# The plan step's time per row read, to decide whether it starts in this invocation: measured
# 13.8-39.2 µs at XL (bench/apply_engine.py --engine staged, docs/benchmarks.md run D)
PLAN_S_PER_ROW = 50e-6
# The share of an invocation's budget a plan on the saved working set starts with
SAVED_PLAN_SHARE = 0.5


@dataclass
class ReadCursor:
    """Where a run's reading stands (see the module's docstring)."""

    stage: str = "pages"  # pages, overlay, mirror, product, then plan
    index: int = 0  # the entity (overlay, mirror) or kind (product) being read
    part: int = 0  # mirror of a dry run: 0 the mirror, 1 the run's records it lacks
    after: str = ""  # the last page key, sourcedId or item id done
    rows: int = 0  # mirror rows and product items read (the plan step's estimate)
    revive: bool = False  # the replan of a halted run: its deletions read as active

    def go_to(self, stage: str) -> None:
        self.stage, self.index, self.part, self.after = stage, 0, 0, ""

    def plan_seconds(self) -> float:
        return self.rows * PLAN_S_PER_ROW


def read_pages(
    district_id: str, run_id: str, seen: SeenIds, cursor: ReadCursor, go_on: Callable[[], bool]
) -> bool:
    """Note the sourcedIds of each of the run's pages after the cursor's; False when `go_on()`
    said stop first (checkpoint), True when every page is noted."""
    for ref in iter_run_pages(district_id, run_id, start_after=cursor.after):
        if not go_on():
            return False
        seen.add_page(ref.entity, page_ids(ref))
        cursor.after = ref.key
    return True


def page_ids(ref: PageRef) -> set[str]:
    records = get_json(ref.key).get("records") or []
    return {str(r["sourcedId"]).strip() for r in records if isinstance(r, dict) and r.get("sourcedId")}


def read_district(
    district_id: str,
    run: dict[str, Any],
    seen: SeenIds,
    cursor: ReadCursor,
    go_on: Callable[[], bool],
) -> bool:
    """Read on from the cursor (stages overlay, mirror, product) until only planning is left
    (True, the cursor at `plan`) or `go_on()` said stop first (False: checkpoint)."""
    run_id, dry_run = run["runId"], bool(run.get("dryRun"))
    working_set = seen.working_set
    if cursor.stage == "overlay":
        while cursor.index < len(ENTITIES):
            if not go_on():
                return False
            for last in load_overlay(district_id, run_id, working_set, ENTITIES[cursor.index], cursor.after):
                cursor.after = last
                if not go_on():
                    return False
            cursor.index, cursor.after = cursor.index + 1, ""
        cursor.go_to("mirror")
    if cursor.stage == "mirror":
        complete = frozenset() if cursor.revive else frozenset(complete_entities(run))
        while cursor.index < len(ENTITIES):
            entity = ENTITIES[cursor.index]
            position = MirrorPosition(cursor.part, cursor.after)
            rows = mirror_rows(
                district_id,
                run_id,
                seen,
                entity,
                position,
                dry_run=dry_run,
                complete=complete,
                revive=cursor.revive,
            )
            try:
                while True:
                    if not go_on():
                        return False
                    pulled = list(islice(rows, READ_CHUNK))  # absent records as None
                    batch = [row for row in pulled if row is not None]
                    working_set.load(entity, batch)
                    cursor.rows += len(batch)
                    cursor.part, cursor.after = position.part, position.after
                    if len(pulled) < READ_CHUNK:
                        break
            finally:
                rows.close()  # keeps the absences it noted
            cursor.index, cursor.part, cursor.after = cursor.index + 1, 0, ""
        cursor.go_to("product")
    if cursor.stage == "product":
        while cursor.index < len(KINDS):
            kind = KINDS[cursor.index]
            items = roster.iter_product(district_id, kind, after=cursor.after)
            while True:
                if not go_on():
                    return False
                stored = list(islice(items, READ_CHUNK))
                _store(working_set.db, kind, stored, cursor.after)
                cursor.rows += len(stored)
                if stored:
                    cursor.after = stored[-1]["id"]
                if len(stored) < READ_CHUNK:
                    break
            cursor.index, cursor.after = cursor.index + 1, ""
        cursor.go_to("plan")
    return True


def complete_entities(run: dict[str, Any]) -> list[str]:
    """The entities this run read whole (a full run: all; its records the district's)."""
    return list(run.get("completeEntities", ENTITIES if run.get("mode") == "full" else []))


def _store(db: Any, kind: str, items: list[dict[str, Any]], after: str) -> None:
    """Keep product items as stored, checking the Query's id order (the merge join needs it)."""
    last = after or None
    for item in items:
        if last is not None and item["id"] <= last:
            raise UnsortedStoredItemsError(f"stored item ids out of order after {last!r}")
        last = item["id"]
    db.execute("BEGIN")
    db.executemany("INSERT INTO stored VALUES (?, ?, ?)", ((kind, i["id"], json.dumps(i)) for i in items))
    db.execute("COMMIT")
