"""Reading and writing staged pages (S3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from rostersync import aws
from rostersync.config import get_config
from rostersync.staging.layout import PageRef, parse_page_key, run_prefix


def put_json(key: str, body: Any) -> None:
    aws.client("s3").put_object(
        Bucket=get_config().staging_bucket_name,
        Key=key,
        Body=orjson.dumps(body),
        ContentType="application/json",
    )


def get_json(key: str) -> Any:
    answer = aws.client("s3").get_object(Bucket=get_config().staging_bucket_name, Key=key)
    return orjson.loads(answer["Body"].read())


def iter_run_pages(district_id: str, run_id: str, *, start_after: str = "") -> Iterator[PageRef]:
    """The run's staged pages in key order (after the page key `start_after`: a read that
    continues)."""
    paginator = aws.client("s3").get_paginator("list_objects_v2")
    extra = {"StartAfter": start_after} if start_after else {}
    for page in paginator.paginate(
        Bucket=get_config().staging_bucket_name, Prefix=run_prefix(district_id, run_id), **extra
    ):
        for obj in page.get("Contents", []):
            ref = parse_page_key(obj["Key"])
            if ref is not None:
                yield ref


def download(key: str, dest: Path) -> None:
    """Copy an object (an uploaded bundle) to a local file, streaming."""
    aws.client("s3").download_file(get_config().staging_bucket_name, key, str(dest))
