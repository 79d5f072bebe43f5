"""Messages that move a run along: RunQueue (start, continue) and ApplyQueue."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import unquote_plus

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
    """An apply to start (every page is in), or its writes to continue from checkpoint `seq`."""

    type: Literal["apply", "continue"] = "apply"
    districtId: str
    runId: str
    seq: int | None = None


def send_run_message(message: RunMessage) -> None:
    aws.client("sqs").send_message(
        QueueUrl=get_config().run_queue_url, MessageBody=message.model_dump_json(exclude_none=True)
    )


def send_apply_message(district_id: str, run_id: str, *, continue_seq: int | None = None) -> None:
    message = ApplyMessage(districtId=district_id, runId=run_id)
    if continue_seq is not None:
        message = ApplyMessage(type="continue", districtId=district_id, runId=run_id, seq=continue_seq)
    body = orjson.dumps(message.model_dump(exclude_none=True)).decode()
    aws.client("sqs").send_message(QueueUrl=get_config().apply_queue_url, MessageBody=body)


def run_messages(body: str) -> list[RunMessage]:
    """The run starts a RunQueue message asks for.

    Besides run messages, RunQueue receives S3 notifications of bundles
    uploaded to `inbox/{districtId}/...`: each starts an inbox run.
    """
    message = orjson.loads(body)
    if "Records" not in message:
        if message.get("Event") == "s3:TestEvent":
            return []
        return [RunMessage.model_validate(message)]
    starts = []
    for record in message["Records"]:
        key = unquote_plus(record.get("s3", {}).get("object", {}).get("key", ""))
        parts = key.split("/")
        if len(parts) >= 3 and parts[0] == "inbox" and parts[1] and parts[-1]:
            starts.append(
                RunMessage(type="start", districtId=parts[1], trigger="inbox", checkpoint={"bundleKey": key})
            )
    return starts
