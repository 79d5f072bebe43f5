"""The bounded-memory apply engine (the default; SPEC 8): the district is streamed from the
mirror into a disk-backed working set (`roster/working_set.py`), computed there, and
planned against the stored product by a merge join (`bounded_changes.py`).

What `apply_memory.py` does with whole-district dicts is done here with row
filters on the mirror's stream, each answered from the working set's SQLite
file: the ids this run's pages held (`seen`, for the records a complete read no
longer has), a dry run's own records laid over the mirror (`overlay`), and for
a halted run, this run's deletions read as active again. Python holds one
batch of rows at a time; the records to remove from the mirror afterwards are
read back from the file too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date
from itertools import groupby
from typing import Any

from rostersync.pipeline import apply_state
from rostersync.pipeline.apply_continue import WriteCursor, write_spool
from rostersync.pipeline.bounded_changes import (
    BoundedResult,
    SpooledKindPlan,
    plan_bounded,
    plan_saved_kind,
)
from rostersync.pipeline.changes import KINDS
from rostersync.pipeline.transform import needs_write
from rostersync.roster.compute import RosterOptions
from rostersync.roster.models import ENTITY_MODELS, Record, normalize_active
from rostersync.roster.product import Issue
from rostersync.roster.working_set import MirrorRow, WorkingSet
from rostersync.sources.base import ENTITIES
from rostersync.store import roster

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen(entity TEXT, sid TEXT, pages INTEGER, PRIMARY KEY (entity, sid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS absent(entity TEXT, sid TEXT, PRIMARY KEY (entity, sid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS overlay(
    entity TEXT, sid TEXT, doc TEXT, version TEXT, used INTEGER DEFAULT 0, PRIMARY KEY (entity, sid)
) WITHOUT ROWID;
"""


class SeenIds:
    """The sourcedIds a run's pages held, per entity, on disk: a full run's are the district."""

    def __init__(self, working_set: WorkingSet) -> None:
        self.working_set = working_set  # its file holds these ids, and the run's other tables
        self.db = working_set.db
        self.db.executescript(_SCHEMA)

    def add_page(self, entity: str, sourced_ids: Iterable[str]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO seen VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET pages = pages + 1",
            ((entity, sid) for sid in sourced_ids),
        )
        self.db.execute("COMMIT")

    def repeated(self) -> dict[str, set[str]]:
        """The ids that came in more than one page (rare: a record changed while it was read)."""
        found: dict[str, set[str]] = {}
        for entity, sid in self.db.execute("SELECT entity, sid FROM seen WHERE pages > 1"):
            found.setdefault(entity, set()).add(sid)
        return found

    def iter_ids(self, entity: str) -> Iterator[str]:
        for (sid,) in self.db.execute("SELECT sid FROM seen WHERE entity = ? ORDER BY sid", (entity,)):
            yield sid

    def has(self, entity: str, sourced_id: str) -> bool:
        row = self.db.execute("SELECT 1 FROM seen WHERE entity = ? AND sid = ?", (entity, sourced_id))
        return row.fetchone() is not None


class BoundedRunPlan:
    """A run's planned changes, spooled in the working set; the same interface as MemoryRunPlan."""

    def __init__(
        self, district_id: str, run_id: str, seen: SeenIds, result: BoundedResult, *, dry_run: bool
    ) -> None:
        self.district_id, self.run_id, self.dry_run = district_id, run_id, dry_run
        self.seen, self.result = seen, result
        # The working sets this plan opened (a saved one, a halted run's second); the
        # run's own, holding `seen`, is its caller's to close.
        self._opened: list[WorkingSet] = []
        # Built on a saved working set: how many changed mirror records were laid over it
        self.reused_state: int | None = None

    @property
    def kinds(self) -> Mapping[str, SpooledKindPlan]:
        return self.result.kinds

    def counts(self) -> dict[str, dict[str, int]]:
        return self.result.counts()

    def samples(self) -> dict[str, dict[str, list[str]]]:
        return self.result.samples()

    def write(self, *, deletions: bool) -> int:
        return self.result.write(self.district_id, deletions=deletions)

    def write_some(self, cursor: WriteCursor, *, deletions: bool, spent: Callable[[], bool]) -> bool:
        """Write from `cursor` until done (True) or `spent()` (False: checkpoint and continue)."""
        return write_spool(
            self.district_id, self.result.working_set, cursor, deletions=deletions, spent=spent
        )

    def spool_working_set(self) -> WorkingSet:
        return self.result.working_set

    def errors(self) -> Iterator[Issue]:
        return self.result.working_set.iter_errors()

    def warnings(self) -> Iterator[Issue]:
        return self.result.working_set.iter_warnings()

    def error_counts(self) -> dict[str, int]:
        return self.result.working_set.error_counts()

    def absent_ids(self) -> Iterator[tuple[str, Iterable[str]]]:
        return absent_ids(self.seen.working_set)

    def save_state(self) -> bool:
        """After writes that all succeeded: keep the working set for the next incremental run."""
        return apply_state.save(self.district_id, self.run_id, self.result.working_set)

    def without_deletions(self) -> BoundedRunPlan:
        """The plan again with this run's deletions undone (the safeguard halted it): records
        the fetch no longer had stay, and this run's tobedeleted records read as active."""
        first = self.seen.working_set
        again = WorkingSet(first.options, first.today)
        self._opened.append(again)
        rows = _mirror_rows(
            self.district_id, self.run_id, self.seen, dry_run=self.dry_run, complete=(), revive=True
        )
        result = _plan(self.district_id, again, rows)
        replan = BoundedRunPlan(self.district_id, self.run_id, self.seen, result, dry_run=self.dry_run)
        replan._opened = self._opened
        replan.reused_state = self.reused_state  # what the plan that tripped the safeguard read
        return replan

    def close(self) -> None:
        for working_set in self._opened:
            working_set.close()


def absent_ids(working_set: WorkingSet) -> Iterator[tuple[str, Iterable[str]]]:
    """Per entity, the ids a complete read no longer had (table `absent`; none without it)."""
    db = working_set.db
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'absent'").fetchone() is None:
        return
    rows = db.execute("SELECT entity, sid FROM absent ORDER BY entity, sid")
    for entity, group in groupby(rows, key=lambda row: row[0]):
        yield entity, (sid for _, sid in group)


def start_working_set(options: RosterOptions, today: date) -> tuple[WorkingSet, SeenIds]:
    working_set = WorkingSet(options, today)
    return working_set, SeenIds(working_set)


def plan_run_bounded(
    district_id: str, run_id: str, seen: SeenIds, *, dry_run: bool, complete: Iterable[str]
) -> BoundedRunPlan:
    """Stream the mirror (with the run's overlay and absences) into the working set holding
    `seen`, and plan; an incremental run builds on the working set the last run saved, when
    it may."""
    working_set = seen.working_set
    if not dry_run and not complete:
        saved = apply_state.open_saved(district_id, run_id, working_set.options, working_set.today)
        if saved is not None:
            return _plan_on_saved(district_id, run_id, seen, saved)
    if dry_run:
        _load_overlay(district_id, run_id, working_set)
    rows = _mirror_rows(district_id, run_id, seen, dry_run=dry_run, complete=frozenset(complete))
    result = _plan(district_id, working_set, rows)
    return BoundedRunPlan(district_id, run_id, seen, result, dry_run=dry_run)


def _plan(district_id: str, working_set: WorkingSet, rows: Mapping[str, Any]) -> BoundedResult:
    """Load the filtered mirror, compute, and plan each kind against its stored items (by id)."""
    return plan_bounded(
        lambda entity: rows[entity](), lambda kind: roster.iter_product(district_id, kind), working_set
    )


def _plan_on_saved(district_id: str, run_id: str, seen: SeenIds, saved: WorkingSet) -> BoundedRunPlan:
    """Lay the records this run's pages named (as the mirror now holds them) over the saved
    working set, compute, and plan against the product items as the saving run left them."""
    changed = sum(
        saved.change(entity, roster.get_mirror(district_id, entity, seen.iter_ids(entity)))
        for entity in ENTITIES
    )
    saved.compute()
    kinds = {kind: plan_saved_kind(kind, saved) for kind in KINDS}
    plan = BoundedRunPlan(district_id, run_id, seen, BoundedResult(saved, kinds), dry_run=False)
    plan._opened.append(saved)
    plan.reused_state = changed
    return plan


def _load_overlay(district_id: str, run_id: str, working_set: WorkingSet) -> None:
    db = working_set.db
    for entity in ENTITIES:
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR REPLACE INTO overlay(entity, sid, doc, version) VALUES (?, ?, ?, ?)",
            (
                (entity, sid, doc, version)
                for sid, doc, version in roster.iter_mirror(district_id, entity, dry_run_id=run_id)
            ),
        )
        db.execute("COMMIT")


def _mirror_rows(
    district_id: str,
    run_id: str,
    seen: SeenIds,
    *,
    dry_run: bool,
    complete: frozenset[str] | tuple[()],
    revive: bool = False,
) -> dict[str, Any]:
    """Per entity, a callable giving the rows the rules see: the mirror, a dry run's records
    over it, without what a complete read no longer had (noted in `absent`), and with this
    run's deletions read as active when `revive`."""
    db = seen.db

    def rows(entity: str) -> Iterator[MirrorRow]:
        checks_absence = entity in complete
        absent: list[tuple[str, str]] = []
        for row in _overlaid(entity):
            sid = row[0]
            if checks_absence and not seen.has(entity, sid):
                absent.append((entity, sid))
                if len(absent) >= 5000:
                    _note_absent(absent)
                continue
            yield _revived_row(entity, row, run_id) if revive else row
        _note_absent(absent)

    def _overlaid(entity: str) -> Iterator[MirrorRow]:
        if not dry_run:
            yield from roster.iter_mirror(district_id, entity)
            return
        for sid, doc, version in roster.iter_mirror(district_id, entity):
            laid = db.execute(
                "SELECT doc, version FROM overlay WHERE entity = ? AND sid = ?", (entity, sid)
            ).fetchone()
            if laid is not None:
                db.execute("UPDATE overlay SET used = 1 WHERE entity = ? AND sid = ?", (entity, sid))
                if needs_write(laid[1], version):
                    yield sid, laid[0], laid[1]
                    continue
            yield sid, doc, version
        # The records this dry run adds, a batch at a time (a first sync's are the district)
        after = ""
        while batch := db.execute(
            "SELECT sid, doc, version FROM overlay WHERE entity = ? AND used = 0 AND sid > ?"
            " ORDER BY sid LIMIT 1000",
            (entity, after),
        ).fetchall():
            yield from batch
            after = batch[-1][0]

    def _note_absent(absent: list[tuple[str, str]]) -> None:
        if absent:
            db.executemany("INSERT OR IGNORE INTO absent VALUES (?, ?)", absent)
            absent.clear()

    return {entity: (lambda entity=entity: rows(entity)) for entity in ENTITIES}


def _revived_row(entity: str, row: MirrorRow, run_id: str) -> MirrorRow:
    sid, doc, version = row
    if not written_by(version, run_id):
        return row
    record = ENTITY_MODELS[entity].model_validate_json(doc)
    return sid, revived(entity, record), version


def written_by(version: str, run_id: str) -> bool:
    parts = version.split("|")
    return len(parts) == 3 and parts[1] == run_id


def revived(entity: str, record: Record) -> Record:
    """A record this run sent as tobedeleted, read as active (a halted run deletes nothing)."""
    if not record.deleted:
        return record
    try:
        return normalize_active(entity, record)
    except ValueError:
        return record  # a bare deletion (only an id): nothing to keep it by
