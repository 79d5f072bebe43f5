"""The apply stage: recompute the district's product state and write what changed.

Runs once per run, after every staged page is in the mirror. Deletions follow
SPEC 5: `tobedeleted` records and, on full runs, records the complete fetch no
longer contains; users are deactivated (kept), the rest removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from rostersync.pipeline.options import district_today, roster_options
from rostersync.roster.compute import ProductState, Snapshot, compute_product
from rostersync.roster.models import ENTITY_MODELS
from rostersync.sources.base import ENTITIES
from rostersync.staging.layout import PageRef
from rostersync.staging.pages import get_json, iter_run_pages
from rostersync.store import roster, runs
from rostersync.store.settings import load_last_good

logger = Logger(service="rostersync", child=True)

SNAPSHOT_FIELDS = {
    "orgs": "orgs",
    "academicSessions": "academic_sessions",
    "classes": "classes",
    "users": "users",
    "enrollments": "enrollments",
}
# Rejections of orgs count against schools, of sessions against terms.
COUNT_ENTITY = {
    "orgs": "schools",
    "academicSessions": "terms",
    "classes": "classes",
    "users": "users",
    "enrollments": "enrollments",
    "run": "run",
}


def apply_run(district_id: str, run_id: str, *, now: datetime | None = None) -> dict[str, Any] | None:
    log: dict[str, Any] = {"district_id": district_id, "run_id": run_id}
    run = runs.get_run(district_id, run_id)
    if run is None or run["status"] in runs.FINAL_STATUSES:
        logger.info("apply ignored: run finished or unknown", **log)
        return None
    settings = load_last_good(district_id)
    if settings is None:
        runs.finish_run(district_id, run_id, "failed", message="the district has no valid settings")
        return None
    now = now or runs.now_utc()
    if not runs.begin_apply(district_id, run_id):
        logger.info("apply ignored: another apply of this run is under way", **log)
        return None
    try:
        if run.get("mode") == "full":
            _forget_absent_records(district_id, run_id)
        snapshot = load_snapshot(district_id)
        state = compute_product(snapshot, roster_options(settings), district_today(settings, now))
        counts, writes = write_product_state(district_id, state)
        runs.add_issues(district_id, run_id, "ERR", state.errors)
        runs.add_issues(district_id, run_id, "WARN", state.warnings)
        for entity, rejected in runs.issue_counts(district_id, run_id, "ERR").items():
            bucket = counts.setdefault(COUNT_ENTITY.get(entity, entity), {"rejected": 0})
            bucket["rejected"] = bucket.get("rejected", 0) + rejected
    except Exception:
        logger.exception("apply failed", **log)
        runs.finish_run(
            district_id, run_id, "failed", message="applying the changes failed; nothing was deleted"
        )
        raise
    runs.finish_run(district_id, run_id, "succeeded", counts=counts, itemWrites=writes)
    runs.set_watermark(district_id, run.get("fetchStartedAt") or run["startedAt"], run_id)
    logger.info("run succeeded", item_writes=writes, **log)
    return counts


def _decode(entity: str, docs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    model = ENTITY_MODELS[entity]
    return {sid: model.model_validate_json(doc) for sid, doc in docs}


def load_snapshot(district_id: str) -> Snapshot:
    return Snapshot(**{SNAPSHOT_FIELDS[e]: _decode(e, roster.iter_mirror(district_id, e)) for e in ENTITIES})


def _forget_absent_records(district_id: str, run_id: str) -> None:
    """On a full run, a record the complete fetch did not contain is gone from the source."""
    seen: dict[str, set[str]] = {e: set() for e in ENTITIES}
    for ref in iter_run_pages(district_id, run_id):
        seen[ref.entity].update(_page_ids(ref))
    for entity in ENTITIES:
        absent = [sid for sid, _ in roster.iter_mirror(district_id, entity) if sid not in seen[entity]]
        if absent:
            roster.delete_mirror(district_id, entity, absent)


def _page_ids(ref: PageRef) -> set[str]:
    records = get_json(ref.key).get("records") or []
    return {str(r["sourcedId"]).strip() for r in records if isinstance(r, dict) and r.get("sourcedId")}


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def write_product_state(district_id: str, state: ProductState) -> tuple[dict[str, dict[str, int]], int]:
    counts = runs.empty_counts()
    writes = 0
    for kind in ("schools", "classes", "users", "enrollments"):
        computed: Mapping[str, BaseModel] = getattr(state, kind)
        kind_counts, kind_writes = _sync_kind(district_id, kind, computed)
        counts[kind].update(kind_counts)
        writes += kind_writes
    return counts, writes


def _sync_kind(district_id: str, kind: str, computed: Mapping[str, BaseModel]) -> tuple[dict[str, int], int]:
    existing = {item["id"]: item for item in roster.iter_product(district_id, kind)}
    counts = {"created": 0, "updated": 0, "deleted": 0, "unchanged": 0}
    to_write: list[dict[str, Any]] = []
    for item_id, model in computed.items():
        doc = _dump(model)
        old = existing.pop(item_id, None)
        if old is None:
            counts["created"] += 1
            to_write.append(doc)
        elif old != doc:
            counts["updated"] += 1
            to_write.append(doc)
        else:
            counts["unchanged"] += 1
    to_delete: list[str] = []
    for item_id, old in existing.items():
        if kind == "users":
            # Users are kept, inactive, so their history returns with them.
            if old.get("status") != "inactive":
                counts["deleted"] += 1
                to_write.append({**old, "status": "inactive"})
            else:
                counts["unchanged"] += 1
        else:
            counts["deleted"] += 1
            to_delete.append(item_id)
    writes = roster.write_product(district_id, kind, to_write) + roster.delete_product(
        district_id, kind, to_delete
    )
    return counts, writes
