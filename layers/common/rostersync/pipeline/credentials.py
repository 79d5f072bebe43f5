"""A source's secrets: only ever from a SecureString parameter."""

from __future__ import annotations

import time
from typing import Any

import orjson
from botocore.exceptions import ClientError

from rostersync import aws
from rostersync.errors import SourceError

_CACHE: dict[str, tuple[float, dict[str, Any]]] = {}
_MAX_AGE_S = 300


def load_credentials(parameter_name: str) -> dict[str, Any]:
    cached = _CACHE.get(parameter_name)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    try:
        answer = aws.client("ssm").get_parameter(Name=parameter_name, WithDecryption=True)["Parameter"]
    except ClientError as error:
        raise SourceError(
            f"credentials parameter {parameter_name} cannot be read: {error.response['Error']['Code']}"
        ) from None
    if answer.get("Type") != "SecureString":
        raise SourceError(f"credentials parameter {parameter_name} must be a SecureString")
    try:
        value = orjson.loads(answer["Value"])
    except orjson.JSONDecodeError:
        raise SourceError(f"credentials parameter {parameter_name} is not a JSON object") from None
    if not isinstance(value, dict):
        raise SourceError(f"credentials parameter {parameter_name} is not a JSON object")
    _CACHE[parameter_name] = (time.monotonic() + _MAX_AGE_S, value)
    return value


def clear_cache() -> None:
    _CACHE.clear()
