"""Time and dates with an injected clock (SPEC 4): an ended enrollment drops off
its class at the next run; a future class appears on its day with no run."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from rostersync.api import app as api_app
from rostersync.pipeline import transform
from rostersync.pipeline.apply import apply_run
from rostersync.settings.model import parse_settings
from rostersync.staging.layout import PageRef
from rostersync.staging.pages import put_json
from rostersync.store import runs
from rostersync.store.settings import save_last_good

START = date(2027, 1, 10)  # the future class's first day
ENDS = date(2026, 12, 1)  # the ended enrollment's last day


def _enrollment(sourced_id: str, user: str, cls: str, role: str, **dates: str) -> dict[str, Any]:
    refs = {"user": {"sourcedId": user}, "class": {"sourcedId": cls}}
    return {"sourcedId": sourced_id, **refs, "role": role, **dates}


def _district() -> dict[str, list[dict[str, Any]]]:
    school = {"sourcedId": "sch", "sourcedIdType": "org"}
    fall = {"sourcedId": "fall", "title": "Fall 2026", "type": "term"}
    return {
        "orgs": [{"sourcedId": "sch", "name": "Lincoln High", "type": "school"}],
        "academicSessions": [fall | {"startDate": "2026-08-20", "endDate": "2026-12-20"}],
        "classes": [
            {"sourcedId": "now", "title": "Biology", "school": school, "terms": [{"sourcedId": "fall"}]},
            {"sourcedId": "later", "title": "Robotics", "school": school, "terms": [{"sourcedId": "fall"}]},
        ],
        "users": [
            {"sourcedId": "stu", "role": "student", "email": "stu@lincoln.k12.us", "orgs": [school]},
            {"sourcedId": "tch", "role": "teacher", "email": "tch@lincoln.k12.us", "orgs": [school]},
        ],
        "enrollments": [
            _enrollment("e1", "stu", "now", "student", endDate=ENDS.isoformat()),
            _enrollment("e2", "tch", "now", "teacher"),
            _enrollment("e3", "tch", "later", "teacher", beginDate=START.isoformat()),
        ],
    }


def _sync(district_id: str, on: date) -> dict[str, Any]:
    moment = datetime(on.year, on.month, on.day, 15, 0, tzinfo=UTC)
    run_id = runs.start_run(district_id, trigger="api", mode="full", moment=moment)["runId"]
    runs.update_run(district_id, run_id, status="running", mode="full", fetchStartedAt=runs.iso(moment))
    refs = []
    for entity, records in _district().items():
        ref = PageRef(district_id, run_id, entity, 0)
        put_json(ref.key, {"entity": entity, "page": 0, "records": records})
        refs.append(ref)
    runs.finish_fetch(district_id, run_id, len(refs))
    for ref in refs:
        transform.transform_page(ref)
    apply_run(district_id, run_id, now=moment)
    run = runs.get_run(district_id, run_id)
    assert run is not None and run["status"] == "succeeded", run
    return run


def _classes(
    district_id: str, on: date, lambda_context: Any, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setattr(runs, "now_utc", lambda: datetime(on.year, on.month, on.day, 15, 0, tzinfo=UTC))
    event = {
        "httpMethod": "GET",
        "path": f"/districts/{district_id}/classes",
        "resource": "/districts/{id}/classes",
        "queryStringParameters": None,
        "headers": {},
        "requestContext": {
            "stage": "v1",
            "identity": {"userArn": "arn:aws:iam::123456789012:user/rostersync-operator"},
        },
        "body": None,
    }
    answer = api_app.app.resolve(event, lambda_context)
    return {c["id"]: c for c in json.loads(answer["body"])["items"]}


@pytest.fixture
def district_id(aws_stack: dict[str, str]) -> str:
    district_id = f"clock-{uuid.uuid4().hex[:8]}"
    settings = parse_settings(json.dumps({"source": {"type": "direct"}, "timezone": "UTC"}))
    save_last_good(district_id, settings, 1, parameter_modified_at=datetime.now(UTC))
    return district_id


def test_a_future_class_appears_on_its_day_with_no_run_in_between(district_id, lambda_context, monkeypatch):
    _sync(district_id, on=date(2026, 11, 20))
    visible_from = START - timedelta(days=15)

    day_before = _classes(district_id, visible_from - timedelta(days=1), lambda_context, monkeypatch)
    assert "later" not in day_before and "now" in day_before

    on_the_day = _classes(district_id, visible_from, lambda_context, monkeypatch)
    assert on_the_day["later"]["visible"] is True
    assert on_the_day["later"]["visibleFrom"] == visible_from.isoformat()
    assert on_the_day["later"]["startDate"] == START.isoformat()


def test_an_ended_enrollment_drops_off_at_the_next_run(district_id, lambda_context, monkeypatch):
    _sync(district_id, on=ENDS)  # its last day: still on the class
    assert _classes(district_id, ENDS, lambda_context, monkeypatch)["now"]["studentIds"] == ["stu"]

    run = _sync(district_id, on=ENDS + timedelta(days=1))
    assert (
        _classes(district_id, ENDS + timedelta(days=1), lambda_context, monkeypatch)["now"]["studentIds"]
        == []
    )
    assert run["counts"]["classes"]["updated"] == 1
    assert run["counts"]["enrollments"]["deleted"] == 1
