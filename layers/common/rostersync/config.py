"""The one place that reads the process environment.

Lambda gets these from template.yaml's Globals; the embedded stack sets the
same names with the local values of the template's Outputs. Logic receives a
`Config` object and never reads `os.environ` itself.
"""

from __future__ import annotations

import os
from functools import lru_cache

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
    settings_prefix: str = "/rostersync/districts/"
    # Seconds a fetch keeps for itself before it checkpoints and continues in a
    # new invocation (Lambda's own limit is 900 s).
    fetch_time_reserve_s: int = 60


_ENV = {
    "roster_table_name": "ROSTER_TABLE_NAME",
    "staging_bucket_name": "STAGING_BUCKET_NAME",
    "run_queue_url": "RUN_QUEUE_URL",
    "run_queue_arn": "RUN_QUEUE_ARN",
    "apply_queue_url": "APPLY_QUEUE_URL",
    "scheduler_role_arn": "SCHEDULER_ROLE_ARN",
    "scheduler_group": "SCHEDULER_GROUP",
    "settings_prefix": "SETTINGS_PREFIX",
    "fetch_time_reserve_s": "FETCH_TIME_RESERVE_S",
}


@lru_cache(maxsize=1)
def get_config() -> Config:
    values = {field: os.environ[env] for field, env in _ENV.items() if os.environ.get(env)}
    return Config.model_validate(values)
