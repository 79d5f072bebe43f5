"""The `direct` source (SPEC 2): the pages a district pushed through the API.

A pushed page's body lives in the staging bucket at
`pushes/{districtId}/{pushId}/{entity}/{page:06d}.json`, outside `staging/`:
nothing is transformed while a push is open. Once the push is completed, its
run's fetch reads the pages through `DirectPushConnector` and stages them like
any other source's, so everything after the fetch is unchanged.

Which pages belong to a push is what `rostersync.store.pushes` recorded while
it was open (each with its object's ETag), not whatever the prefix holds: a
page sent after the push closed is never read, and an object replaced after
it was recorded fails the run rather than slipping in unrecorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

import orjson
from botocore.exceptions import ClientError

from rostersync import aws
from rostersync.config import get_config
from rostersync.errors import SourceError
from rostersync.sources.base import ENTITIES, Entity, Position, SourcePage, start_page
from rostersync.store import pushes

PUSHES_PREFIX = "pushes/"


def push_page_key(district_id: str, push_id: str, entity: str, number: int) -> str:
    return f"{PUSHES_PREFIX}{district_id}/{push_id}/{entity}/{number:06d}.json"


def store_pushed_page(
    district_id: str, push_id: str, entity: str, number: int, records: list[dict[str, Any]]
) -> str:
    """Write (or replace) a pushed page's body; returns the object's ETag."""
    answer = aws.client("s3").put_object(
        Bucket=get_config().staging_bucket_name,
        Key=push_page_key(district_id, push_id, entity, number),
        Body=orjson.dumps({"entity": entity, "page": number, "records": records}),
        ContentType="application/json",
    )
    return str(answer["ETag"])


class DirectPushConnector:
    """Connector (and BundleSource) over one completed push.

    A push says for itself what it is, like a CSV bundle: `full` makes the
    entities it holds pages of complete (their absent records are deleted,
    within the safeguard), `incremental` makes none complete.
    """

    def __init__(self, district_id: str, push_id: str) -> None:
        self.district_id = district_id
        self.push_id = push_id
        self._record: dict[str, Any] | None = None

    def _push(self) -> dict[str, Any]:
        if self._record is None:
            push = pushes.get_push(self.district_id, self.push_id)
            if push is None:
                raise SourceError(f"push {self.push_id} not found")
            if pushes.status_of(push) != "completed":
                # Only a completed push is a run's source: an open or expired one is never read.
                raise SourceError(f"push {self.push_id} is {pushes.status_of(push)}, not completed")
            self._record = push
        return self._record

    def run_mode(self) -> Literal["full", "incremental"]:
        return "incremental" if self._push().get("mode") == "incremental" else "full"

    def complete_entities(self) -> frozenset[Entity]:
        if self.run_mode() != "full":
            return frozenset()
        # An entity the pusher sent no page of says nothing about its records.
        pages = self._push().get("pages") or {}
        return frozenset(entity for entity in ENTITIES if int(pages.get(entity, 0)) > 0)

    def pages(
        self, entity: Entity, since: datetime | None = None, start: Position | None = None
    ) -> Iterator[SourcePage]:
        """Every pushed page of `entity`, renumbered 0..n-1 in page order.

        `since` is ignored: the pusher chose what to send (all, or changes only).
        From `start`, the pages before `start["page"]` are skipped by their
        table entries alone (no S3 read), so a continued fetch costs nothing
        for what it staged before.
        """
        expected = int((self._push().get("pages") or {}).get(entity, 0))
        first = start_page(start)
        number = -1
        for number, page in enumerate(pushes.iter_pages(self.district_id, self.push_id, entity)):
            if number < first:
                continue
            resume: Position = {"page": number + 1}
            if number + 1 == expected:
                resume["end"] = True
            yield SourcePage(entity=entity, number=number, records=self._read(entity, page), resume=resume)
        if number + 1 != expected:
            raise SourceError(f"push {self.push_id}: {expected} {entity} pages recorded, {number + 1} found")

    def _read(self, entity: str, page: pushes.PushedPage) -> list[dict[str, Any]]:
        key = push_page_key(self.district_id, self.push_id, entity, page.number)
        where = f"push {self.push_id} page {entity}/{page.number:06d}"
        try:
            answer = aws.client("s3").get_object(
                Bucket=get_config().staging_bucket_name, Key=key, IfMatch=page.etag
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412"):
                raise SourceError(f"{where} changed after it was recorded: push it again") from None
            if code in ("NoSuchKey", "404"):
                raise SourceError(f"{where} is missing from the staging bucket") from None
            raise
        records = orjson.loads(answer["Body"].read()).get("records")
        if not isinstance(records, list) or len(records) != page.records:
            raise SourceError(f"{where} does not hold the {page.records} records recorded")
        return records

    def close(self) -> None:
        """Nothing to release: every read is one S3 request."""
