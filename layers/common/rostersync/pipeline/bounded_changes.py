"""`changes.plan_kind` in bounded memory: a merge join of two id-ordered streams.

The computed items come from a `WorkingSet` in id order; the stored ones from
a DynamoDB Query of the kind's partition, which answers in `sk` (= id) order.
Walking both at once gives every create, update, unchanged item and removal
with one item of each side in memory. The writes are spooled to the working
set's SQLite file, so the safeguard can weigh the deletions before anything is
written; only counts and the first samples stay in memory.

The outcome (lists, their order, counts, samples, active_before) is exactly
`plan_kind`'s, proven by `tests/unit/test_working_set.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rostersync.pipeline.changes import KINDS, SAMPLE_SIZE
from rostersync.roster.working_set import WorkingSet

# Spool phases, in plan_kind's list order: its updates list holds the computed
# items' updates first, then the stored-only users whose inactive form changed.
_MERGE, _LEFTOVER = 0, 1


class UnsortedStoredItemsError(ValueError):
    """The stored items did not come in strictly increasing id order: no merge join."""


@dataclass
class SpooledKindPlan:
    kind: str
    working_set: WorkingSet
    created: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    active_before: int = 0
    _samples: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "created": self.created,
            "updated": self.updated,
            "deleted": self.removed,
            "unchanged": self.unchanged,
            "rejected": 0,
        }

    def samples(self) -> dict[str, list[str]]:
        updated = self._samples.get("update0", []) + self._samples.get("update1", [])
        return {
            "created": list(self._samples.get("create", [])),
            "updated": updated[:SAMPLE_SIZE],
            "deleted": list(self._samples.get("removal", [])),
        }

    def removal_sample(self) -> list[str]:
        """The first removal ids (removals come in id order, so these are the lowest)."""
        return list(self._samples.get("removal", []))

    def _note(self, action: str, item_id: str) -> None:
        sample = self._samples.setdefault(action, [])
        if len(sample) < SAMPLE_SIZE:
            sample.append(item_id)

    def _iter(self, action: str) -> Iterator[Any]:
        rows = self.working_set.db.execute(
            "SELECT doc FROM plan WHERE kind = ? AND action = ? ORDER BY phase, seq", (self.kind, action)
        )
        for (doc,) in rows:
            yield json.loads(doc)

    def iter_creates(self) -> Iterator[dict[str, Any]]:
        return self._iter("create")

    def iter_updates(self) -> Iterator[dict[str, Any]]:
        return self._iter("update")

    def iter_removals(self) -> Iterator[Any]:
        """Users: the inactive form to write; other kinds: the id to delete."""
        return self._iter("removal")

    def write(self, district_id: str, *, deletions: bool) -> int:
        from itertools import chain

        from rostersync.store import roster

        writes: Iterable[dict[str, Any]] = chain(self.iter_creates(), self.iter_updates())
        deletes: Iterable[str] = ()
        if deletions:
            if self.kind == "users":
                writes = chain(writes, self.iter_removals())
            else:
                deletes = self.iter_removals()
        return roster.write_product(district_id, self.kind, writes) + roster.delete_product(
            district_id, self.kind, deletes
        )


def _is_active(kind: str, item: Mapping[str, Any]) -> bool:
    return item.get("status") != "inactive" if kind == "users" else True


def _ordered(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    last: str | None = None
    for item in items:
        item_id = item["id"]
        if last is not None and item_id <= last:
            raise UnsortedStoredItemsError(f"stored item ids out of order after {last!r}")
        last = item_id
        yield item


def plan_kind_bounded(
    kind: str,
    working_set: WorkingSet,
    stored: Iterable[dict[str, Any]],
    computed: Iterator[dict[str, Any]] | None = None,
) -> SpooledKindPlan:
    """`changes.plan_kind` over the working set's items (or `computed`, some of them) and the
    stored items, both in id order."""
    db = working_set.db
    db.execute(
        "CREATE TABLE IF NOT EXISTS plan(kind TEXT, action TEXT, phase INTEGER, seq INTEGER, id TEXT, doc TEXT)"
    )
    plan = SpooledKindPlan(kind, working_set)
    spool: list[tuple[Any, ...]] = []
    seq = 0

    after: list[tuple[str, str, str]] = []  # the item as stored once this plan is written

    def put(action: str, phase: int, item_id: str, doc: Any) -> None:
        nonlocal seq
        seq += 1
        spool.append((kind, action, phase, seq, item_id, json.dumps(doc)))
        if len(spool) >= 5000:
            db.executemany("INSERT INTO plan VALUES (?, ?, ?, ?, ?, ?)", spool)
            spool.clear()

    def stays(item_id: str, doc: dict[str, Any]) -> None:
        after.append((kind, item_id, json.dumps(doc)))
        if len(after) >= 5000:
            db.executemany("INSERT INTO next_stored VALUES (?, ?, ?)", after)
            after.clear()

    def computed_only(doc: dict[str, Any]) -> None:
        stays(doc["id"], doc)
        plan.created += 1
        plan._note("create", doc["id"])
        put("create", _MERGE, doc["id"], doc)

    def both(doc: dict[str, Any], old: dict[str, Any]) -> None:
        stays(doc["id"], doc)
        if old != doc:
            plan.updated += 1
            plan._note("update0", doc["id"])
            put("update", _MERGE, doc["id"], doc)
        else:
            plan.unchanged += 1

    def stored_only(old: dict[str, Any]) -> None:
        item_id = old["id"]
        if kind != "users":
            plan.removed += 1
            plan._note("removal", item_id)
            put("removal", _LEFTOVER, item_id, item_id)
            return
        kept = {**old, "status": "inactive"}
        # One product user per email: a kept inactive user gives up an email now held by another.
        if old.get("email") is not None and working_set.has_user_email(old.get("email")):
            kept["email"] = ""
        stays(item_id, kept)
        if old.get("status") != "inactive":
            plan.removed += 1
            plan._note("removal", item_id)
            put("removal", _LEFTOVER, item_id, kept)
        elif kept != old:
            plan.updated += 1
            plan._note("update1", item_id)
            put("update", _LEFTOVER, item_id, kept)
        else:
            plan.unchanged += 1

    db.execute("BEGIN")
    computed = working_set.iter_items(kind) if computed is None else computed
    existing = _ordered(stored)
    doc = next(computed, None)
    old = next(existing, None)
    while doc is not None or old is not None:
        if old is None or (doc is not None and doc["id"] < old["id"]):
            assert doc is not None
            computed_only(doc)
            doc = next(computed, None)
        elif doc is None or old["id"] < doc["id"]:
            plan.active_before += _is_active(kind, old)
            stored_only(old)
            old = next(existing, None)
        else:
            plan.active_before += _is_active(kind, old)
            both(doc, old)
            doc, old = next(computed, None), next(existing, None)
    db.executemany("INSERT INTO plan VALUES (?, ?, ?, ?, ?, ?)", spool)
    db.executemany("INSERT INTO next_stored VALUES (?, ?, ?)", after)
    db.execute("COMMIT")
    return plan


def plan_saved_kind(kind: str, working_set: WorkingSet) -> SpooledKindPlan:
    """A kind planned on a saved working set, against the items as the run that saved it left
    them stored. Scoped (`roster/scope.py`): only the items the changed records touched are
    compared; every other stored item is the computed one, unchanged, and is counted so."""
    if not working_set.scoped or kind == "schools":
        return plan_kind_bounded(kind, working_set, working_set.iter_stored(kind))
    plan = plan_kind_bounded(
        kind,
        working_set,
        working_set.iter_stored(kind, dirty=True),
        computed=working_set.iter_items(kind, dirty=True),
    )
    db = working_set.db
    untouched = "FROM stored s WHERE s.kind = ? AND NOT EXISTS (SELECT 1 FROM dirty d WHERE d.kind = s.kind AND d.id = s.id)"
    (count,) = db.execute(f"SELECT COUNT(*) {untouched}", (kind,)).fetchone()
    plan.unchanged += count
    if kind == "users":
        (count,) = db.execute(
            f"SELECT COUNT(*) {untouched} AND json_extract(s.doc, '$.status') IS NOT 'inactive'", (kind,)
        ).fetchone()
    plan.active_before += count
    return plan


@dataclass
class BoundedResult:
    working_set: WorkingSet
    kinds: dict[str, SpooledKindPlan]

    def counts(self) -> dict[str, dict[str, int]]:
        return {kind: plan.counts() for kind, plan in self.kinds.items()}

    def samples(self) -> dict[str, dict[str, list[str]]]:
        return {kind: plan.samples() for kind, plan in self.kinds.items()}

    def write(self, district_id: str, *, deletions: bool) -> int:
        return sum(plan.write(district_id, deletions=deletions) for plan in self.kinds.values())


def plan_bounded(
    mirror: Mapping[str, Iterable[tuple[str, str, str]]] | Callable[[str], Iterable[tuple[str, str, str]]],
    stored: Callable[[str], Iterable[dict[str, Any]]],
    working_set: WorkingSet,
) -> BoundedResult:
    """Load the mirror (per entity), compute, and plan every kind against `stored(kind)`.

    `mirror` and `stored` are called or read one entity / kind at a time, so each may be a
    lazy DynamoDB Query (`store.roster.iter_mirror`, `store.roster.iter_product`).
    """
    from rostersync.sources.base import ENTITIES

    for entity in ENTITIES:
        rows = mirror(entity) if callable(mirror) else mirror.get(entity, ())
        working_set.load(entity, rows)
    working_set.compute()
    return BoundedResult(
        working_set, {kind: plan_kind_bounded(kind, working_set, stored(kind)) for kind in KINDS}
    )
