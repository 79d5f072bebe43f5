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

from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from itertools import groupby, islice

from rostersync.pipeline import apply_state
from rostersync.pipeline.apply_continue import WriteCursor, write_spool
from rostersync.pipeline.bounded_changes import (
    BoundedResult,
    SpooledKindPlan,
    plan_kind_bounded,
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

    def write_some(
        self, cursor: WriteCursor, *, run_id: str, products: bool, deletions: bool, spent: Callable[[], bool]
    ) -> bool:
        """Write from `cursor` until done (True) or `spent()` (False: checkpoint and continue)."""
        return write_spool(
            self.district_id,
            self.result.working_set,
            cursor,
            run_id=run_id,
            products=products,
            deletions=deletions,
            spent=spent,
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


def plan_on_saved(district_id: str, run_id: str, seen: SeenIds) -> BoundedRunPlan | None:
    """An incremental run built on the working set the last run saved, when it may (None:
    it may not): the records this run's pages named, as the mirror now holds them, laid over
    it, computed (in scope), and planned against the product items as the saving run left
    them. Reads in proportion to the change, so it needs no continuing (`apply_read`)."""
    working_set = seen.working_set
    saved = apply_state.open_saved(district_id, run_id, working_set.options, working_set.today)
    if saved is None:
        return None
    try:
        changed = sum(
            saved.change(entity, roster.get_mirror(district_id, entity, seen.iter_ids(entity)))
            for entity in ENTITIES
        )
        saved.compute()
        kinds = {kind: plan_saved_kind(kind, saved) for kind in KINDS}
    except BaseException:
        saved.close()
        raise
    plan = BoundedRunPlan(district_id, run_id, seen, BoundedResult(saved, kinds), dry_run=False)
    plan._opened.append(saved)
    plan.reused_state = changed
    return plan


def plan_read(district_id: str, run_id: str, seen: SeenIds, *, dry_run: bool) -> BoundedRunPlan:
    """Compute the working set that `apply_read` filled (the rows the rules see, and the
    product as stored, in table `stored`) and plan every kind against it: SQLite only."""
    working_set = seen.working_set
    working_set.compute()
    kinds = {kind: plan_kind_bounded(kind, working_set, working_set.iter_stored(kind)) for kind in KINDS}
    return BoundedRunPlan(district_id, run_id, seen, BoundedResult(working_set, kinds), dry_run=dry_run)


def load_overlay(
    district_id: str, run_id: str, working_set: WorkingSet, entity: str, after: str
) -> Iterator[str]:
    """Note a dry run's own records of `entity` (after sourcedId `after`) in table `overlay`,
    a batch at a time; yields the last sourcedId of each batch noted."""
    db = working_set.db
    rows = roster.iter_mirror(district_id, entity, dry_run_id=run_id, after=after)
    while batch := list(islice(rows, 1000)):
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR REPLACE INTO overlay(entity, sid, doc, version) VALUES (?, ?, ?, ?)",
            ((entity, sid, doc, version) for sid, doc, version in batch),
        )
        db.execute("COMMIT")
        yield batch[-1][0]


@dataclass
class MirrorPosition:
    """Where a read of one entity's rows stands: `part` 0 is the mirror (a dry run's records
    laid over it), 1 a dry run's records the mirror lacks; `after`, the last sourcedId read."""

    part: int = 0
    after: str = ""


def mirror_rows(
    district_id: str,
    run_id: str,
    seen: SeenIds,
    entity: str,
    position: MirrorPosition,
    *,
    dry_run: bool,
    complete: frozenset[str],
    revive: bool = False,
) -> Generator[MirrorRow | None, None, None]:
    """The entity's rows the rules see, from `position` on (moved as it goes): the mirror, a
    dry run's records over it, without what a complete read no longer had (noted in
    `absent`, and yielded as None, so that a reader's step counts them too: a rollover may
    skip millions), and with this run's deletions read as active when `revive`. Closing it
    part way keeps the absences it found."""
    db = seen.db
    checks_absence = entity in complete
    absent: list[tuple[str, str]] = []

    def note_absent() -> None:
        if absent:
            db.executemany("INSERT OR IGNORE INTO absent VALUES (?, ?)", absent)
            absent.clear()

    def overlaid() -> Iterator[MirrorRow]:
        if position.part == 0:
            for sid, doc, version in roster.iter_mirror(district_id, entity, after=position.after):
                position.after = sid
                if dry_run:
                    laid = db.execute(
                        "SELECT doc, version FROM overlay WHERE entity = ? AND sid = ?", (entity, sid)
                    ).fetchone()
                    if laid is not None:
                        db.execute("UPDATE overlay SET used = 1 WHERE entity = ? AND sid = ?", (entity, sid))
                        if needs_write(laid[1], version):
                            doc, version = laid
                yield sid, doc, version
            if not dry_run:
                return
            position.part, position.after = 1, ""
        # The records this dry run adds, a batch at a time (a first sync's are the district)
        while batch := db.execute(
            "SELECT sid, doc, version FROM overlay WHERE entity = ? AND used = 0 AND sid > ?"
            " ORDER BY sid LIMIT 1000",
            (entity, position.after),
        ).fetchall():
            for row in batch:
                position.after = row[0]
                yield row

    try:
        for row in overlaid():
            if checks_absence and not seen.has(entity, row[0]):
                absent.append((entity, row[0]))
                if len(absent) >= 5000:
                    note_absent()
                yield None
                continue
            yield _revived_row(entity, row, run_id) if revive else row
    finally:
        note_absent()


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
