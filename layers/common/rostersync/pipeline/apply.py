"""The apply stage: recompute the district's product state and write what changed.

Runs once per run, after every staged page is in the mirror. Deletions follow
SPEC 5: `tobedeleted` records and, on full runs, records the complete fetch no
longer contains; users are deactivated (kept), the rest removed. Before any
deletion the safeguard weighs it against `maxDeletePercent`; a dry run stops
after planning and writes nothing but its run record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from rostersync.config import get_config
from rostersync.pipeline import apply_state
from rostersync.pipeline.apply_bounded import (
    BoundedRunPlan,
    SeenIds,
    absent_ids,
    plan_on_saved,
    plan_read,
    start_working_set,
)
from rostersync.pipeline.apply_continue import (
    ApplyBudget,
    WriteCursor,
    checkpoint_key,
    delete_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_spool,
    write_state,
)
from rostersync.pipeline.apply_memory import MemoryRunPlan, plan_run_in_memory
from rostersync.pipeline.apply_read import (
    SAVED_PLAN_SHARE,
    ReadCursor,
    complete_entities,
    read_district,
    read_pages,
)
from rostersync.pipeline.changes import ChangePlan
from rostersync.pipeline.options import district_today, roster_options, settings_doc
from rostersync.pipeline.queues import send_apply_message
from rostersync.pipeline.transform import mirror_doc
from rostersync.roster.models import RecordError, normalize
from rostersync.roster.product import Issue
from rostersync.roster.working_set import WorkingSet, sweep_leftovers
from rostersync.staging.pages import get_json, iter_run_pages
from rostersync.store import roster, runs
from rostersync.store.settings import load_last_good

logger = Logger(service="rostersync", child=True)

# Rejections of orgs count against schools, of sessions against terms.
COUNT_ENTITY = {"orgs": "schools", "academicSessions": "terms"}
# The safeguard weighs deletions of these (SPEC 5: active users or classes).
GUARDED = ("users", "classes")


def apply_run(
    district_id: str,
    run_id: str,
    *,
    now: datetime | None = None,
    remaining_ms: int | None = None,
    continue_seq: int | None = None,
) -> dict[str, Any] | None:
    """Apply a run whose pages are all in, or continue its reading or writes from checkpoint
    `continue_seq` (pipeline/apply_read.py, apply_continue.py); `remaining_ms`: the
    invocation's time left."""
    log: dict[str, Any] = {"district_id": district_id, "run_id": run_id}
    budget = ApplyBudget(remaining_ms)
    # Consistent: a continue must see the checkpoint (`applyContinue`) that sent it
    run = runs.get_run(district_id, run_id, consistent=True)
    if run is None or run["status"] in runs.FINAL_STATUSES:
        logger.info("apply ignored: run finished or unknown", **log)
        return None
    settings = load_last_good(district_id)
    if settings is None:
        runs.finish_run(district_id, run_id, "failed", message="the district has no valid settings")
        return None
    now = now or runs.now_utc()
    if continue_seq is None and not runs.begin_apply(district_id, run_id):
        logger.info("apply ignored: another apply of this run is under way, or it continues", **log)
        return None
    if continue_seq is not None and not runs.claim_apply_continue(district_id, run_id, continue_seq):
        logger.info("continue message ignored", seq=continue_seq, **log)
        return None
    swept = sweep_leftovers()
    if swept:
        logger.warning("removed working sets an earlier invocation left", count=swept, **log)
    try:
        if continue_seq is not None:
            return _continue(district_id, run, settings, now, continue_seq, budget, log)
        return _apply(district_id, run, settings, now, budget, log)
    except Exception as error:
        logger.exception("apply failed", **log)
        partly = isinstance(error, PartlyAppliedError)
        cause = error.__cause__ if isinstance(error, PartlyAppliedError) else error
        kind = _failure_kind(cause or error)
        message = (
            f"applying the changes failed part-way ({kind}); the next run completes them"
            if partly
            else f"applying the changes failed ({kind}); the product was not changed"
        )
        runs.finish_run(district_id, run_id, "failed", message=message)
        raise


class Continued(dict[str, Any]):
    """What an invocation that checkpointed returns (the counts planned, if any): the run
    goes on in a new invocation."""


class PartlyAppliedError(Exception):
    """Product writes had begun when the apply failed: some changes are in, some not."""


def _failure_kind(error: BaseException) -> str:
    # The kind only: an exception's text may quote a record.
    response = getattr(error, "response", None)  # botocore's ClientError carries the AWS error code
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code) if code else type(error).__name__


def _apply(
    district_id: str,
    run: dict[str, Any],
    settings: Any,
    now: datetime,
    budget: ApplyBudget,
    log: dict[str, Any],
) -> dict[str, Any]:
    options, today = roster_options(settings), district_today(settings, now)
    working_set, seen = start_working_set(options, today)
    try:
        if get_config().apply_engine == "memory":
            return _apply_in_memory(district_id, run, settings, seen, budget, log)
        return _read(district_id, run, settings, working_set, ReadCursor(), budget, log, seq=0, halt=None)
    finally:
        working_set.close()


def _apply_in_memory(
    district_id: str,
    run: dict[str, Any],
    settings: Any,
    seen: SeenIds,
    budget: ApplyBudget,
    log: dict[str, Any],
) -> dict[str, Any]:
    """The in-memory engine (a reference for tests): everything in one invocation."""
    run_id, dry_run = run["runId"], bool(run.get("dryRun"))
    read_pages(district_id, run_id, seen, ReadCursor(), lambda: True)
    _settle_repeated(district_id, run, seen)
    plan = plan_run_in_memory(
        district_id,
        run_id,
        dry_run=dry_run,
        seen=seen,
        complete=complete_entities(run),
        options=seen.working_set.options,
        today=seen.working_set.today,
    )
    try:
        return _settle(district_id, run, settings, plan, budget, log, seq=0)
    finally:
        plan.close()


def _read(
    district_id: str,
    run: dict[str, Any],
    settings: Any,
    working_set: WorkingSet,
    cursor: ReadCursor,
    budget: ApplyBudget,
    log: dict[str, Any],
    *,
    seq: int,
    halt: dict[str, Any] | None,
) -> dict[str, Any]:
    """Read on from `cursor` (pipeline/apply_read.py), then plan and settle; or, out of
    time, checkpoint the reading and continue in a new invocation. `halt`: the replan of
    a run the safeguard halted, and why."""
    run_id, dry_run = run["runId"], bool(run.get("dryRun"))
    seen = SeenIds(working_set)
    if cursor.stage == "pages":
        if not read_pages(district_id, run_id, seen, cursor, budget.go_on):
            return _checkpoint_read(district_id, run_id, working_set, cursor, halt, seq=seq + 1)
        # Settling repeated records and an incremental run's plan on the saved working set
        # (its download, compute and plan) are one step: they start with time for them
        if budget.advanced and budget.left() < SAVED_PLAN_SHARE * budget.seconds:
            return _checkpoint_read(district_id, run_id, working_set, cursor, halt, seq=seq + 1)
        budget.advanced = True
        _settle_repeated(district_id, run, seen)
        if not dry_run and not complete_entities(run):
            saved = plan_on_saved(district_id, run_id, seen)
            if saved is not None:
                try:
                    return _settle(district_id, run, settings, saved, budget, log, seq=seq)
                finally:
                    saved.close()
        cursor.go_to("overlay" if dry_run else "mirror")
    if not read_district(district_id, run, seen, cursor, budget.go_on):
        return _checkpoint_read(district_id, run_id, working_set, cursor, halt, seq=seq + 1)
    if budget.advanced and budget.left() < cursor.plan_seconds():
        return _checkpoint_read(district_id, run_id, working_set, cursor, halt, seq=seq + 1)
    budget.advanced = True
    plan = plan_read(district_id, run_id, seen, dry_run=dry_run)
    return _settle(district_id, run, settings, plan, budget, log, seq=seq, halt=halt)


def _checkpoint_read(
    district_id: str,
    run_id: str,
    working_set: WorkingSet,
    cursor: ReadCursor,
    halt: dict[str, Any] | None,
    *,
    seq: int,
) -> dict[str, Any]:
    """Out of time before the plan: keep what was read, and read on in a new invocation."""
    key = save_checkpoint(district_id, run_id, working_set, {"read": asdict(cursor), "halt": halt})
    runs.checkpoint_apply(district_id, run_id, seq, key, writing=False)
    send_apply_message(district_id, run_id, continue_seq=seq)
    logger.info("apply reads on in a new invocation", seq=seq, stage=cursor.stage, rows=cursor.rows)
    return Continued()


class RunPlan(Protocol):
    """What an apply engine planned (`apply_bounded.BoundedRunPlan`, `apply_memory.MemoryRunPlan`)."""

    @property
    def kinds(self) -> Mapping[str, Any]: ...  # per kind: counts(), active_before, removal_sample()
    def counts(self) -> dict[str, dict[str, int]]: ...
    def samples(self) -> dict[str, dict[str, list[str]]]: ...
    def write(self, *, deletions: bool) -> int: ...
    def write_some(
        self, cursor: WriteCursor, *, run_id: str, products: bool, deletions: bool, spent: Callable[[], bool]
    ) -> bool: ...
    def spool_working_set(self) -> WorkingSet: ...
    def errors(self) -> Iterator[Issue]: ...
    def warnings(self) -> Iterator[Issue]: ...
    def error_counts(self) -> dict[str, int]: ...
    def absent_ids(self) -> Iterator[tuple[str, Iterable[str]]]: ...
    def save_state(self) -> bool: ...
    def close(self) -> None: ...

    # Built on a saved working set: how many changed mirror records were laid over it
    reused_state: int | None


def _settle(
    district_id: str,
    run: dict[str, Any],
    settings: Any,
    plan: RunPlan,
    budget: ApplyBudget,
    log: dict[str, Any],
    *,
    seq: int,
    halt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Weigh the plan's deletions, record its counts and issues, and write it (a dry run:
    preview it). `halt`: this plan is the replan, without deletions, of a halted run."""
    run_id, dry_run = run["runId"], bool(run.get("dryRun"))
    if halt is not None:
        safeguard, tripped, reused = halt["safeguard"], True, halt["reusedState"]
    else:
        safeguard = _safeguard(plan, settings_doc(settings).get("maxDeletePercent", 10))
        tripped = bool(safeguard["tripped"]) and not run.get("confirmDeletes") and not dry_run
        reused = plan.reused_state
    if tripped and halt is None:
        # Deletes nothing: the records the fetch no longer had, and those sent
        # as tobedeleted, count as still there, so no roster shrinks either;
        # every other change is applied.
        if isinstance(plan, BoundedRunPlan):
            return _replan_without_deletions(
                district_id, run, settings, plan, budget, log, safeguard, seq=seq
            )
        assert isinstance(plan, MemoryRunPlan)
        plan = plan.without_deletions()

    counts = plan.counts()
    for entity, rejected in _rejections(district_id, run_id, plan.error_counts()).items():
        counts.setdefault(COUNT_ENTITY.get(entity, entity), {})["rejected"] = rejected

    finish: dict[str, Any] = {"counts": counts, "tripped": tripped}
    if dry_run:
        finish["preview"] = plan.samples()
    else:
        # What the apply read: the whole district, or a saved working set and the records that changed
        read = {"savedState": True, "changedRecords": reused} if reused is not None else {"savedState": False}
        finish["applyRead"] = read
        if safeguard["tripped"]:
            finish["safeguard"] = safeguard | {"confirmed": not tripped}
    # The run's errors and warnings, then (not for a dry run) the product's writes
    cursor = WriteCursor()
    try:
        done = plan.write_some(
            cursor, run_id=run_id, products=not dry_run, deletions=not tripped, spent=budget.spent
        )
        if not done:
            _checkpoint(district_id, run_id, plan.spool_working_set(), cursor, finish, seq=seq + 1)
            return Continued(counts)
        if dry_run:
            return _preview(district_id, run_id, finish, log)
        return _finish(district_id, run, plan, cursor.written, finish, log)
    except PartlyAppliedError:
        raise
    except Exception as error:
        if dry_run:
            raise
        raise PartlyAppliedError from error


def _preview(district_id: str, run_id: str, finish: dict[str, Any], log: dict[str, Any]) -> dict[str, Any]:
    """A dry run's issues are recorded: it ends previewed, the product unchanged."""
    counts = finish["counts"]
    runs.finish_run(district_id, run_id, "previewed", counts=counts, preview=finish["preview"], itemWrites=0)
    logger.info("dry run previewed", **log)
    return dict(counts)


def _replan_without_deletions(
    district_id: str,
    run: dict[str, Any],
    settings: Any,
    plan: BoundedRunPlan,
    budget: ApplyBudget,
    log: dict[str, Any],
    safeguard: dict[str, Any],
    *,
    seq: int,
) -> dict[str, Any]:
    """The safeguard halted the run: plan it again with this run's deletions undone (the
    records the fetch no longer had stay, its tobedeleted records read as active), reading
    the mirror into a second working set as a full run's first is read (it may continue)."""
    first = plan.spool_working_set()
    again = WorkingSet(first.options, first.today)
    try:
        halt = {"safeguard": safeguard, "reusedState": plan.reused_state}
        cursor = ReadCursor(stage="mirror", revive=True)
        return _read(district_id, run, settings, again, cursor, budget, log, seq=seq, halt=halt)
    finally:
        again.close()


def _checkpoint(
    district_id: str,
    run_id: str,
    working_set: WorkingSet,
    cursor: WriteCursor,
    finish: dict[str, Any],
    *,
    seq: int,
) -> None:
    """Out of time with writes left: keep them, and continue in a new invocation."""
    try:
        key = save_checkpoint(district_id, run_id, working_set, write_state(cursor, finish, working_set))
        runs.checkpoint_apply(district_id, run_id, seq, key, writing=True)
        send_apply_message(district_id, run_id, continue_seq=seq)
    except Exception as error:
        raise PartlyAppliedError from error
    logger.info("apply continues in a new invocation", seq=seq, items_written=cursor.written)


def _continue(
    district_id: str,
    run: dict[str, Any],
    settings: Any,
    now: datetime,
    seq: int,
    budget: ApplyBudget,
    log: dict[str, Any],
) -> dict[str, Any]:
    """Go on from checkpoint `seq`: reading (then plan), or writing; checkpoint again, or
    finish the run."""
    key = checkpoint_key(district_id, run["runId"])  # not read back: the run item may lag
    writing = (run.get("applyContinue") or {}).get("writing", True)
    try:
        working_set, state = load_checkpoint(key, (roster_options(settings), district_today(settings, now)))
    except Exception as error:
        if writing:
            raise PartlyAppliedError from error
        raise
    try:
        if "read" in state:
            counts = _read(
                district_id,
                run,
                settings,
                working_set,
                ReadCursor(**state["read"]),
                budget,
                log,
                seq=seq,
                halt=state.get("halt"),
            )
        else:
            counts = _continue_writes(district_id, run, working_set, state, seq, budget, log)
        if not isinstance(counts, Continued):
            delete_checkpoint(key)  # the run is finished
        return counts
    finally:
        working_set.close()


def _continue_writes(
    district_id: str,
    run: dict[str, Any],
    working_set: WorkingSet,
    state: dict[str, Any],
    seq: int,
    budget: ApplyBudget,
    log: dict[str, Any],
) -> dict[str, Any]:
    """Write on from a write checkpoint: checkpoint again, or finish the run."""
    run_id, dry_run = run["runId"], bool(run.get("dryRun"))
    cursor, finish = WriteCursor(**state["cursor"]), state["finish"]
    try:
        done = write_spool(
            district_id,
            working_set,
            cursor,
            run_id=run_id,
            products=not dry_run,
            deletions=not finish["tripped"],
            spent=budget.spent,
        )
        if not done:
            _checkpoint(district_id, run_id, working_set, cursor, finish, seq=seq + 1)
            return Continued(finish["counts"])
        if dry_run:
            return _preview(district_id, run_id, finish, log)
        return _finish(
            district_id, run, ResumedPlan(district_id, run_id, working_set), cursor.written, finish, log
        )
    except PartlyAppliedError:
        raise
    except Exception as error:
        if dry_run:
            raise
        raise PartlyAppliedError from error


class ResumedPlan:
    """What finishing needs of a plan whose writes continued from a checkpoint."""

    def __init__(self, district_id: str, run_id: str, working_set: WorkingSet) -> None:
        self.district_id, self.run_id, self.working_set = district_id, run_id, working_set

    def absent_ids(self) -> Iterator[tuple[str, Iterable[str]]]:
        # A full run's plan is in the run's own working set, with the ids a complete read lacked
        return absent_ids(self.working_set)

    def save_state(self) -> bool:
        return apply_state.save(self.district_id, self.run_id, self.working_set)


def _finish(
    district_id: str, run: dict[str, Any], plan: Any, writes: int, finish: dict[str, Any], log: dict[str, Any]
) -> dict[str, Any]:
    """The writes are in: delete what the complete read no longer had, save, end the run."""
    run_id, tripped, counts = run["runId"], bool(finish["tripped"]), finish["counts"]
    if not tripped:
        # The in-memory engine's (the bounded engine's left the mirror with its writes)
        for entity, ids in plan.absent_ids():
            roster.delete_mirror(district_id, entity, ids)
    source_writes = int(run.get("sourceWrites", 0))
    fields: dict[str, Any] = {"counts": counts, "itemWrites": writes + source_writes, "productWrites": writes}
    fields["applyRead"] = finish["applyRead"]
    safeguard = finish.get("safeguard") or {"tripped": False}
    if safeguard["tripped"]:
        fields["safeguard"] = safeguard
    if tripped:
        for kind_counts in counts.values():
            if "deleted" in kind_counts:
                kind_counts["deleted"] = 0
        runs.finish_run(district_id, run_id, "halted", message=_halt_message(safeguard), **fields)
        logger.warning("run halted by the deletion safeguard", **log)
    else:
        # Before the run ends: the next run may start as soon as it has.
        fields["stateSaved"] = plan.save_state()
        runs.finish_run(district_id, run_id, "succeeded", **fields)
        logger.info("run succeeded", item_writes=writes + source_writes, **log)
    if run.get("bundleName"):
        # Applied (halted runs too: their other changes are in): the bundle is done.
        # A run that failed leaves it unprocessed, so the next run reads it again.
        runs.mark_bundle_processed(district_id, str(run["bundleName"]))
    # A halted run applied its other changes: the next incremental run starts from here.
    runs.set_watermark(district_id, run.get("fetchStartedAt") or run["startedAt"], run_id)
    return counts


def _rejections(district_id: str, run_id: str, apply_errors: Mapping[str, int]) -> dict[str, int]:
    """Rejected records per entity: the transform's (stored) and the apply's (just found)."""
    counts = runs.issue_counts(district_id, run_id, "ERR")
    for entity, count in apply_errors.items():
        counts[entity] = counts.get(entity, 0) + count
    return counts


def _halt_message(safeguard: dict[str, Any]) -> str:
    parts = [
        f"{entity}: {v['wouldDelete']} of {v['active']} active ({v['percent']}%)"
        for entity, v in safeguard["entities"].items()
        if v["tripped"]
    ]
    return (
        f"halted: the run would delete more than {safeguard['maxDeletePercent']}% ("
        + "; ".join(parts)
        + '). Other changes were applied; nothing was deleted. Force a sync with {"mode": "full", '
        '"confirmDeletes": true} to apply the deletions.'
    )


def _safeguard(plan: RunPlan | ChangePlan, max_percent: float) -> dict[str, Any]:
    entities = {}
    for kind in GUARDED:
        kind_plan = plan.kinds[kind]
        active = kind_plan.active_before
        would = kind_plan.counts()["deleted"]
        percent = round(100.0 * would / active, 2) if active else 0.0
        entities[kind] = {
            "active": active,
            "wouldDelete": would,
            "percent": percent,
            "tripped": percent > max_percent,
            "sample": kind_plan.removal_sample(),
        }
    return {
        "maxDeletePercent": max_percent,
        "tripped": any(v["tripped"] for v in entities.values()),
        "entities": entities,
    }


def _settle_repeated(district_id: str, run: dict[str, Any], seen: SeenIds) -> None:
    repeated = seen.repeated()
    if repeated:
        dry_run_id = run["runId"] if run.get("dryRun") else None
        _settle_repeated_records(district_id, run["runId"], repeated, dry_run_id=dry_run_id)


def _settle_repeated_records(
    district_id: str, run_id: str, repeated: Mapping[str, set[str]], *, dry_run_id: str | None
) -> None:
    """A record sent twice in one run: the copy with the later dateLastModified wins (then the
    higher hash), whichever page the transform saw last, so the outcome does not depend on
    page order. Rare (a source changing a record while it is read), so done here, once."""
    best: dict[str, dict[str, tuple[str, str, str]]] = {e: {} for e in repeated}
    for ref in iter_run_pages(district_id, run_id):
        wanted = repeated.get(ref.entity)
        if not wanted:
            continue
        for raw in get_json(ref.key).get("records") or []:
            sourced_id = str(raw.get("sourcedId", "")).strip() if isinstance(raw, dict) else ""
            if sourced_id not in wanted:
                continue
            try:
                copy = mirror_doc(normalize(ref.entity, raw), run_id)
            except RecordError:
                continue
            held = best[ref.entity].get(sourced_id)
            if held is None or _in_run_key(copy[2]) > _in_run_key(held[2]):
                best[ref.entity][sourced_id] = copy
    for entity, copies in best.items():
        stored = roster.mirror_versions(district_id, entity, copies, dry_run_id=dry_run_id)
        if not dry_run_id:
            stored_main = stored
        else:
            stored_main = roster.mirror_versions(district_id, entity, copies) | stored
        fixes = [copy for sid, copy in copies.items() if _settles(copy[2], stored_main.get(sid), run_id)]
        roster.write_mirror(district_id, entity, fixes, dry_run_id=dry_run_id)


def _in_run_key(version: str) -> tuple[str, str]:
    dlm, _run, digest = version.split("|")
    return dlm, digest


def _settles(best: str, stored: str | None, run_id: str) -> bool:
    if stored is None:
        return True
    dlm, _, digest = best.split("|")
    stored_dlm, stored_run, stored_digest = stored.split("|")
    if digest == stored_digest:
        return False
    if stored_run == run_id:
        return True  # another copy of this run was written last: the best copy replaces it
    return dlm >= stored_dlm  # a copy from an earlier run: this run's best wins unless older
