"""The fetch stage: pull the district's source page by page and stage every page.

A fetch that would outlive its Lambda invocation checkpoints and continues in
a new one (SPEC 8): between two pages it compares the time left in its budget
with the slowest page so far, and when the next page might not fit it saves a
checkpoint (the entity, where its next page starts, the pages staged so far,
the run's `since` and mode) and sends a `continue` message to RunQueue. The
invocation that takes it resumes exactly there. Run record fields (see
`store.runs.claim_fetch_continue`) make sure that each checkpoint is continued
by one invocation only, however often SQS delivers its message.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from rostersync.config import get_config
from rostersync.errors import FilterNotSupportedError, RunActiveError, SourceError
from rostersync.pipeline.credentials import load_credentials
from rostersync.pipeline.options import settings_doc
from rostersync.pipeline.queues import RunMessage, send_run_message
from rostersync.pipeline.transform import queue_apply_when_ready
from rostersync.roster.product import Issue
from rostersync.sources.base import ENTITIES, BundleSource, Connector, Entity, Position
from rostersync.sources.factory import NoNewBundleError, build_connector
from rostersync.staging.layout import manifest_key, page_key
from rostersync.staging.pages import put_json
from rostersync.store import runs
from rostersync.store.settings import load_last_good

logger = Logger(service="rostersync", child=True)

# Incremental runs look back a little before the watermark, so a record written
# while the last run was reading is not missed (SPEC 3).
WATERMARK_OVERLAP = timedelta(minutes=5)
# An invocation without a Lambda context (a script) may run as long as Lambda allows.
LAMBDA_MAX_S = 900.0
# The claim of an invocation outlives its deadline by this much, for clock skew.
LEASE_SLACK = timedelta(seconds=10)

ConnectorFactory = Callable[..., Connector]


@dataclass
class FetchBudget:
    """How long this invocation may fetch, and until when its claim on the run holds."""

    seconds: float
    lease_until: datetime
    clock: Callable[[], float] = time.monotonic
    _deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self._deadline = self.clock() + self.seconds

    @classmethod
    def for_invocation(cls, remaining_ms: int | None) -> FetchBudget:
        """The budget of an invocation with `remaining_ms` left (None: a full Lambda's).

        It keeps `fetch_time_reserve_s` (60 s) for checkpointing and the
        unforeseen, or a quarter of the time for a very short invocation, and
        never more than `fetch_time_budget_s` when that is set.
        """
        config = get_config()
        remaining = LAMBDA_MAX_S if remaining_ms is None else max(0.0, remaining_ms / 1000)
        seconds = remaining - min(float(config.fetch_time_reserve_s), remaining / 4)
        if config.fetch_time_budget_s is not None:
            seconds = min(seconds, config.fetch_time_budget_s)
        lease = runs.now_utc() + timedelta(seconds=remaining) + LEASE_SLACK
        return cls(seconds=max(0.0, seconds), lease_until=lease)

    def left(self) -> float:
        return self._deadline - self.clock()


@dataclass
class FetchState:
    """Where a run's fetch stands; a checkpoint is this, as JSON, plus the source's own keys."""

    seq: int
    mode: str
    since: datetime | None
    entity: Entity = ENTITIES[0]
    position: Position | None = None
    pages: dict[str, int] = field(default_factory=dict)

    def checkpoint(self, base: dict[str, Any]) -> dict[str, Any]:
        return {
            **base,  # bundleKey, bundleName, pushId: the source of this run
            "seq": self.seq,
            "mode": self.mode,
            "since": self.since.isoformat() if self.since else None,
            "entity": self.entity,
            "position": self.position,
            "pages": dict(self.pages),
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> FetchState:
        since = checkpoint.get("since")
        entity = checkpoint.get("entity") or ENTITIES[0]
        if entity not in ENTITIES:
            raise SourceError(f"checkpoint names an unknown entity {str(entity)[:40]!r}")
        return cls(
            seq=int(checkpoint["seq"]),
            mode=str(checkpoint.get("mode") or "full"),
            since=datetime.fromisoformat(since) if since else None,
            entity=entity,
            position=checkpoint.get("position"),
            pages={str(k): int(v) for k, v in (checkpoint.get("pages") or {}).items()},
        )


_SOURCE_KEYS = ("bundleKey", "bundleName", "pushId")


def handle_run_message(
    message: RunMessage,
    *,
    connector_factory: ConnectorFactory = build_connector,
    budget: FetchBudget | None = None,
) -> str | None:
    """Start or continue a run's fetch. Returns the run id, or None when nothing was done."""
    budget = budget or FetchBudget.for_invocation(None)
    district_id = message.districtId
    run_id = message.runId
    token = secrets.token_hex(8)
    if message.type == "continue":
        seq = message.checkpoint.get("seq")
        if (
            run_id is None
            or not isinstance(seq, int)
            or not runs.claim_fetch_continue(
                district_id, run_id, seq, token=token, lease_until=budget.lease_until
            )
        ):
            # Delivered twice, or stale (a later checkpoint exists, or the run ended).
            logger.info("continue message ignored", district_id=district_id, run_id=run_id, seq=seq)
            return None
        fetch_run(district_id, run_id, message, connector_factory, budget=budget, token=token)
        return run_id
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
    started = runs.now_utc()
    if not runs.claim_fetch_start(
        district_id, run_id, token=token, lease_until=budget.lease_until, fetch_started_at=runs.iso(started)
    ):
        # SQS delivers at least once: a start seen twice must not fetch twice.
        run = runs.get_run(district_id, run_id)
        logger.info(
            "run message ignored", district_id=district_id, run_id=run_id, status=run and run["status"]
        )
        return None
    fetch_run(district_id, run_id, message, connector_factory, budget=budget, token=token)
    return run_id


def _since(watermark: str | None, mode: str) -> datetime | None:
    if mode != "incremental" or not watermark:
        return None
    return datetime.fromisoformat(watermark.replace("Z", "+00:00")) - WATERMARK_OVERLAP


def fetch_run(
    district_id: str,
    run_id: str,
    message: RunMessage,
    connector_factory: ConnectorFactory = build_connector,
    *,
    budget: FetchBudget,
    token: str,
) -> None:
    """Stage pages until the source is read or the budget is spent (then checkpoint and continue)."""
    log: dict[str, Any] = {"district_id": district_id, "run_id": run_id}
    settings = load_last_good(district_id)
    if settings is None:
        runs.finish_run(district_id, run_id, "failed", message="the district has no valid settings")
        return
    doc = settings_doc(settings)
    district = runs.get_district(district_id)
    resuming = message.type == "continue"
    if resuming:
        logger.info("fetch continued", seq=message.checkpoint.get("seq"), **log)
    else:
        run = runs.get_run(district_id, run_id) or {}
        watermark = district.get("watermark")
        mode = run.get("mode") or doc.get("syncMode", "incremental")
        if not watermark:
            mode = "full"  # the first run of a district is always full
        runs.update_run(district_id, run_id, mode=mode)
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
        try:
            bundle = _bundle_facts(connector)
            if resuming:
                state = FetchState.from_checkpoint(message.checkpoint)
            else:
                if bundle is not None:
                    # A bundle says for itself what it is: a bulk bundle is a full picture.
                    mode = bundle[0]
                    runs.update_run(district_id, run_id, mode=mode)
                state = FetchState(seq=0, mode=mode, since=_since(watermark, mode))
            try:
                finished = _stage(connector, district_id, run_id, state, budget)
            except FilterNotSupportedError as error:
                logger.warning("source refused the incremental filter: running full", **log)
                state = FetchState(seq=state.seq, mode="full", since=None)
                runs.update_run(district_id, run_id, mode="full")
                reason = (
                    f"the source refused the dateLastModified filter, so this run read everything ({error})"
                )
                runs.add_issues(
                    district_id, run_id, "WARN", [Issue(entity="run", sourcedId=run_id, reason=reason)]
                )
                finished = _stage(connector, district_id, run_id, state, budget)
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

    _record_warnings(connector, district_id, run_id, message)
    if not finished:
        _continue_later(district_id, run_id, message, state, token)
        return
    # Only entities read completely may lose records by absence (a bulk file,
    # or any entity of a full REST run).
    complete = sorted(bundle[1]) if bundle is not None else (list(ENTITIES) if state.mode == "full" else [])
    pages = {entity: state.pages.get(entity, 0) for entity in ENTITIES}
    total = sum(pages.values())
    put_json(
        manifest_key(district_id, run_id),
        {"runId": run_id, "pages": pages, "total": total, "completeEntities": complete},
    )
    bundle_name = message.checkpoint.get("bundleName")
    # The bundle counts as processed only once its run has applied it (apply marks it).
    extra = {"bundleName": str(bundle_name)} if bundle is not None and bundle_name else {}
    runs.update_run(district_id, run_id, completeEntities=complete, **extra)
    runs.finish_fetch(district_id, run_id, total)
    logger.info("fetch complete", pages=total, invocations=state.seq + 1, **log)
    queue_apply_when_ready(district_id, run_id)


def _record_warnings(connector: Connector, district_id: str, run_id: str, message: RunMessage) -> None:
    notes = getattr(connector, "warnings", None) or []
    if notes:
        # A bundle's own remarks (a misspelt manifest row...) go to the run's warnings;
        # keyed by their text, so a re-opened bundle repeating them adds nothing.
        name = str(message.checkpoint.get("bundleName", ""))
        runs.add_issues(
            district_id, run_id, "WARN", [Issue(entity="bundle", sourcedId=name, reason=n) for n in notes]
        )


def _continue_later(
    district_id: str, run_id: str, message: RunMessage, state: FetchState, token: str
) -> None:
    state.seq += 1
    base = {key: message.checkpoint[key] for key in _SOURCE_KEYS if key in message.checkpoint}
    checkpoint = state.checkpoint(base)
    log: dict[str, Any] = {"district_id": district_id, "run_id": run_id, "seq": state.seq}
    if not runs.save_fetch_checkpoint(district_id, run_id, state.seq, checkpoint, token=token):
        # This invocation outlived its lease and another took the run over.
        logger.warning("checkpoint not saved: the fetch was taken over", **log)
        return
    try:
        send_run_message(
            RunMessage(
                type="continue",
                districtId=district_id,
                trigger=message.trigger,
                runId=run_id,
                checkpoint=checkpoint,
            )
        )
    except Exception as error:
        # The checkpoint is saved but nothing will continue it: a redelivery of this
        # message is now stale. End the run (it deleted nothing) rather than leave it
        # running until its lock expires; the next run starts afresh.
        logger.exception("continue message not sent", **log)
        runs.finish_run(
            district_id,
            run_id,
            "failed",
            message=f"fetch failed: its continuation could not be queued ({type(error).__name__}); "
            "nothing was deleted",
        )
        return
    logger.info("fetch checkpointed", entity=state.entity, pages=sum(state.pages.values()), **log)


def _bundle_facts(connector: Connector) -> tuple[str, frozenset[str]] | None:
    """(run mode, complete entities) for a bundle source; None for an API source."""
    if not isinstance(connector, BundleSource):
        return None
    return connector.run_mode(), frozenset(connector.complete_entities())


def _stage(
    connector: Connector, district_id: str, run_id: str, state: FetchState, budget: FetchBudget
) -> bool:
    """Stage pages from `state` on, advancing it. True once every entity is read;
    False when the budget is spent first (`state` is then the checkpoint).

    At least one page is staged per invocation, so a fetch always advances.
    """
    slowest = 0.0
    staged = 0
    for entity in ENTITIES[ENTITIES.index(state.entity) :]:
        start = state.position if entity == state.entity else None
        state.entity, state.position = entity, start
        stream = connector.pages(entity, state.since, start)
        try:
            while True:
                began = budget.clock()
                page = next(stream, None)
                if page is None:
                    break
                body: dict[str, Any] = {"entity": entity, "page": page.number, "records": page.records}
                if page.rejected:
                    body["rejected"] = page.rejected
                put_json(page_key(district_id, run_id, entity, page.number), body)
                state.pages[entity] = max(state.pages.get(entity, 0), page.number + 1)
                state.position = page.next_position()
                staged += 1
                slowest = max(slowest, budget.clock() - began)
                if budget.left() < slowest:
                    if state.position.get("end"):
                        break  # the entity is done: the checkpoint starts the next one
                    return False
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # cancels a connector's requests in flight
        state.pages.setdefault(entity, 0)
        if budget.left() < slowest and staged and entity != ENTITIES[-1]:
            state.entity, state.position = ENTITIES[ENTITIES.index(entity) + 1], None
            return False
    return True
