"""What a run's end tells the outside: one EventBridge event and the run's metrics.

`store.runs.finish_run` calls `run_finished` once per run, right after the
conditional write that ended it (a second finish of the same run changes
nothing and calls nothing here), so every run that ends — succeeded, failed,
halted, previewed, a stalled run failed by its successor — announces its end
exactly once.

- The event goes to the stack's own bus (`RUN_EVENT_BUS_NAME`, template
  `RunEventBus`): source `rostersync`, detail-type `Roster Sync Run Finished`,
  the detail of `run_end_detail` — ids, status, times and numbers only, never a
  name or an email. A failed `PutEvents` is logged and counted
  (`RunEventsNotPublished`) and the run stays as it ended.
- The metrics are CloudWatch EMF through powertools `Metrics` (namespace
  `Rostersync`, the one dimension `service`): a district id as a dimension
  would make a metric per district, so it is metadata instead. The function
  handlers flush them with `@metrics.log_metrics`; each run's metrics are one
  EMF document with that run's ids as metadata.

Nothing here may make a finished run look failed: `run_finished` never raises.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from rostersync import aws
from rostersync.config import get_config

logger = Logger(service="rostersync", child=True)

NAMESPACE = "Rostersync"
SERVICE = "rostersync"
EVENT_SOURCE = "rostersync"
EVENT_DETAIL_TYPE = "Roster Sync Run Finished"

RUN_STATUSES = ("succeeded", "failed", "halted", "previewed")
# The product kinds a run counts (SPEC 6), and the outcomes counted per kind.
COUNTED_KINDS = ("schools", "classes", "users", "enrollments")
OUTCOMES = ("created", "updated", "deleted", "unchanged")
# A run's message is short; this bounds the event whatever a source answered.
MAX_MESSAGE_CHARS = 1000

metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

# Most invocations end no run and so have no metric to flush: that is expected,
# not worth powertools' warning on every such invocation.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)


def status_metric(status: str) -> str:
    """`FailedRuns`, `HaltedRuns`...: the per-status counts the alarms read."""
    return f"{status.capitalize()}Runs"


def outcome_metric(kind: str, outcome: str) -> str:
    """`UsersCreated`, `ClassesDeleted`...: records by outcome, per kind."""
    return f"{kind.capitalize()}{outcome.capitalize()}"


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return 0
    return int(value) if value == int(value) else float(value)


def _counts(raw: Any) -> dict[str, dict[str, int | float]]:
    """The run's counts, numbers only (the run record holds nothing else there)."""
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(kind): {str(field): _number(value) for field, value in fields.items()}
        for kind, fields in raw.items()
        if isinstance(fields, Mapping)
    }


def run_end_detail(run: Mapping[str, Any]) -> dict[str, Any]:
    """The event's detail, from the finished run record: chosen fields only, so
    nothing a record might one day carry (a name, an email) can leak into it."""
    counts = _counts(run.get("counts"))
    message = run.get("message")
    return {
        "districtId": str(run["districtId"]),
        "runId": str(run["runId"]),
        "status": str(run["status"]),
        "trigger": run.get("trigger"),
        "mode": run.get("mode"),
        "startedAt": run.get("startedAt"),
        "finishedAt": run.get("finishedAt"),
        "counts": counts,
        "rejected": sum(fields.get("rejected", 0) for fields in counts.values()),
        "itemWrites": _number(run.get("itemWrites")),
        "message": str(message)[:MAX_MESSAGE_CHARS] if message is not None else None,
    }


def _moment(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


def record_run_metrics(detail: Mapping[str, Any]) -> None:
    """Add one run's metrics; the handler's `@metrics.log_metrics` writes them out."""
    pending = metrics.metadata_set.get("runId")
    if metrics.metric_set and pending not in (None, detail["runId"]):
        # Another run ended earlier in this invocation: its metrics keep its own metadata.
        metrics.flush_metrics()
    status = detail["status"]
    metrics.add_metric(name="RunsFinished", unit=MetricUnit.Count, value=1)
    for each in RUN_STATUSES:
        metrics.add_metric(name=status_metric(each), unit=MetricUnit.Count, value=int(each == status))
    started, finished = _moment(detail["startedAt"]), _moment(detail["finishedAt"])
    if started and finished:
        seconds = max((finished - started).total_seconds(), 0.0)
        metrics.add_metric(name="RunDuration", unit=MetricUnit.Seconds, value=seconds)
    if status != "previewed":
        # A dry run's counts are what would have changed: not outcomes.
        counts = detail["counts"]
        for kind in COUNTED_KINDS:
            for outcome in OUTCOMES:
                value = counts.get(kind, {}).get(outcome, 0)
                metrics.add_metric(name=outcome_metric(kind, outcome), unit=MetricUnit.Count, value=value)
        metrics.add_metric(name="RecordsRejected", unit=MetricUnit.Count, value=detail["rejected"])
        metrics.add_metric(name="ItemWrites", unit=MetricUnit.Count, value=detail["itemWrites"])
    for key in ("districtId", "runId", "status", "trigger", "mode"):
        metrics.add_metadata(key=key, value=detail[key])


def publish_run_end(detail: Mapping[str, Any]) -> bool:
    """Put the run-end event on the bus. False (logged, counted) when it could not be."""
    bus = get_config().run_event_bus_name
    log = {"district_id": detail["districtId"], "run_id": detail["runId"]}
    if not bus:
        logger.debug("no run event bus configured: run-end event not published", **log)
        return False
    entry: dict[str, Any] = {
        "Source": EVENT_SOURCE,
        "DetailType": EVENT_DETAIL_TYPE,
        "Detail": json.dumps(detail, separators=(",", ":")),
        "EventBusName": bus,
    }
    finished = _moment(detail["finishedAt"])
    if finished:
        entry["Time"] = finished
    try:
        answer = aws.client("events").put_events(Entries=[entry])
    except Exception as error:
        # The error's code or type only: the run's end is announced nowhere else.
        reason = getattr(error, "response", {}).get("Error", {}).get("Code") or type(error).__name__
    else:
        if not answer.get("FailedEntryCount"):
            logger.info("run-end event published", status=detail["status"], **log)
            return True
        reason = str((answer.get("Entries") or [{}])[0].get("ErrorCode", "FailedEntry"))
    logger.warning("run-end event not published", reason=reason, event_bus=bus, **log)
    metrics.add_metric(name="RunEventsNotPublished", unit=MetricUnit.Count, value=1)
    return False


def run_finished(run: Mapping[str, Any]) -> None:
    """A run has ended (called once per run by `finish_run`). Never raises."""
    try:
        detail = run_end_detail(run)
        record_run_metrics(detail)
        publish_run_end(detail)
    except Exception:
        logger.exception(
            "run-end event and metrics failed", district_id=run.get("districtId"), run_id=run.get("runId")
        )
