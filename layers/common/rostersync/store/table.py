"""The roster table handle and the few helpers every store module shares."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from rostersync import aws
from rostersync.config import get_config
from rostersync.errors import BadRequestError


def table() -> Any:
    return aws.table(get_config().roster_table_name)


def encode_cursor(last_key: dict[str, Any] | None) -> str | None:
    if not last_key:
        return None
    return base64.urlsafe_b64encode(orjson.dumps(last_key)).decode()


def decode_cursor(cursor: str | None, *, pk: str | None = None) -> dict[str, Any] | None:
    """A cursor this API gave out, for the same list (`pk`) it was given for."""
    if not cursor:
        return None
    refused = BadRequestError("cursor: not a cursor this API gave out for this list")
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, orjson.JSONDecodeError):
        raise refused from None
    if (
        not isinstance(value, dict)
        or set(value) - {"pk", "sk", "gsi1pk", "gsi1sk"}
        or not all(isinstance(v, str) for v in value.values())
        or (pk is not None and value.get("pk") != pk)
    ):
        raise refused
    return value


def query_all(**kwargs: Any) -> Any:
    """Yield every item of a query, page by page (bounded memory)."""
    tbl = table()
    while True:
        page = tbl.query(**kwargs)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
