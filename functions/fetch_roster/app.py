"""Fetch function: RunQueue (SQS) → pull the district's source and stage its pages to S3."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes import SQSEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from rostersync.observability import metrics
from rostersync.pipeline.fetch import FetchBudget, handle_run_message
from rostersync.pipeline.queues import run_messages

logger = Logger()
tracer = Tracer()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=SQSEvent)
def lambda_handler(event: SQSEvent, context: LambdaContext) -> dict[str, Any]:
    started = []
    for record in event.records:
        for message in run_messages(record.body):
            logger.append_keys(district_id=message.districtId)
            # Each message gets what is left of the invocation: a fetch that would run
            # past it checkpoints and continues in a new invocation.
            budget = FetchBudget.for_invocation(context.get_remaining_time_in_millis())
            started.append(handle_run_message(message, budget=budget))
    return {"runIds": started}
