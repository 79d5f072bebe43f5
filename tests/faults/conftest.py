"""Fixtures of the fault suite: a small district behind a real HTTP SIS, the
template's stack on moto, and a `Pipeline` that drives runs through the real
handlers and queues.

Source requests time out after `SOURCE_TIMEOUT_S` and back off from
`SOURCE_RETRY_BASE_S` (rostersync.config): both are shrunk here so that a
burst of retries costs milliseconds, not the minutes it may take in the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from fault_harness import DISTRICT, OPERATOR_ARN, PAGE_SIZE, REFERENCE, SOURCE_TIMEOUT_S, Pipeline, product

from rostersync import aws
from rostersync.config import get_config
from rostersync.local.demo_data import DemoDistrict, generate_district
from rostersync.local.demo_sis import DemoSis


@pytest.fixture(autouse=True)
def fast_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_TIMEOUT_S", str(SOURCE_TIMEOUT_S))
    monkeypatch.setenv("SOURCE_RETRY_BASE_S", "0.01")
    # The API's caller (fault_harness.api_event) is the deployment's operator.
    monkeypatch.setenv("OPERATOR_PRINCIPAL_ARN", OPERATOR_ARN)
    get_config.cache_clear()


@pytest.fixture
def district() -> DemoDistrict:
    # The showcase records plus two small schools: ~100 users, ~400 enrollments.
    return generate_district(district_id="demo", students_per_school=20, periods=3)


@pytest.fixture
def sis(district: DemoDistrict) -> Iterator[DemoSis]:
    with DemoSis(district) as server:
        yield server


@pytest.fixture
def pipe(
    clean_stack: dict[str, str], aws_clients: Callable[[str], Any], lambda_context: Any
) -> Iterator[Pipeline]:
    aws.reset()  # the shared clients of the handlers point at this stack
    yield Pipeline(clean_stack, aws_clients, lambda_context)
    aws.reset()


@pytest.fixture
def connect(pipe: Pipeline, sis: DemoSis) -> Callable[..., dict[str, Any]]:
    """connect(district_id=DISTRICT, **settings): the district's settings point at the SIS."""

    def go(
        district_id: str = DISTRICT, source: dict[str, Any] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        overrides.setdefault("syncMode", "full")
        return pipe.connect(
            district_id, sis.url, source={"pageSize": PAGE_SIZE, **(source or {})}, **overrides
        )

    return go


# Clean-run product states by the SIS content they came from (dateLastModified
# aside: it moves with every edit, and no product field depends on it).
_REFERENCES: dict[str, dict[str, Any]] = {}


def _content_digest(district: DemoDistrict) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for entity in ("orgs", "academicSessions", "classes", "users", "enrollments"):
        for record in district.records(entity):
            digest.update(orjson.dumps({k: v for k, v in record.items() if k != "dateLastModified"}))
    return digest.hexdigest()


@pytest.fixture
def reference(
    pipe: Pipeline, connect: Callable[..., dict[str, Any]], sis: DemoSis
) -> Callable[[], dict[str, Any]]:
    """reference(): the product a clean sync of the SIS, as it is now, gives a new
    district (computed once per SIS content)."""

    def get() -> dict[str, Any]:
        key = _content_digest(sis.district)
        if key not in _REFERENCES:
            connect(REFERENCE)
            run = pipe.sync(REFERENCE)
            assert run["status"] == "succeeded", run
            _REFERENCES[key] = product(REFERENCE)
        return _REFERENCES[key]

    return get
