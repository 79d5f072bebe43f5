"""boto3 clients, created once per process and shared.

boto3 reads `AWS_ENDPOINT_URL` itself, which is how the same code talks to the
embedded emulator on one machine and to AWS in Lambda.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

_BOTO_CONFIG = BotoConfig(retries={"mode": "adaptive", "max_attempts": 8}, max_pool_connections=32)


@cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_BOTO_CONFIG)  # type: ignore[call-overload]


@cache
def resource(service: str) -> Any:
    return boto3.session.Session().resource(service, config=_BOTO_CONFIG)  # type: ignore[call-overload]


@cache
def table(name: str) -> Any:
    """A DynamoDB Table resource; building one loads a model, so it is built once."""
    return resource("dynamodb").Table(name)


def reset() -> None:
    """Forget every client (tests and the local stack change endpoints)."""
    client.cache_clear()
    resource.cache_clear()
    table.cache_clear()
