"""The in-memory apply engine: the district's mirror as pydantic models, `compute_product`,
then `plan_changes` against every stored item of each kind.

Simple and fast for a small district, but O(district) in memory (1.2 GB at
50,000 users, SPEC 8's largest districts would need ~18 GB): the bounded engine
(`apply_bounded.py`) is the default; this one stays as the reference the
property tests and the benchmark compare it with (`APPLY_ENGINE=memory`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rostersync.pipeline.apply_bounded import SeenIds, revived, written_by
from rostersync.pipeline.changes import ChangePlan, plan_changes
from rostersync.pipeline.transform import needs_write
from rostersync.roster.compute import ProductState, RosterOptions, Snapshot, compute_product
from rostersync.roster.models import ENTITY_MODELS, Record
from rostersync.roster.product import Issue
from rostersync.sources.base import ENTITIES
from rostersync.store import roster, runs

SNAPSHOT_FIELDS = {
    "orgs": "orgs",
    "academicSessions": "academic_sessions",
    "classes": "classes",
    "users": "users",
    "enrollments": "enrollments",
}


@dataclass
class MemoryRunPlan:
    """A run's planned changes, with everything needed to redo them without its deletions."""

    district_id: str
    run_id: str
    snapshot: Snapshot
    versions: dict[str, dict[str, str]]
    absent: dict[str, list[str]]
    options: RosterOptions
    today: Any
    state: ProductState
    plan: ChangePlan
    reused_state: int | None = None  # the whole district is read, always

    @property
    def kinds(self) -> Mapping[str, Any]:
        return self.plan.kinds

    def counts(self) -> dict[str, dict[str, int]]:
        return self.plan.counts()

    def samples(self) -> dict[str, dict[str, list[str]]]:
        return self.plan.samples()

    def write(self, *, deletions: bool) -> int:
        return self.plan.write(self.district_id, deletions=deletions)

    def write_some(self, cursor: Any, *, run_id: str, products: bool, deletions: bool, spent: Any) -> bool:
        """All at once: the in-memory engine (a reference for tests) does not continue."""
        runs.add_issues(self.district_id, run_id, "ERR", self.errors())
        runs.add_issues(self.district_id, run_id, "WARN", self.warnings())
        if products:
            cursor.written += self.write(deletions=deletions)
        return True

    def spool_working_set(self) -> Any:
        raise NotImplementedError("the in-memory engine writes in one invocation")

    def errors(self) -> Iterator[Issue]:
        return iter(self.state.errors)

    def warnings(self) -> Iterator[Issue]:
        return iter(self.state.warnings)

    def error_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for issue in self.state.errors:
            counts[issue.entity] = counts.get(issue.entity, 0) + 1
        return counts

    def absent_ids(self) -> Iterator[tuple[str, Iterable[str]]]:
        return iter(self.absent.items())

    def without_deletions(self) -> MemoryRunPlan:
        """The plan again with this run's deletions undone (the safeguard halted it)."""
        state = compute_product(
            _undeleted(self.snapshot, self.versions, self.run_id), self.options, self.today
        )
        return MemoryRunPlan(
            self.district_id, self.run_id, self.snapshot, self.versions, {}, self.options, self.today,
            state, plan_changes(self.district_id, state),
        )  # fmt: skip

    def save_state(self) -> bool:
        return False  # nothing to save: the next run reads the district whole

    def close(self) -> None:
        pass


def plan_run_in_memory(
    district_id: str,
    run_id: str,
    *,
    dry_run: bool,
    seen: SeenIds,
    complete: Iterable[str],
    options: RosterOptions,
    today: Any,
) -> MemoryRunPlan:
    snapshot, versions = load_snapshot(district_id)
    if dry_run:
        _overlay_dry_run(district_id, run_id, snapshot, versions)
    absent = _absent_records(snapshot, seen, complete)
    state = compute_product(_without(snapshot, absent), options, today)
    return MemoryRunPlan(
        district_id,
        run_id,
        snapshot,
        versions,
        absent,
        options,
        today,
        state,
        plan_changes(district_id, state),
    )


def _undeleted(snapshot: Snapshot, versions: Mapping[str, dict[str, str]], run_id: str) -> Snapshot:
    """The snapshot with the records this run marked tobedeleted read as active, where they
    are whole enough; records deleted by an earlier run stay deleted."""
    fields: dict[str, Any] = {}
    for entity, name in SNAPSHOT_FIELDS.items():
        records = getattr(snapshot, name)
        fields[name] = {
            sid: revived(entity, rec) if written_by(versions[entity].get(sid, ""), run_id) else rec
            for sid, rec in records.items()
        }
    return Snapshot(**fields)


def _without(snapshot: Snapshot, absent: Mapping[str, list[str]]) -> Snapshot:
    if not absent:
        return snapshot
    fields = {}
    for entity, name in SNAPSHOT_FIELDS.items():
        records = getattr(snapshot, name)
        gone = set(absent.get(entity, ()))
        fields[name] = {sid: rec for sid, rec in records.items() if sid not in gone} if gone else records
    return Snapshot(**fields)


def _decode(entity: str, rows: Iterable[tuple[str, str, str]], versions: dict[str, str]) -> dict[str, Any]:
    model = ENTITY_MODELS[entity]
    records: dict[str, Record] = {}
    for sourced_id, doc, version in rows:
        try:
            records[sourced_id] = model.model_validate_json(doc)
        except ValidationError:
            # pydantic's message quotes the stored values: name the record only.
            raise RuntimeError(f"stored {entity} record {sourced_id} cannot be read") from None
        versions[sourced_id] = version
    return records


def load_snapshot(district_id: str) -> tuple[Snapshot, dict[str, dict[str, str]]]:
    """The district's mirror as models, and each record's stored version."""
    versions: dict[str, dict[str, str]] = {e: {} for e in ENTITIES}
    snapshot = Snapshot(
        **{SNAPSHOT_FIELDS[e]: _decode(e, roster.iter_mirror(district_id, e), versions[e]) for e in ENTITIES}
    )
    return snapshot, versions


def _overlay_dry_run(
    district_id: str, run_id: str, snapshot: Snapshot, versions: Mapping[str, dict[str, str]]
) -> None:
    """Lay a dry run's records over the mirror, as a real run would have written them."""
    for entity in ENTITIES:
        records = getattr(snapshot, SNAPSHOT_FIELDS[entity])
        model = ENTITY_MODELS[entity]
        for sourced_id, doc, version in roster.iter_mirror(district_id, entity, dry_run_id=run_id):
            if needs_write(version, versions[entity].get(sourced_id)):
                records[sourced_id] = model.model_validate_json(doc)


def _absent_records(snapshot: Snapshot, seen: SeenIds, complete: Iterable[str]) -> dict[str, list[str]]:
    """The records a complete read of an entity no longer contains (full runs, bulk files)."""
    absent: dict[str, list[str]] = {}
    for entity in complete:
        records = getattr(snapshot, SNAPSHOT_FIELDS[entity])
        missing = sorted(sid for sid in records if not seen.has(entity, sid))
        if missing:
            absent[entity] = missing
    return absent
