"""The district's source mirror and its product records in the roster table.

The mirror holds every source record the district sent, normalized, so an
incremental run can recompute what depends on records it did not receive.
Product records are what the classroom product reads. Both are written only
when they changed (a hash for the mirror, the stored form for products).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from functools import reduce
from typing import Any

from boto3.dynamodb.conditions import Attr

from rostersync import aws
from rostersync.config import get_config
from rostersync.store import keys
from rostersync.store.runs import plain
from rostersync.store.table import decode_cursor, encode_cursor, query_all, table

PRODUCT_KIND = {"schools": "SCHOOL", "classes": "CLASS", "users": "USER", "enrollments": "ENROLLMENT"}
_KEY_ATTRS = ("pk", "sk", "gsi1pk", "gsi1sk")


# ---- source mirror -------------------------------------------------------------


def _mirror_pk(district_id: str, entity: str, dry_run_id: str | None) -> str:
    if dry_run_id:
        return keys.dry_run_source_pk(district_id, dry_run_id, entity)
    return keys.source_pk(district_id, entity)


def _batch_get(pk: str, sourced_ids: Iterable[str], projection: str) -> Iterator[dict[str, Any]]:
    """The items of partition `pk` with these sort keys (those that exist), 100 per BatchGet."""
    wanted = list(dict.fromkeys(sourced_ids))
    name = get_config().roster_table_name
    dynamodb = aws.client("dynamodb")
    for start in range(0, len(wanted), 100):
        keys_and_projection: dict[str, Any] = {
            "Keys": [{"pk": {"S": pk}, "sk": {"S": sid}} for sid in wanted[start : start + 100]],
            "ProjectionExpression": projection,
        }
        if "#d" in projection:  # `doc` is a reserved word
            keys_and_projection["ExpressionAttributeNames"] = {"#d": "doc"}
        request: dict[str, Any] = {name: keys_and_projection}
        while request:
            answer = dynamodb.batch_get_item(RequestItems=request)
            yield from answer["Responses"].get(name, [])
            request = answer.get("UnprocessedKeys") or {}


def mirror_versions(
    district_id: str, entity: str, sourced_ids: Iterable[str], *, dry_run_id: str | None = None
) -> dict[str, str]:
    """The stored version (see `write_mirror`) of each given record that is in the mirror."""
    items = _batch_get(_mirror_pk(district_id, entity, dry_run_id), sourced_ids, "sk, v")
    return {item["sk"]["S"]: item["v"]["S"] for item in items}


def get_mirror(district_id: str, entity: str, sourced_ids: Iterable[str]) -> Iterator[tuple[str, str, str]]:
    """(sourcedId, normalized JSON, version) of each given record that is in the mirror."""
    for item in _batch_get(_mirror_pk(district_id, entity, None), sourced_ids, "sk, #d, v"):
        yield item["sk"]["S"], item["doc"]["S"], item.get("v", {}).get("S", "")


def write_mirror(
    district_id: str, entity: str, records: Sequence[tuple[str, str, str]], *, dry_run_id: str | None = None
) -> int:
    """records: (sourcedId, normalized JSON, version).

    The version (`dateLastModified|runId|hash`) orders two copies of a record:
    the caller writes only copies newer than the stored one, so the mirror ends
    the same whichever order pages arrive in.
    """
    pk = _mirror_pk(district_id, entity, dry_run_id)
    # A dry run's records go when the preview has been read.
    extra = {"expiresAt": int(time.time()) + 86400} if dry_run_id else {}
    with table().batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
        for sourced_id, doc, version in records:
            batch.put_item(Item={"pk": pk, "sk": sourced_id, "doc": doc, "v": version, **extra})
    return len(records)


def delete_mirror(district_id: str, entity: str, sourced_ids: Iterable[str]) -> None:
    pk = keys.source_pk(district_id, entity)
    with table().batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
        for sourced_id in sourced_ids:
            batch.delete_item(Key={"pk": pk, "sk": sourced_id})


def iter_mirror(
    district_id: str, entity: str, *, dry_run_id: str | None = None, after: str = ""
) -> Iterator[tuple[str, str, str]]:
    """(sourcedId, normalized JSON, version) of every mirrored record of the entity, in
    sourcedId order (after `after`: a read that continues)."""
    pk = _mirror_pk(district_id, entity, dry_run_id)
    for item in query_all(
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": pk},
        ProjectionExpression="sk, #d, v",
        ExpressionAttributeNames={"#d": "doc"},
        **_start_after(pk, after),
    ):
        yield item["sk"], item["doc"], item.get("v", "")


# ---- product records -----------------------------------------------------------


def _strip(item: dict[str, Any]) -> dict[str, Any]:
    return plain({k: v for k, v in item.items() if k not in _KEY_ATTRS})


def iter_product(district_id: str, kind: str, *, after: str = "") -> Iterator[dict[str, Any]]:
    """The kind's product items in id order (after `after`: a read that continues)."""
    pk = keys.product_pk(district_id, PRODUCT_KIND[kind])
    for item in query_all(
        KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": pk}, **_start_after(pk, after)
    ):
        yield _strip(item)


def _start_after(pk: str, sort_key: str) -> dict[str, Any]:
    return {"ExclusiveStartKey": {"pk": pk, "sk": sort_key}} if sort_key else {}


def write_product(district_id: str, kind: str, items: Iterable[dict[str, Any]]) -> int:
    pk = keys.product_pk(district_id, PRODUCT_KIND[kind])
    written = 0
    with table().batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
        for item in items:
            stored = {"pk": pk, "sk": item["id"], **item}
            if kind == "users" and item.get("email"):
                stored |= {"gsi1pk": keys.email_gsi_pk(district_id), "gsi1sk": item["email"]}
            batch.put_item(Item=stored)
            written += 1
    return written


def delete_product(district_id: str, kind: str, ids: Iterable[str]) -> int:
    pk = keys.product_pk(district_id, PRODUCT_KIND[kind])
    deleted = 0
    with table().batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
        for item_id in ids:
            batch.delete_item(Key={"pk": pk, "sk": item_id})
            deleted += 1
    return deleted


def list_product(
    district_id: str,
    kind: str,
    *,
    limit: int,
    cursor: str | None,
    filters: dict[str, str] | None = None,
    visible_on: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of product records, filtered; keeps reading until the page is full."""
    kwargs: dict[str, Any] = {
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": keys.product_pk(district_id, PRODUCT_KIND[kind])},
    }
    if kind == "users" and filters and "email" in filters:
        # Email is unique per district: its index answers at once.
        kwargs = {
            "IndexName": "ByEmail",
            "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk = :email",
            "ExpressionAttributeValues": {":pk": keys.email_gsi_pk(district_id), ":email": filters["email"]},
        }
        filters = {k: v for k, v in filters.items() if k != "email"}
    clauses: list[Any] = [Attr(name).eq(value) for name, value in (filters or {}).items()]
    if visible_on is not None:
        clauses.append(Attr("visibleFrom").eq(None) | Attr("visibleFrom").lte(visible_on))
    if clauses:
        kwargs["FilterExpression"] = reduce(lambda a, b: a & b, clauses)
    start = decode_cursor(cursor, pk=kwargs["ExpressionAttributeValues"][":pk"])
    items: list[dict[str, Any]] = []
    tbl = table()
    while True:
        if start:
            kwargs["ExclusiveStartKey"] = start
        kwargs["Limit"] = max(limit - len(items), 1) if "FilterExpression" not in kwargs else limit
        page = tbl.query(**kwargs)
        for item in page.get("Items", []):
            items.append(_strip(item))
        start = page.get("LastEvaluatedKey")
        if not start or len(items) >= limit:
            break
    if len(items) > limit:
        # The last query overshot: answer `limit` items and resume after the last one.
        items = items[:limit]
        last = items[-1]["id"]
        start = {"pk": kwargs["ExpressionAttributeValues"][":pk"], "sk": last}
        if kwargs.get("IndexName"):
            start = None
    return items, encode_cursor(start)
