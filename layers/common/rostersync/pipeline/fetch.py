"""The fetch stage: pull the district's source page by page and stage every page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from rostersync.errors import FilterNotSupportedError, RunActiveError, SourceError
from rostersync.pipeline.credentials import load_credentials
from rostersync.pipeline.options import settings_doc
from rostersync.pipeline.queues import RunMessage
from rostersync.pipeline.transform import queue_apply_when_ready
from rostersync.roster.product import Issue
from rostersync.sources.base import ENTITIES, Connector
from rostersync.sources.factory import build_connector
from rostersync.staging.layout import manifest_key, page_key
from rostersync.staging.pages import put_json
from rostersync.store import runs
from rostersync.store.settings import load_last_good

logger = Logger(service="rostersync", child=True)

# Incremental runs look back a little before the watermark, so a record written
# while the last run was reading is not missed (SPEC 3).
WATERMARK_OVERLAP = timedelta(minutes=5)

ConnectorFactory = Callable[[dict[str, Any], dict[str, Any]], Connector]


def handle_run_message(
    message: RunMessage, *, connector_factory: ConnectorFactory = build_connector
) -> str | None:
    """Start (or continue) a run's fetch. Returns the run id, or None when nothing was started."""
    district_id = message.districtId
    run_id = message.runId
    if run_id is None:
        try:
            run_id = runs.start_run(
                district_id,
                trigger=message.trigger,
                mode=message.mode,
                confirm_deletes=message.confirmDeletes,
                dry_run=message.dryRun,
            )["runId"]
        except RunActiveError as error:
            logger.info(
                "run not started: another run is active", district_id=district_id, active_run_id=error.run_id
            )
            return None
    run = runs.get_run(district_id, run_id)
    if run is None or run["status"] != "queued":
        # SQS delivers at least once: a start seen twice must not fetch twice.
        logger.info(
            "run message ignored", district_id=district_id, run_id=run_id, status=run and run["status"]
        )
        return None
    fetch_run(district_id, run_id, run, connector_factory)
    return run_id


def _since(watermark: str | None, mode: str) -> datetime | None:
    if mode != "incremental" or not watermark:
        return None
    return datetime.fromisoformat(watermark.replace("Z", "+00:00")) - WATERMARK_OVERLAP


def fetch_run(
    district_id: str, run_id: str, run: dict[str, Any], connector_factory: ConnectorFactory
) -> None:
    log: dict[str, Any] = {"district_id": district_id, "run_id": run_id}
    settings = load_last_good(district_id)
    if settings is None:
        runs.finish_run(district_id, run_id, "failed", message="the district has no valid settings")
        return
    doc = settings_doc(settings)
    watermark = runs.get_district(district_id).get("watermark")
    mode = run.get("mode") or doc.get("syncMode", "incremental")
    if not watermark:
        mode = "full"  # the first run of a district is always full
    started = runs.now_utc()
    runs.update_run(district_id, run_id, status="running", mode=mode, fetchStartedAt=runs.iso(started))
    logger.info("fetch started", mode=mode, **log)

    try:
        source = doc["source"]
        credentials = (
            load_credentials(source["credentialsParameter"]) if source.get("credentialsParameter") else {}
        )
        connector = connector_factory(source, credentials)
        try:
            pages = _stage_all(connector, district_id, run_id, _since(watermark, mode))
        except FilterNotSupportedError as error:
            logger.warning("source refused the incremental filter: running full", **log)
            runs.update_run(district_id, run_id, mode="full")
            reason = f"the source refused the dateLastModified filter, so this run read everything ({error})"
            runs.add_issues(
                district_id, run_id, "WARN", [Issue(entity="run", sourcedId=run_id, reason=reason)]
            )
            pages = _stage_all(connector, district_id, run_id, None)
        finally:
            connector.close()
    except SourceError as error:
        logger.warning("fetch failed", reason=str(error), **log)
        runs.finish_run(district_id, run_id, "failed", message=f"fetch failed: {error}")
        return
    except Exception as error:
        # Anything else is our fault, not the source's: the run still ends, and says so.
        logger.exception("fetch crashed", **log)
        runs.finish_run(
            district_id, run_id, "failed", message=f"fetch failed: internal error ({type(error).__name__})"
        )
        return

    total = sum(pages.values())
    put_json(manifest_key(district_id, run_id), {"runId": run_id, "pages": pages, "total": total})
    runs.finish_fetch(district_id, run_id, total)
    logger.info("fetch complete", pages=total, **log)
    queue_apply_when_ready(district_id, run_id)


def _stage_all(connector: Connector, district_id: str, run_id: str, since: datetime | None) -> dict[str, int]:
    pages: dict[str, int] = {}
    for entity in ENTITIES:
        count = 0
        for page in connector.pages(entity, since):
            put_json(
                page_key(district_id, run_id, entity, page.number),
                {"entity": entity, "page": page.number, "records": page.records},
            )
            count += 1
        pages[entity] = count
    return pages
