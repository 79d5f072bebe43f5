"""Messages that move a run along: RunQueue (start, continue) and ApplyQueue."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from rostersync import aws
from rostersync.config import get_config


class RunMessage(BaseModel):
    """A run start (API or schedule) or a fetch checkpoint, on RunQueue."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["start", "continue"] = "start"
    districtId: str
    trigger: Literal["api", "schedule", "inbox", "push"] = "schedule"
    runId: str | None = None
    mode: Literal["full", "incremental"] | None = None
    confirmDeletes: bool = False
    dryRun: bool = False
    checkpoint: dict[str, Any] = Field(default_factory=dict)


class ApplyMessage(BaseModel):
    type: Literal["apply"] = "apply"
    districtId: str
    runId: str


def send_run_message(message: RunMessage) -> None:
    aws.client("sqs").send_message(
        QueueUrl=get_config().run_queue_url, MessageBody=message.model_dump_json(exclude_none=True)
    )


def send_apply_message(district_id: str, run_id: str) -> None:
    body = orjson.dumps(ApplyMessage(districtId=district_id, runId=run_id).model_dump()).decode()
    aws.client("sqs").send_message(QueueUrl=get_config().apply_queue_url, MessageBody=body)
