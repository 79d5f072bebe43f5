"""pipeline/apply_read.py: a run's reading, resumed a step at a time, reads what one read does.

The mirror and product Queries are stood in by generators that honour `after` as DynamoDB's
ExclusiveStartKey does (`tests/integration/test_apply_continue.py` runs the same stages on the
moto server). Between steps the cursor goes through JSON, as a checkpoint keeps it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict
from datetime import date
from typing import Any

import pytest

from rostersync.pipeline import apply_read
from rostersync.pipeline.apply_bounded import SeenIds
from rostersync.pipeline.apply_read import ReadCursor, read_district
from rostersync.roster.compute import RosterOptions
from rostersync.roster.working_set import WorkingSet
from rostersync.store import roster

_pick = random.Random(1)
MIRROR = sorted(f"o{i:04d}" for i in _pick.sample(range(400), 200))
DRY_RUN_OWN = sorted(f"o{i:04d}" for i in _pick.sample(range(400), 150))
PRODUCT = [f"s{i:03d}" for i in range(37)]
TABLES = ("orgs", "absent", "overlay", "stored")


def _org(sid: str, name: str) -> str:
    return json.dumps({"sourcedId": sid, "status": "active", "name": name, "type": "school"})


class Source:
    """The mirror (orgs only) and the stored schools, counting the rows each Query gives."""

    def __init__(self, mirror: list[str]) -> None:
        self.mirror, self.pulled = mirror, 0

    def iter_mirror(
        self, _district: str, entity: str, *, dry_run_id: str | None = None, after: str = ""
    ) -> Iterator[tuple[str, str, str]]:
        if entity != "orgs":
            return
        for sid in DRY_RUN_OWN if dry_run_id else self.mirror:
            if sid > after:
                self.pulled += 1
                yield (
                    sid,
                    _org(sid, ("dry " if dry_run_id else "") + sid),
                    ("2|r|x" if dry_run_id else "1|p|y"),
                )

    def iter_product(self, _district: str, kind: str, *, after: str = "") -> Iterator[dict[str, Any]]:
        for sid in PRODUCT if kind == "schools" else ():
            if sid > after:
                yield {"id": sid, "name": sid}


def _read(
    source: Source, seen_ids: list[str], *, dry_run: bool, one_step: bool
) -> tuple[int, dict[str, Any]]:
    """Read to the plan, one step per "invocation" or all at once: (invocations, tables)."""
    with WorkingSet(RosterOptions(), date(2026, 1, 1)) as working_set:
        seen = SeenIds(working_set)
        seen.add_page("orgs", seen_ids)
        run = {"runId": "r", "mode": "full", "dryRun": dry_run}
        cursor, invocations = ReadCursor(stage="overlay" if dry_run else "mirror"), 1
        while True:
            steps = iter([True]) if one_step else None

            def go_on(steps: Iterator[bool] | None = steps) -> bool:
                return next(steps, False) if steps is not None else True

            if read_district("d", run, seen, cursor, go_on):
                break
            cursor = ReadCursor(**json.loads(json.dumps(asdict(cursor))))  # as a checkpoint keeps it
            invocations += 1
        assert cursor.stage == "plan"
        db = working_set.db
        return invocations, {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES}


@pytest.mark.parametrize("dry_run", [False, True], ids=["full run", "dry run"])
@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_a_read_resumed_at_every_step_fills_the_working_set_as_one_read(
    monkeypatch: pytest.MonkeyPatch, chunk: int, dry_run: bool
) -> None:
    monkeypatch.setattr(apply_read, "READ_CHUNK", chunk)
    seen_ids = sorted(set(DRY_RUN_OWN) | set(_pick.sample(MIRROR, 50)))
    results = []
    for one_step in (True, False):
        source = Source(MIRROR)
        monkeypatch.setattr(roster, "iter_mirror", source.iter_mirror)
        monkeypatch.setattr(roster, "iter_product", source.iter_product)
        results.append(_read(source, seen_ids, dry_run=dry_run, one_step=one_step))
    (stepped, tables), (once, whole) = results
    assert once == 1 and stepped > len(MIRROR) // chunk
    assert tables == whole
    assert len(whole["stored"]) == len(PRODUCT) and whole["orgs"] and whole["absent"]
    if dry_run:  # the run's own records laid over the mirror, and those it alone has
        assert {sid for sid, *_ in whole["orgs"]} == set(seen_ids)


def test_a_step_counts_the_records_a_complete_read_no_longer_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollover's full run lacks millions of records: skipping them is work too, so one step
    reads at most READ_CHUNK mirror rows, whether it loads them or notes them absent."""
    monkeypatch.setattr(apply_read, "READ_CHUNK", 10)
    source = Source([f"o{i:05d}" for i in range(1000)])
    monkeypatch.setattr(roster, "iter_mirror", source.iter_mirror)
    monkeypatch.setattr(roster, "iter_product", source.iter_product)
    with WorkingSet(RosterOptions(), date(2026, 1, 1)) as working_set:
        seen = SeenIds(working_set)
        seen.add_page("orgs", ["o00995"])  # the fetch found one school of the thousand
        cursor = ReadCursor(stage="mirror")
        steps = iter([True])
        assert not read_district(
            "d", {"runId": "r", "mode": "full"}, seen, cursor, lambda: next(steps, False)
        )
        assert source.pulled <= 10 + 1  # a chunk, and the row the Query had ready after it
        (absent,) = working_set.db.execute("SELECT COUNT(*) FROM absent").fetchone()
        assert absent == 10 and cursor.after == "o00009" and cursor.rows == 0
