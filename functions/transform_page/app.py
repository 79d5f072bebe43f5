"""Transform function: StagingQueue (S3 ObjectCreated via SQS) → validate pages into the mirror.

Each SQS record is processed on its own: a failing page is reported back as a
batch item failure and retried. On its last allowed try (the queue's
maxReceiveCount, `STAGING_MAX_RECEIVE_COUNT`) a page that still fails is a
poison page: its run is failed with the page named, and SQS moves the message
to the staging dead-letter queue.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

import orjson
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from rostersync.config import get_config
from rostersync.observability import metrics
from rostersync.pipeline.poison import fail_run_for_poison_page, is_last_attempt
from rostersync.pipeline.transform import transform_page
from rostersync.staging.layout import parse_page_key

logger = Logger()
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.SQS)


def staged_keys(body: str) -> list[str]:
    """The object keys of an S3 event notification (an s3:TestEvent has none)."""
    message = orjson.loads(body)
    return [unquote_plus(r["s3"]["object"]["key"]) for r in message.get("Records", []) if "s3" in r]


def _receive_count(record: SQSRecord) -> int:
    try:
        return int(record.attributes.approximate_receive_count or 1)
    except (TypeError, ValueError):
        return 1


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    for key in staged_keys(record.body):
        ref = parse_page_key(key)
        if ref is None:
            continue
        try:
            transform_page(ref)
        except Exception as error:
            attempts = _receive_count(record)
            if is_last_attempt(attempts, get_config().staging_max_receive_count):
                fail_run_for_poison_page(ref, error, attempts)
            raise  # reported as a batch item failure: retried, then dead-lettered


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics  # a poison page fails its run here
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
