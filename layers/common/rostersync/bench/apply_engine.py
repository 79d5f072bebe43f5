"""Peak memory and time of the apply engines on a synthetic district fed from generators.

    .venv/bin/python -m rostersync.bench.apply_engine --users 200000
    ... --engine memory        # compute_product + plan_kind, for comparison
    ... --tracemalloc          # also Python's own peak allocation (slower)
    ... --engine delta         # a 1 % change on a saved working set: scoped vs whole
    ... --engine staged        # as a continued apply: the reads, then the plan step alone

No DynamoDB: the mirror rows (sourcedId, JSON, version) and the stored product
items come from generators in id order, as the Queries would yield them. Each
user is enrolled in `--per-user` classes (7: 200,000 users give 1.4M
enrollments, the shape of SPEC 8's largest district at a fifth of its size).
Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Iterator
from datetime import date
from itertools import islice
from typing import Any
from unittest.mock import patch

from rostersync.bench.rss import peak_rss_mb
from rostersync.pipeline import changes
from rostersync.pipeline.bounded_changes import plan_bounded
from rostersync.roster.compute import RosterOptions, Snapshot, compute_product
from rostersync.roster.models import ENTITY_MODELS

TODAY = date(2026, 10, 1)
USERS_PER_CLASS = 25  # students per class section; one teacher each


class District:
    def __init__(
        self, users: int, per_user: int, *, username_pool: int = 100_000, shared_email_every: int = 50_000
    ) -> None:
        self.username_pool = username_pool
        self.shared_email_every = shared_email_every
        self.students = users - users // USERS_PER_CLASS
        self.teachers = users // USERS_PER_CLASS
        self.classes = self.teachers * per_user  # each teacher teaches `per_user` sections
        self.per_user = per_user
        self.schools = max(1, users // 2000)

    def school(self, n: int) -> str:
        return f"s{n % self.schools:05d}"

    def user_id(self, n: int) -> str:
        return f"u{n:08d}"

    def mirror(self, entity: str) -> Iterator[tuple[str, str, str]]:
        return getattr(self, "_" + entity)()

    def _orgs(self) -> Iterator[tuple[str, str, str]]:
        yield "d", json.dumps({"sourcedId": "d", "name": "District", "type": "district"}), "v"
        for n in range(self.schools):
            sid = self.school(n)
            yield sid, json.dumps({"sourcedId": sid, "name": f"School {n}", "type": "school"}), "v"

    def _academicSessions(self) -> Iterator[tuple[str, str, str]]:
        for sid, start in (("t1", "2026-08-20"), ("t2", "2027-01-10")):
            yield sid, json.dumps({"sourcedId": sid, "title": sid, "type": "term", "startDate": start}), "v"

    def _classes(self) -> Iterator[tuple[str, str, str]]:
        for n in range(self.classes):
            sid = f"c{n:07d}"
            doc = {
                "sourcedId": sid,
                "title": f"Class {n}",
                "classCode": f"C{n}",
                "schoolId": self.school(n // self.per_user),
                "termIds": ["t1"] if n % 5 else ["t2"],  # some start in the future: hidden
                "periods": [str(n % 8 + 1)],
            }
            yield sid, json.dumps(doc), "v"

    def _users(self) -> Iterator[tuple[str, str, str]]:
        for n in range(self.students + self.teachers):
            sid = self.user_id(n)
            teacher = n >= self.students
            email = (
                "shared@x.org" if n % self.shared_email_every == 7 else f"{sid}@x.org"
            )  # a few duplicate emails
            doc = {
                "sourcedId": sid,
                "role": "teacher" if teacher else ("parent" if n % 97 == 0 else "student"),
                "email": "" if n % 10_007 == 3 else email,
                "username": f"user{n % self.username_pool}",  # conflicts past the pool
                "givenName": f"G{n}",
                "familyName": f"F{n}",
                "enabledUser": n % 101 != 0,
                "orgIds": [self.school(n % self.classes // self.per_user)],
            }
            yield sid, json.dumps(doc), "v"

    def _enrollments(self) -> Iterator[tuple[str, str, str]]:
        e = 0
        for n in range(self.students + self.teachers):
            if n < self.students:
                classes = [(n * 7 + k * 13) % self.classes for k in range(self.per_user)]
                role = "student"
            else:
                t = n - self.students
                classes = [t * self.per_user + k for k in range(self.per_user)]
                role = "teacher"
            for k, c in enumerate(dict.fromkeys(classes)):
                sid = f"e{e:09d}"
                e += 1
                doc = {
                    "sourcedId": sid,
                    "userId": self.user_id(n),
                    "classId": f"c{c:07d}" if e % 100_003 else "c-ghost",
                    "role": role,
                    "beginDate": "2026-08-20" if k % 3 else None,
                    "endDate": "2026-09-01" if e % 211 == 0 else None,  # a few ended
                }
                yield sid, json.dumps(doc), "v"

    def stored(self, kind: str) -> Iterator[dict[str, Any]]:
        """A stored product in id order: most users as they were, a few extra to remove."""
        if kind == "users":
            for n in range(0, self.students + self.teachers, 2):
                sid = self.user_id(n)
                yield {
                    "id": sid, "sourcedId": sid, "email": f"{sid}@x.org", "username": f"{sid}@x.org",
                    "givenName": f"G{n}", "familyName": f"F{n}", "role": "Student", "status": "active",
                    "schoolIds": [self.school(n % self.classes // self.per_user)],
                }  # fmt: skip
            yield {"id": "zz-left", "sourcedId": "zz-left", "email": "u00000001@x.org", "status": "active"}
        elif kind == "enrollments":
            for e in range(0, self.students * self.per_user, 3):
                yield {"id": f"e{e:09d}", "classId": "old", "userId": "old", "role": "student"}


def changed_rows(district: District, entity: str, every: int = 100) -> list[tuple[str, str, str]]:
    """1 % of the records, changed as a night's SIS changes them: a class retitled, a user's
    family name, an enrollment ended (so its class's roster shrinks)."""
    rows = []
    for n, (sid, doc, _) in enumerate(district.mirror(entity)):
        if n % every != 1:
            continue
        record = json.loads(doc)
        if entity == "classes":
            record["title"] += " (renamed)"
        elif entity == "users":
            record["familyName"] += "-Changed"
        else:
            record["endDate"] = "2026-09-15"
        rows.append((sid, json.dumps(record), "v2"))
    return rows


def run_delta(users: int, per_user: int) -> dict[str, Any]:
    """A district computed, planned and saved; then a 1 % change laid over the saved file and
    computed twice side by side: in scope (roster/scope.py) and whole, as before it."""
    import shutil
    import tempfile

    from rostersync.pipeline.bounded_changes import plan_saved_kind
    from rostersync.roster import scope
    from rostersync.roster.working_set import WorkingSet

    district = District(users, per_user)
    options = RosterOptions(username_source=True, class_name_fields=("period", "term"))
    folder = tempfile.mkdtemp(prefix="rostersync-bench-delta-")
    saved = os.path.join(folder, "saved.sqlite")
    with WorkingSet(options, TODAY) as ws:
        plan_bounded(district.mirror, district.stored, ws)
        ws.prepare_to_save()
        shutil.copy(ws.path, saved)
    delta = {entity: changed_rows(district, entity) for entity in ("classes", "users", "enrollments")}
    figures: dict[str, Any] = {"engine": "delta", "changes": sum(len(rows) for rows in delta.values())}
    for mode in ("scoped", "whole"):
        copy = os.path.join(folder, f"{mode}.sqlite")
        shutil.copy(saved, copy)
        up_to, share = scope.SCOPED_UP_TO, scope.SCOPED_SHARE
        if mode == "whole":
            scope.SCOPED_UP_TO, scope.SCOPED_SHARE = -1, 0.0
        try:
            started = time.perf_counter()
            with WorkingSet(options, TODAY, saved=copy) as ws:
                for entity, rows in delta.items():
                    ws.change(entity, rows)
                ws.compute()
                plans = {kind: plan_saved_kind(kind, ws) for kind in changes.KINDS}
                counts = {kind: plan.counts() for kind, plan in plans.items()}
                compared = (
                    ws.db.execute("SELECT COUNT(*) FROM dirty").fetchone()[0]
                    if ws.scoped
                    else sum(sum(c.values()) for c in counts.values())
                )
            figures[mode] = {
                "seconds": round(time.perf_counter() - started, 2),
                "itemsCompared": compared,
                "counts": counts,
            }
        finally:
            scope.SCOPED_UP_TO, scope.SCOPED_SHARE = up_to, share
    shutil.rmtree(folder, ignore_errors=True)
    figures["sameOutcome"] = figures["scoped"]["counts"] == figures["whole"]["counts"]
    figures["users"] = district.students + district.teachers
    figures["enrollments"] = sum(1 for _ in district.mirror("enrollments"))
    return figures


def run_staged(users: int, per_user: int, *, resync_too: bool = False) -> dict[str, Any]:
    """The bounded engine as `pipeline/apply_read.py` runs it: the reads (mirror rows loaded,
    stored items kept in `stored`) timed apart from the plan step (compute and plan, SQLite
    only), whose time per row read is what decides if it starts in an invocation."""
    from rostersync.pipeline.apply_bounded import SeenIds, plan_read
    from rostersync.pipeline.apply_read import PLAN_S_PER_ROW, READ_CHUNK, _store
    from rostersync.roster.working_set import WorkingSet
    from rostersync.sources.base import ENTITIES

    district = District(users, per_user)
    options = RosterOptions(username_source=True, class_name_fields=("period", "term"))
    with WorkingSet(options, TODAY) as ws:
        started, rows = time.perf_counter(), 0
        for entity in ENTITIES:
            rows += sum(1 for _ in district.mirror(entity))
            ws.load(entity, district.mirror(entity))
        for kind in changes.KINDS:
            stored, after = district.stored(kind), ""
            while items := list(islice(stored, READ_CHUNK)):  # as the product stage reads
                _store(ws.db, kind, items, after)
                rows, after = rows + len(items), items[-1]["id"]
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        plan = plan_read("d", "r", SeenIds(ws), dry_run=False)
        plan_s = time.perf_counter() - started
        counts = plan.counts()
        db_bytes = os.path.getsize(ws.path)
        resync = _staged_resync(district, options, ws) if resync_too else {}
    return {
        "engine": "staged",
        "users": district.students + district.teachers,
        "enrollments": sum(1 for _ in district.mirror("enrollments")),
        "rowsRead": rows,
        "seconds": round(read_s + plan_s, 1),
        "readSeconds": round(read_s, 1),
        "planSeconds": round(plan_s, 1),
        "planSecondsPerRow": round(plan_s / rows, 9),
        "planEstimateSeconds": round(rows * PLAN_S_PER_ROW, 1),
        "counts": counts,
        "sqliteBytes": db_bytes,
        **resync,
    }


def _staged_resync(district: District, options: RosterOptions, first: Any) -> dict[str, Any]:
    """The full re-sync after it: the same mirror, and every item the first plan left stored
    (the largest plan step: XL's 8.1 M records against its 8.2 M items, all unchanged)."""
    from rostersync.pipeline.apply_bounded import SeenIds, plan_read
    from rostersync.roster.working_set import WorkingSet
    from rostersync.sources.base import ENTITIES

    with WorkingSet(options, TODAY) as ws:
        started, rows = time.perf_counter(), 0
        for entity in ENTITIES:
            rows += ws.load(entity, district.mirror(entity))
        ws.db.execute("ATTACH DATABASE ? AS first", (first.path,))
        ws.db.execute("INSERT INTO stored SELECT * FROM first.next_stored")
        ws.db.execute("DETACH DATABASE first")
        (stored,) = ws.db.execute("SELECT COUNT(*) FROM stored").fetchone()
        rows += stored
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        plan = plan_read("d", "r2", SeenIds(ws), dry_run=False)
        plan_s = time.perf_counter() - started
        unchanged = sum(kind["unchanged"] for kind in plan.counts().values())
    return {
        "resyncRowsRead": rows,
        "resyncReadSeconds": round(read_s, 1),
        "resyncPlanSeconds": round(plan_s, 1),
        "resyncPlanSecondsPerRow": round(plan_s / rows, 9),
        "resyncUnchanged": unchanged,
    }


def run(users: int, per_user: int, engine: str, *, resync: bool = False) -> dict[str, Any]:
    if engine == "delta":
        return run_delta(users, per_user)
    if engine == "staged":
        return run_staged(users, per_user, resync_too=resync)
    district = District(users, per_user)
    options = RosterOptions(username_source=True, class_name_fields=("period", "term"))
    started = time.perf_counter()
    if engine == "bounded":
        from rostersync.roster.working_set import WorkingSet

        with WorkingSet(options, TODAY) as ws:
            result = plan_bounded(district.mirror, district.stored, ws)
            counts = result.counts()
            # the writes, read back as the write phase would (streamed, not written anywhere)
            spooled = sum(1 for plan in result.kinds.values() for _ in plan.iter_updates())
            db_bytes = os.path.getsize(os.path.join(ws._dir, "working.db"))
            errors = sum(ws.error_counts().values())
    elif engine == "feed":  # the generators alone: what feeding the rows costs
        from rostersync.sources.base import ENTITIES

        for entity in ENTITIES:
            for _ in district.mirror(entity):
                pass
        for kind in changes.KINDS:
            for _ in district.stored(kind):
                pass
        counts, spooled, db_bytes, errors = {}, 0, 0, 0
    else:
        from rostersync.pipeline.apply_memory import SNAPSHOT_FIELDS

        snapshot = Snapshot(
            **{  # type: ignore[arg-type]
                name: {sid: ENTITY_MODELS[e].model_validate_json(doc) for sid, doc, _ in district.mirror(e)}
                for e, name in SNAPSHOT_FIELDS.items()
            }
        )
        state = compute_product(snapshot, options, TODAY)
        counts = {}
        for kind in changes.KINDS:
            with patch.object(changes.roster, "iter_product", lambda _d, k: district.stored(k)):
                counts[kind] = changes.plan_kind("d", kind, getattr(state, kind)).counts()
        spooled, db_bytes, errors = 0, 0, len(state.errors)
    seconds = round(time.perf_counter() - started, 1)
    enrollments = sum(1 for _ in district.mirror("enrollments"))
    return {
        "engine": engine,
        "users": district.students + district.teachers,
        "classes": district.classes,
        "enrollments": enrollments,
        "seconds": seconds,
        "errors": errors,
        "counts": counts,
        "spooledUpdates": spooled,
        "sqliteBytes": db_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--per-user", type=int, default=7)
    parser.add_argument(
        "--engine", choices=["bounded", "memory", "feed", "delta", "staged"], default="bounded"
    )
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--resync", action="store_true", help="staged: also a full re-sync's plan step")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start()
    figures = run(args.users, args.per_user, args.engine, resync=args.resync)
    if args.tracemalloc:
        figures["tracemallocPeakMB"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    # VmHWM (bench/worker.py): ru_maxrss would carry over the bench process's own peak
    figures["peakRssMB"] = round(peak_rss_mb(), 1)
    json.dump(figures, sys.stdout)
    print()


if __name__ == "__main__":
    main()
