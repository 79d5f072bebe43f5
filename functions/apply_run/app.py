"""Apply function: ApplyQueue → recompute the district's product state and write what changed
(or continue writing it from a checkpoint: pipeline/apply_continue.py)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes import SQSEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from rostersync.observability import metrics
from rostersync.pipeline.apply import apply_run
from rostersync.pipeline.queues import ApplyMessage

logger = Logger()
tracer = Tracer()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=SQSEvent)
def lambda_handler(event: SQSEvent, context: LambdaContext) -> dict[str, Any]:
    applied = []
    for record in event.records:
        message = ApplyMessage.model_validate_json(record.body)
        logger.append_keys(district_id=message.districtId, run_id=message.runId)
        apply_run(
            message.districtId,
            message.runId,
            remaining_ms=context.get_remaining_time_in_millis(),
            continue_seq=message.seq if message.type == "continue" else None,
        )
        applied.append(message.runId)
    return {"applied": applied}
