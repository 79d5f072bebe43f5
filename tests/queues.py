"""Driving handlers from real queues on the moto server, as Lambda's SQS poller would.

Shared by the integration tests that call handlers directly (the fault suite's
`fault_harness.Pipeline` goes further: receive counts and redrive).
"""

from __future__ import annotations

from typing import Any


def drain(aws_clients: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message the queue holds now, received and deleted."""
    sqs = aws_clients("sqs")
    messages: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not got:
            return messages
        for message in got:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        messages.extend(got)


def sqs_event(template: dict[str, Any], messages: list[dict[str, Any]] | list[str]) -> dict[str, Any]:
    """An SQS event of `template`'s shape (events/*.json) carrying received messages, or bodies."""
    record = template["Records"][0]
    return {
        "Records": [
            {**record, "messageId": f"m{i}", "body": m}
            if isinstance(m, str)
            else {**record, "messageId": m["MessageId"], "body": m["Body"]}
            for i, m in enumerate(messages)
        ]
    }
