"""Push routes of a `direct` source (SPEC 2): open a push, send pages, complete it.

- `POST /districts/{id}/pushes`: 201 `{"pushId", "expiresAt"}`; 404 when the
  district has no settings or its source type is not `direct`.
- `PUT /districts/{id}/pushes/{pushId}/{entity}/{page}`, body `{"records": [...]}`
  or a OneRoster envelope (`{"users": [...]}`): 200 `{"pushId", "entity",
  "page", "records"}`; 400 bad entity, page or body; 404 unknown push; 409
  completed; 410 expired; 413 over 10,000 records or 6,000,000 bytes. Sending
  a page again replaces it.
- `POST /districts/{id}/pushes/{pushId}/complete`, body optional `{"mode":
  "full"|"incremental", "confirmDeletes": bool, "dryRun": bool}` (full by
  default; the flags as on a force sync): 202 `{"runId", "status", "pushId"}`;
  400 bad body or no pages; 404; 409 completed, or a run is active (with its
  `runId`); 410 expired.
- `GET /districts/{id}/pushes/{pushId}`: the push, `status` open, completed or
  expired, `pages` and `records` per entity, `runId`.

A push is bound to its district; several may be open at once, and each one
that is completed becomes one run (trigger `push`). Errors leave through the
exception handlers of `rostersync.api.app`, in the one error shape; this module
never imports that one, which includes this router at its end.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, ConfigDict, ValidationError

from rostersync.errors import BadRequestError, NotFoundError, RostersyncError
from rostersync.pipeline.queues import RunMessage, send_run_message
from rostersync.settings.model import MAX_DISTRICT_ID_LENGTH, is_valid_district_id
from rostersync.sources.base import ENTITIES
from rostersync.sources.direct import store_pushed_page
from rostersync.sources.oneroster_rest import ENVELOPE_KEYS
from rostersync.store import pushes, runs
from rostersync.store.settings import load_last_good

logger = Logger(service="rostersync", child=True)
router = APIGatewayRouter()

MAX_PAGE_RECORDS = 10_000
# API Gateway takes 10 MB, Lambda at most 6 MiB per invocation with the body
# JSON-escaped inside the event: 6,000,000 bytes is this API's own limit, and
# near it AWS may refuse first with a gateway 5xx. 10,000 typical records are
# about 3 MB, well under either.
MAX_PAGE_BYTES = 6_000_000
_PAGE_NUMBER = re.compile(r"^\d{1,6}$")


class PageTooLargeError(RostersyncError):
    code = "page_too_large"
    http_status = 413


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # A complete push of every entity is a full picture; `incremental` when
    # the pusher sends only what changed.
    mode: Literal["full", "incremental"] = "full"
    # As on a force sync: a direct district has no other way to confirm the
    # deletions a push run was halted for, or to preview a push.
    confirmDeletes: bool = False
    dryRun: bool = False


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def _district(district_id: str) -> str:
    if not is_valid_district_id(district_id):
        raise BadRequestError(
            f"districtId: letters, digits, '-' and '_' only, at most {MAX_DISTRICT_ID_LENGTH} characters"
        )
    return district_id


def _require_direct_source(district_id: str) -> None:
    settings = load_last_good(district_id)
    if settings is None:
        raise NotFoundError(f"district {district_id} has no settings")
    if settings.source.type != "direct":
        # 404, like a district without settings: this district has no push endpoint.
        raise NotFoundError(
            f"district {district_id} takes no pushes: its source type is {settings.source.type!r}, "
            "not 'direct'"
        )


def _entity(entity: str) -> str:
    if entity not in ENTITIES:
        raise BadRequestError(f"entity: one of {', '.join(ENTITIES)}")
    return entity


def _page_number(page: str) -> int:
    if not _PAGE_NUMBER.match(page):
        raise BadRequestError("page: a whole number from 0 to 999999")
    return int(page)


def _body_text() -> str:
    body = router.current_event.decoded_body or ""
    size = len(body.encode())
    if size > MAX_PAGE_BYTES:
        raise PageTooLargeError(f"page body is {size} bytes; at most {MAX_PAGE_BYTES} per page")
    return body


def _records_of(document: Any, entity: str) -> list[Any]:
    """The record list of `{"records": [...]}` or of a OneRoster envelope such as `{"users": [...]}`."""
    accepted = ("records", *ENVELOPE_KEYS[entity])
    shape = f"expected {{{', '.join(repr(k) + ': [...]' for k in accepted)}}} (one of them)"
    if not isinstance(document, dict):
        raise BadRequestError(f"body: {shape}")
    present = [key for key in accepted if key in document]
    if len(present) != 1:
        raise BadRequestError(f"body: {shape}")
    records = document[present[0]]
    if not isinstance(records, list):
        raise BadRequestError(f"body.{present[0]}: expected a JSON array of records")
    return records


def _page_records(entity: str) -> list[dict[str, Any]]:
    text = _body_text()
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        # Position only: the text around it may be a student's record.
        raise BadRequestError(f"body: not valid JSON (line {error.lineno}, column {error.colno})") from None
    records = _records_of(document, entity)
    if len(records) > MAX_PAGE_RECORDS:
        raise PageTooLargeError(f"page holds {len(records)} records; at most {MAX_PAGE_RECORDS} per page")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadRequestError(f"records[{index}]: expected a JSON object, not {type(record).__name__}")
    return records


def _complete_request() -> CompleteRequest:
    body = router.current_event.decoded_body
    if not body or not body.strip():
        return CompleteRequest()
    try:
        return CompleteRequest.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in error.errors(include_url=False, include_input=False)
        )
        raise BadRequestError(problems) from None


def _existing_push(district_id: str, push_id: str) -> dict[str, Any]:
    push = pushes.get_push(district_id, push_id)
    if push is None:
        raise pushes.PushNotFoundError(pushes.no_push_message(district_id, push_id))
    return push


@router.post("/districts/<district_id>/pushes")
def open_push(district_id: str) -> Response:
    _require_direct_source(_district(district_id))
    push = pushes.open_push(district_id)
    logger.info("push opened", district_id=district_id, push_id=push["pushId"])
    return _json(201, {"pushId": push["pushId"], "expiresAt": pushes.iso_epoch(push["expiresAt"])})


@router.get("/districts/<district_id>/pushes/<push_id>")
def get_push(district_id: str, push_id: str) -> dict[str, Any]:
    return pushes.push_view(_existing_push(_district(district_id), push_id))


@router.put("/districts/<district_id>/pushes/<push_id>/<entity>/<page>")
def put_page(district_id: str, push_id: str, entity: str, page: str) -> dict[str, Any]:
    _district(district_id)
    _entity(entity)
    number = _page_number(page)
    # The push first: a closed push is answered without reading a large body.
    pushes.require_open(district_id, push_id)
    records = _page_records(entity)
    etag = store_pushed_page(district_id, push_id, entity, number, records)
    new = pushes.record_page(district_id, push_id, entity, number, records=len(records), etag=etag)
    logger.info(
        "push page stored",
        district_id=district_id,
        push_id=push_id,
        entity=entity,
        page=number,
        records=len(records),
        replaced=not new,
    )
    return {"pushId": push_id, "entity": entity, "page": number, "records": len(records)}


@router.post("/districts/<district_id>/pushes/<push_id>/complete")
def complete_push(district_id: str, push_id: str) -> Response:
    _district(district_id)
    request = _complete_request()
    _require_direct_source(district_id)
    push = pushes.require_open(district_id, push_id)
    if not any(int(n) for n in (push.get("pages") or {}).values()):
        raise BadRequestError(f"push {push_id} has no pages: send pages before completing it")
    # Exactly a force sync's start: one run at a time (RunActiveError answers 409 with its id).
    run = runs.start_run(
        district_id,
        trigger="push",
        mode=request.mode,
        confirm_deletes=request.confirmDeletes,
        dry_run=request.dryRun,
    )
    run_id = run["runId"]
    try:
        pushes.complete_push(district_id, push_id, run_id=run_id, mode=request.mode)
    except Exception as error:
        # Another request completed it (or it expired) since the check: this
        # run has nothing to read and must not hold the district's lock.
        why = f": {error}" if isinstance(error, RostersyncError) else ""
        runs.finish_run(district_id, run_id, "failed", message=f"push {push_id} was not completed{why}")
        raise
    _queue_run(district_id, push_id, run_id, request, int(push["expiresAt"]))
    logger.info("push completed", district_id=district_id, push_id=push_id, run_id=run_id)
    return _json(202, {"runId": run_id, "status": run["status"], "pushId": push_id})


def _queue_run(
    district_id: str, push_id: str, run_id: str, request: CompleteRequest, expires_at: int
) -> None:
    message = RunMessage(
        type="start",
        districtId=district_id,
        trigger="push",
        runId=run_id,
        mode=request.mode,
        confirmDeletes=request.confirmDeletes,
        dryRun=request.dryRun,
        # The fetch builds the direct connector from this (RunMessage has no pushId field).
        checkpoint={"pushId": push_id},
    )
    try:
        send_run_message(message)
    except Exception:
        # A run that can never start must not hold the lock, nor keep the push closed.
        runs.finish_run(district_id, run_id, "failed", message="the run could not be queued")
        pushes.reopen_push(district_id, push_id, run_id=run_id, expires_at=expires_at)
        raise
