"""The one place that reads the process environment.

Lambda gets these from template.yaml's Globals; the embedded stack sets the
same names with the local values of the template's Outputs. Logic receives a
`Config` object and never reads `os.environ` itself.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict


class Config(BaseModel):
    model_config = ConfigDict(frozen=True)

    roster_table_name: str = "rostersync-roster"
    staging_bucket_name: str = "rostersync-staging"
    run_queue_url: str = ""
    run_queue_arn: str = ""
    apply_queue_url: str = ""
    scheduler_role_arn: str = ""
    scheduler_group: str = "default"
    # The EventBridge bus of run-end events (template RunEventBus); empty: none published.
    run_event_bus_name: str = ""
    settings_prefix: str = "/rostersync/districts/"
    # Seconds a fetch keeps for itself before it checkpoints and continues in a
    # new invocation (Lambda's own limit is 900 s).
    fetch_time_reserve_s: int = 60
    # At most this many seconds of fetching per invocation (unset: as long as
    # the invocation allows). Tests and the benchmark shorten it.
    fetch_time_budget_s: float | None = None
    # The same for an apply's writes (pipeline/apply_continue.py): what an invocation
    # keeps back to upload its checkpoint, and an optional cap on its time.
    apply_time_reserve_s: int = 180
    apply_time_budget_s: float | None = None
    # How long a source request may take, and the first retry's backoff (it
    # doubles per retry). Tests shrink both (SOURCE_TIMEOUT_S, SOURCE_RETRY_BASE_S).
    source_timeout_s: float = 30.0
    source_retry_base_s: float = 1.0
    # StagingQueue's maxReceiveCount (template.yaml): the last try of a page
    # that keeps failing fails its run before the page goes to the DLQ.
    staging_max_receive_count: int = 5
    # IAM principal ARN(s), comma-separated, that may call the API for every
    # district (template parameter OperatorPrincipalArn; see api/access.py).
    operator_principal_arn: str = ""
    # "bounded" (a disk-backed working set: memory flat in the district's size) or
    # "memory" (the whole district as models: the reference the tests compare with).
    apply_engine: Literal["bounded", "memory"] = "bounded"


_ENV = {
    "roster_table_name": "ROSTER_TABLE_NAME",
    "staging_bucket_name": "STAGING_BUCKET_NAME",
    "run_queue_url": "RUN_QUEUE_URL",
    "run_queue_arn": "RUN_QUEUE_ARN",
    "apply_queue_url": "APPLY_QUEUE_URL",
    "scheduler_role_arn": "SCHEDULER_ROLE_ARN",
    "scheduler_group": "SCHEDULER_GROUP",
    "run_event_bus_name": "RUN_EVENT_BUS_NAME",
    "settings_prefix": "SETTINGS_PREFIX",
    "fetch_time_reserve_s": "FETCH_TIME_RESERVE_S",
    "fetch_time_budget_s": "FETCH_TIME_BUDGET_S",
    "apply_time_reserve_s": "APPLY_TIME_RESERVE_S",
    "apply_time_budget_s": "APPLY_TIME_BUDGET_S",
    "source_timeout_s": "SOURCE_TIMEOUT_S",
    "source_retry_base_s": "SOURCE_RETRY_BASE_S",
    "staging_max_receive_count": "STAGING_MAX_RECEIVE_COUNT",
    "operator_principal_arn": "OPERATOR_PRINCIPAL_ARN",
    "apply_engine": "APPLY_ENGINE",
}


@lru_cache(maxsize=1)
def get_config() -> Config:
    values = {field: os.environ[env] for field, env in _ENV.items() if os.environ.get(env)}
    return Config.model_validate(values)
