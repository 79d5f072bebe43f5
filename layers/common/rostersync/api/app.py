"""The HTTP API of SPEC 6, on powertools' REST resolver.

Every error leaves through `_error` in the shape `{"error": {"code", "message"}}`.
Every `/districts/{id}/...` route, the push routes included, passes through
`_authorize_district` first: the caller must be an operator or one of the
district's `apiCallers` (see `rostersync.api.access`), else 403.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFound
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from pydantic import BaseModel, ConfigDict, ValidationError

from rostersync.api import access
from rostersync.config import get_config
from rostersync.errors import BadRequestError, NotFoundError, RostersyncError, RunActiveError
from rostersync.pipeline.options import district_today
from rostersync.pipeline.queues import RunMessage, send_run_message
from rostersync.roster.roles import PRODUCT_ROLES
from rostersync.settings.model import MAX_DISTRICT_ID_LENGTH, is_valid_district_id
from rostersync.store import roster, runs
from rostersync.store.settings import load_last_good

logger = Logger(service="rostersync", child=True)
app = APIGatewayRestResolver()

_RUN_ID = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{6}$")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
RUN_FIELDS = ("runId", "districtId", "trigger", "mode", "status", "startedAt", "finishedAt", "counts")


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    mode: Literal["full", "incremental"] | None = None
    confirmDeletes: bool = False
    dryRun: bool = False


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"code": code, "message": message, **extra}},
    )


@app.exception_handler(RunActiveError)
def _run_active(error: RunActiveError) -> Response:
    return _error(409, error.code, str(error), runId=error.run_id)


@app.exception_handler(RostersyncError)
def _known(error: RostersyncError) -> Response:
    return _error(error.http_status, error.code, str(error))


@app.exception_handler(ValidationError)
def _invalid(error: ValidationError) -> Response:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors(include_url=False)
    )
    return _error(400, "bad_request", problems)


@app.exception_handler(Exception)
def _unexpected(error: Exception) -> Response:
    # Logged with its type only: an exception's text may carry record data.
    logger.error("unexpected error", error_type=type(error).__name__)
    return _error(500, "internal_error", "internal error; the request can be retried")


@app.not_found
def _no_route(error: RouteNotFound) -> Response:
    return _error(404, "not_found", "no such route")


def _district(district_id: str) -> str:
    if not is_valid_district_id(district_id):
        raise BadRequestError(
            f"districtId: letters, digits, '-' and '_' only, at most {MAX_DISTRICT_ID_LENGTH} characters"
        )
    return district_id


def _authorize_district(resolver: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response:
    """Tenant isolation for every route with a district in its path.

    Runs before the route reads its body or anything of the district, so a
    refused caller gets the same 403 whether the district exists or not, and
    nothing is started or changed on its behalf.
    """
    district_id = resolver.context.get("_route_args", {}).get("district_id")
    if district_id is not None:
        _district(district_id)
        caller = access.caller_arn(resolver.current_event.raw_event)
        operators = access.operator_principals(get_config().operator_principal_arn)
        settings = load_last_good(district_id)
        district_callers = settings.api_callers if settings is not None else []
        if not access.is_allowed(caller, operators=operators, district_callers=district_callers):
            # For audit: the IAM principal (no session name, which may be a person's email).
            logger.warning("api access refused", district_id=district_id, caller=access.for_log(caller))
            raise access.forbidden(district_id)
    return next_middleware(resolver)


app.use(middlewares=[_authorize_district])


def _limit() -> int:
    raw = app.current_event.get_query_string_value("limit", str(DEFAULT_LIMIT)) or str(DEFAULT_LIMIT)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequestError(f"limit: a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _cursor() -> str | None:
    return app.current_event.get_query_string_value("cursor", None) or None


def _page(items: list[dict[str, Any]], cursor: str | None) -> dict[str, Any]:
    return {"items": items, "nextCursor": cursor}


@app.post("/districts/<district_id>/sync")
def force_sync(district_id: str) -> Response:
    _district(district_id)
    body = app.current_event.body
    if body and body.strip():
        try:
            request = SyncRequest.model_validate_json(body)
        except ValidationError as error:
            raise BadRequestError(
                "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()
                )
            ) from None
    else:
        request = SyncRequest()
    if load_last_good(district_id) is None:
        raise NotFoundError(f"district {district_id} has no settings")
    run = runs.start_run(
        district_id,
        trigger="api",
        mode=request.mode,
        confirm_deletes=request.confirmDeletes,
        dry_run=request.dryRun,
    )
    message = RunMessage(
        type="start",
        districtId=district_id,
        runId=run["runId"],
        trigger="api",
        mode=request.mode,
        confirmDeletes=request.confirmDeletes,
        dryRun=request.dryRun,
    )
    try:
        send_run_message(message)
    except Exception:
        # A run that can never start must not hold the district's lock.
        runs.finish_run(district_id, run["runId"], "failed", message="the run could not be queued")
        raise
    logger.info("force sync queued", district_id=district_id, run_id=run["runId"])
    return Response(
        status_code=202,
        content_type=content_types.APPLICATION_JSON,
        body={"runId": run["runId"], "status": run["status"]},
    )


def _run_view(item: dict[str, Any]) -> dict[str, Any]:
    view = {field: item.get(field) for field in RUN_FIELDS}
    view["dryRun"] = bool(item.get("dryRun"))
    view["confirmDeletes"] = bool(item.get("confirmDeletes"))
    for optional in ("message", "itemWrites", "productWrites", "applyRead", "safeguard", "preview"):
        if item.get(optional) is not None:
            view[optional] = item[optional]
    return view


@app.get("/districts/<district_id>/runs")
def list_runs(district_id: str) -> dict[str, Any]:
    items, cursor = runs.list_runs(_district(district_id), limit=_limit(), cursor=_cursor())
    return _page([_run_view(i) for i in items], cursor)


def _no_run(district_id: str, run_id: str) -> NotFoundError:
    # A path segment that is no run id is not echoed: it may be anything (an email).
    named = run_id if _RUN_ID.match(run_id) else "with that id"
    return NotFoundError(f"no run {named} for district {district_id}")


@app.get("/districts/<district_id>/runs/<run_id>")
def get_run(district_id: str, run_id: str) -> dict[str, Any]:
    _district(district_id)
    if not _RUN_ID.match(run_id):
        raise _no_run(district_id, run_id)
    item = runs.get_run(district_id, run_id)
    if item is None:
        raise _no_run(district_id, run_id)
    view = _run_view(item)
    kinds: tuple[tuple[Literal["ERR", "WARN"], str], ...] = (("ERR", "errors"), ("WARN", "warnings"))
    for kind, name in kinds:
        issues, cursor = runs.page_issues(
            district_id, run_id, kind, limit=runs.MAX_LISTED_ISSUES, cursor=None
        )
        view[name] = issues
        # Past the first thousand, the rest page at /runs/{runId}/errors (or /warnings).
        view[f"{name}Truncated"] = cursor is not None
    return view


def _issues_page(district_id: str, run_id: str, kind: Literal["ERR", "WARN"]) -> dict[str, Any]:
    _district(district_id)
    if not _RUN_ID.match(run_id) or runs.get_run(district_id, run_id) is None:
        raise _no_run(district_id, run_id)
    items, cursor = runs.page_issues(district_id, run_id, kind, limit=_limit(), cursor=_cursor())
    return _page(items, cursor)


@app.get("/districts/<district_id>/runs/<run_id>/errors")
def list_run_errors(district_id: str, run_id: str) -> dict[str, Any]:
    return _issues_page(district_id, run_id, "ERR")


@app.get("/districts/<district_id>/runs/<run_id>/warnings")
def list_run_warnings(district_id: str, run_id: str) -> dict[str, Any]:
    return _issues_page(district_id, run_id, "WARN")


@app.get("/districts/<district_id>/schools")
def list_schools(district_id: str) -> dict[str, Any]:
    items, cursor = roster.list_product(_district(district_id), "schools", limit=_limit(), cursor=_cursor())
    return _page(items, cursor)


def _bool_param(name: str) -> bool:
    raw = (app.current_event.get_query_string_value(name, "false") or "false").lower()
    if raw not in ("true", "false"):
        raise BadRequestError(f"{name}: true or false")
    return raw == "true"


@app.get("/districts/<district_id>/classes")
def list_classes(district_id: str) -> dict[str, Any]:
    _district(district_id)
    settings = load_last_good(district_id)
    today = district_today(settings, runs.now_utc()) if settings else datetime.utcnow().date()
    include_hidden = _bool_param("includeHidden")
    items, cursor = roster.list_product(
        district_id,
        "classes",
        limit=_limit(),
        cursor=_cursor(),
        visible_on=None if include_hidden else today.isoformat(),
    )
    for item in items:
        # Visibility is decided when read, so a class appears on its day with no sync.
        item["visible"] = item.get("visibleFrom") is None or item["visibleFrom"] <= today.isoformat()
    return _page(items, cursor)


@app.get("/districts/<district_id>/users")
def list_users(district_id: str) -> dict[str, Any]:
    _district(district_id)
    filters: dict[str, str] = {}
    email = app.current_event.get_query_string_value("email", None)
    if email:
        filters["email"] = email.strip().lower()
    role = app.current_event.get_query_string_value("role", None)
    if role:
        if role not in PRODUCT_ROLES:
            raise BadRequestError(f"role: one of {', '.join(PRODUCT_ROLES)}")
        filters["role"] = role
    status = app.current_event.get_query_string_value("status", None)
    if status:
        if status not in ("active", "inactive"):
            raise BadRequestError("status: active or inactive")
        filters["status"] = status
    items, cursor = roster.list_product(
        district_id, "users", limit=_limit(), cursor=_cursor(), filters=filters
    )
    return _page(items, cursor)


# The push routes of `direct` sources live in their own module (imported last: it needs `app` complete).
from rostersync.api.push import router as push_router  # noqa: E402

app.include_router(push_router)
