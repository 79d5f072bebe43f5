"""Poison pages: a staged page that fails every time it is transformed.

SQS retries a failing page until its `maxReceiveCount`, then moves it to the
staging dead-letter queue. Without more, its run would wait for the page
forever (`running` until the lock expires). On the last allowed try the
transform therefore names the page in the run's errors and fails the run:
nothing is applied or deleted, and the next run starts afresh.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from rostersync.roster.product import Issue
from rostersync.staging.layout import PageRef
from rostersync.store import runs

logger = Logger(service="rostersync", child=True)


def is_last_attempt(receive_count: int, max_receive_count: int) -> bool:
    return receive_count >= max_receive_count


def fail_run_for_poison_page(ref: PageRef, error: BaseException, attempts: int) -> bool:
    """Record the page as poison and fail its run; False if the run had already ended.

    The reason names the page and the kind of failure, never the exception's
    text: that may quote the page, which holds student records.
    """
    run = runs.get_run(ref.district_id, ref.run_id)
    if run is None or run["status"] in runs.FINAL_STATUSES:
        return False
    kind = type(error).__name__
    reason = (
        f"page {ref.name} could not be transformed after {attempts} attempts ({kind}); "
        "it goes to the staging dead-letter queue"
    )
    runs.add_issues(
        ref.district_id, ref.run_id, "ERR", [Issue(entity="page", sourcedId=ref.name, reason=reason)]
    )
    runs.finish_run(
        ref.district_id,
        ref.run_id,
        "failed",
        message=f"{reason}; the product was not changed",
        poisonPages=[ref.name],
    )
    logger.error(
        "poison page failed its run",
        district_id=ref.district_id,
        run_id=ref.run_id,
        page=ref.name,
        attempts=attempts,
        error_type=kind,
    )
    return True
