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


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, orjson.JSONDecodeError):
        raise BadRequestError("cursor: not a cursor this API gave out") from None
    if not isinstance(value, dict) or set(value) - {"pk", "sk", "gsi1pk", "gsi1sk"}:
        raise BadRequestError("cursor: not a cursor this API gave out")
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
