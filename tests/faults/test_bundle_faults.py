"""A CSV bundle whose run fails is not spent: the next run reads it again.

An SFTP source offers the newest bundle the district has not processed. The
bundle counts as processed only once its run has applied it, so an apply that
fails (here: the apply function crashes once) leaves it to the next run, and
nothing of the bundle is lost. The bundle itself is a real OneRoster CSV zip
read by the real reader; only its download (SFTP, proven in
tests/integration/test_sftp.py) is replaced by a local file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fault_harness import Pipeline, product

from rostersync.local.demo_csv import write_bundle
from rostersync.local.demo_data import generate_district
from rostersync.pipeline import apply, fetch
from rostersync.pipeline.queues import RunMessage
from rostersync.sources.oneroster_csv import OneRosterCsvBundle
from rostersync.store import runs

BUNDLE = "roster-2026-11-30.zip"
CSV_DISTRICT = "bundled"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    district = generate_district(district_id=CSV_DISTRICT, students_per_school=10, periods=2)
    return write_bundle(district, tmp_path / BUNDLE)


def _factory(bundle: Path, offered: list[frozenset[str]]) -> Any:
    def build(source: dict[str, Any], credentials: dict[str, Any], **kw: Any) -> OneRosterCsvBundle:
        # What fetch_newest_bundle does: skip the processed, offer the newest other.
        offered.append(kw["processed_bundles"])
        kw["message"].checkpoint["bundleName"] = BUNDLE
        return OneRosterCsvBundle(bundle, page_size=50)

    return build


def _run(pipe: Pipeline, bundle: Path, offered: list[frozenset[str]]) -> dict[str, Any]:
    run_id = runs.start_run(CSV_DISTRICT, trigger="schedule", mode=None)["runId"]
    message = RunMessage(districtId=CSV_DISTRICT, trigger="schedule", runId=run_id)
    assert fetch.handle_run_message(message, connector_factory=_factory(bundle, offered)) == run_id
    return pipe.drive(CSV_DISTRICT, run_id)


def test_a_bundle_whose_apply_fails_is_read_again_by_the_next_run(
    pipe: Pipeline, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"source": {"type": "oneroster-csv"}, "timezone": "America/Chicago"}
    pipe.clients("ssm").put_parameter(
        Name=f"/rostersync/districts/{CSV_DISTRICT}/settings",
        Type="String",
        Value=json.dumps(settings),
        Overwrite=True,
    )
    assert pipe.settings_event(CSV_DISTRICT, "Update")["action"] == "applied"
    offered: list[frozenset[str]] = []

    # Given an apply that crashes once
    real = apply.plan_read
    crashes = iter([True])

    def crash_once(*args: Any, **kwargs: Any) -> Any:
        if next(crashes, False):
            raise RuntimeError("apply crashed")
        return real(*args, **kwargs)

    monkeypatch.setattr(apply, "plan_read", crash_once)

    # When the bundle's first run fails in apply
    failed = _run(pipe, bundle, offered)
    assert failed["status"] == "failed"
    assert "product was not changed" in failed["message"]
    assert BUNDLE not in (runs.get_district(CSV_DISTRICT).get("processedBundles") or [])
    assert all(not items for items in product(CSV_DISTRICT).values())

    # Then the next run is offered the same bundle, applies it, and only then spends it
    done = _run(pipe, bundle, offered)
    assert done["status"] == "succeeded"
    assert offered[1] == offered[0] and BUNDLE not in offered[1]
    assert BUNDLE in runs.get_district(CSV_DISTRICT)["processedBundles"]
    users = product(CSV_DISTRICT)["users"]
    assert len(users) >= 20 and done["counts"]["users"]["created"] == len(users)
