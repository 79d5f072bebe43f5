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
from rostersync.sources.base import ENTITIES, BundleSource, Connector
from rostersync.sources.factory import NoNewBundleError, build_connector
from rostersync.staging.layout import manifest_key, page_key
from rostersync.staging.pages import put_json
from rostersync.store import runs
from rostersync.store.settings import load_last_good

logger = Logger(service="rostersync", child=True)

# Incremental runs look back a little before the watermark, so a record written
# while the last run was reading is not missed (SPEC 3).
WATERMARK_OVERLAP = timedelta(minutes=5)

ConnectorFactory = Callable[..., Connector]


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
    fetch_run(district_id, run_id, run, message, connector_factory)
    return run_id


def _since(watermark: str | None, mode: str) -> datetime | None:
    if mode != "incremental" or not watermark:
        return None
    return datetime.fromisoformat(watermark.replace("Z", "+00:00")) - WATERMARK_OVERLAP


def fetch_run(
    district_id: str,
    run_id: str,
    run: dict[str, Any],
    message: RunMessage,
    connector_factory: ConnectorFactory = build_connector,
) -> None:
    log: dict[str, Any] = {"district_id": district_id, "run_id": run_id}
    settings = load_last_good(district_id)
    if settings is None:
        runs.finish_run(district_id, run_id, "failed", message="the district has no valid settings")
        return
    doc = settings_doc(settings)
    district = runs.get_district(district_id)
    watermark = district.get("watermark")
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
        connector = connector_factory(
            source,
            credentials,
            district_id=district_id,
            message=message,
            processed_bundles=frozenset(district.get("processedBundles") or ()),
        )
        bundle = _bundle_facts(connector)
        if bundle is not None:
            # A bundle says for itself what it is: a bulk bundle is a full picture.
            mode = bundle[0]
            runs.update_run(district_id, run_id, mode=mode)
        try:
            pages = _stage_all(connector, district_id, run_id, _since(watermark, mode))
        except FilterNotSupportedError as error:
            logger.warning("source refused the incremental filter: running full", **log)
            mode = "full"
            runs.update_run(district_id, run_id, mode=mode)
            reason = f"the source refused the dateLastModified filter, so this run read everything ({error})"
            runs.add_issues(
                district_id, run_id, "WARN", [Issue(entity="run", sourcedId=run_id, reason=reason)]
            )
            pages = _stage_all(connector, district_id, run_id, None)
        finally:
            connector.close()
    except NoNewBundleError as error:
        runs.finish_run(district_id, run_id, "succeeded", message=f"nothing to do: {error}")
        return
    except SourceError as error:
        logger.warning("fetch failed", reason=str(error), **log)
        runs.finish_run(district_id, run_id, "failed", message=f"fetch failed: {error}")
        return
    except Exception as error:
        # Anything else is our fault, not the source's: the run still ends, and says so.
        logger.exception("fetch crashed", **log)
        message_text = f"fetch failed: internal error ({type(error).__name__})"
        runs.finish_run(district_id, run_id, "failed", message=message_text)
        return

    # Only entities read completely may lose records by absence (a bulk file,
    # or any entity of a full REST run).
    complete = sorted(bundle[1]) if bundle is not None else (list(ENTITIES) if mode == "full" else [])
    total = sum(pages.values())
    put_json(
        manifest_key(district_id, run_id),
        {"runId": run_id, "pages": pages, "total": total, "completeEntities": complete},
    )
    runs.update_run(district_id, run_id, completeEntities=complete)
    notes = getattr(connector, "warnings", None) or []
    if notes:
        # A bundle's own remarks (a misspelt manifest row...) go to the run's warnings.
        runs.add_issues(
            district_id,
            run_id,
            "WARN",
            [
                Issue(entity="bundle", sourcedId=str(message.checkpoint.get("bundleName", "")), reason=n)
                for n in notes
            ],
        )
    bundle_name = message.checkpoint.get("bundleName")
    if bundle is not None and bundle_name:
        runs.mark_bundle_processed(district_id, str(bundle_name))
    runs.finish_fetch(district_id, run_id, total)
    logger.info("fetch complete", pages=total, **log)
    queue_apply_when_ready(district_id, run_id)


def _bundle_facts(connector: Connector) -> tuple[str, frozenset[str]] | None:
    """(run mode, complete entities) for a bundle source; None for an API source."""
    if not isinstance(connector, BundleSource):
        return None
    return connector.run_mode(), frozenset(connector.complete_entities())


def _stage_all(connector: Connector, district_id: str, run_id: str, since: datetime | None) -> dict[str, int]:
    pages: dict[str, int] = {}
    for entity in ENTITIES:
        count = 0
        for page in connector.pages(entity, since):
            body: dict[str, Any] = {"entity": entity, "page": page.number, "records": page.records}
            if page.rejected:
                body["rejected"] = page.rejected
            put_json(page_key(district_id, run_id, entity, page.number), body)
            count += 1
        pages[entity] = count
    return pages
