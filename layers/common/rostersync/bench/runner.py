"""`rostersync bench`: the real pipeline on synthetic districts, measured (docs/benchmarks.md).

Per size: a fresh emulator (moto server, child process, counting item writes),
template.yaml deployed onto it, a district generated and served over HTTP by
the demo SIS, one worker process per function (fetch, transform x N, apply)
polling the template's queues, and three runs: a full sync, the same full sync
again with nothing changed, and an incremental run after 1 % of the records
changed in the SIS. Then floors on the same emulator and data: direct batch
writes of as many items as the full sync wrote, the transform's CPU path
against plain `orjson.loads` on the staged pages, and the connector's paging
with and without concurrency at 100 ms per page.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from rostersync.local.functions import REPO_ROOT

Say = Callable[[str], None]

# Shapes: enrollments / users ~ 7 (a student takes 6-7 classes; teachers few).
SIZES: dict[str, dict[str, int]] = {
    "T": {"schools": 2, "students_per_school": 12, "periods": 3},  # tiny: the test's
    "S": {"schools": 4, "students_per_school": 1200, "periods": 7},  # ~5k users / 35k enrollments
    "M": {"schools": 20, "students_per_school": 2400, "periods": 7},  # ~51k / 349k
    "XL": {"schools": 400, "students_per_school": 2400, "periods": 7},  # ~1.01M / 6.99M
}
DEFAULT_SIZES = ("S", "M")
FINAL = {"succeeded", "failed", "halted", "previewed"}
FUNCTIONS = ("fetch_roster", "transform_page", "apply_run")
DELTA_FRACTION = 0.01
FETCH_LATENCY_S = 0.1
LAMBDA_LIMIT_S = 900
RSS_TARGET_MB = 512
# Sizes up to this many records also run a full run whose apply continues (M would add ~30 min)
CONTINUED_UP_TO = 100_000


@dataclass
class BenchOptions:
    sizes: tuple[str, ...] = DEFAULT_SIZES
    page_size: int = 1000
    latency_s: float = 0.0
    transform_workers: int = 2
    fetch_concurrency: int = 8
    fetch_page_size: int = 100
    fetch_pages: int = 200  # an entity of 200 pages: M has 350 pages of enrollments
    run_timeout_s: float = 3600
    # The apply engines on synthetic districts without DynamoDB (bench/apply_engine.py):
    # both engines at these users, and the bounded one at XL's (0: skipped).
    engine_users: int = 50_000
    engine_xl_users: int = 1_000_000
    out: Path = field(default_factory=lambda: Path("bench-results.json"))


# -- child processes ---------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: end with the bench process, however it ends (Linux).

    Only a call into libc, resolved in the parent (no import, no allocation here).
    """
    if _PRCTL is not None:
        _PRCTL(1, 15)  # PR_SET_PDEATHSIG, SIGTERM


try:
    _PRCTL: Any = ctypes.CDLL(None).prctl
except (OSError, AttributeError):  # not Linux: children still end when their stdin closes
    _PRCTL = None


class Emulator:
    """The moto server child (`rostersync.bench.emulator`)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rostersync.bench.emulator"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            preexec_fn=_die_with_parent,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()

    def _ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
            return json.loads(self.process.stdout.readline())  # type: ignore[no-any-return]

    def reset(self) -> None:
        self._ask("reset")

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def stop(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Worker:
    """One function's process (`rostersync.bench.worker`), its reports gathered in a thread."""

    def __init__(self, function_dir: str, queue_url: str, *, batch: int, partial: bool, env: dict[str, str]):
        args = [sys.executable, "-m", "rostersync.bench.worker", function_dir, queue_url, f"--batch={batch}"]
        if partial:
            args.append("--partial")
        self.function = function_dir
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
            preexec_fn=_die_with_parent,
        )
        self.reports: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if not line.startswith('{"function"'):
                continue  # the handlers' own log lines
            report = json.loads(line)
            if report.get("ready"):
                self.ready.set()
            else:
                self.reports.append(report)

    def stop(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)


# -- the stack ---------------------------------------------------------------------


def _deploy(emulator: Emulator) -> dict[str, str]:
    from rostersync import aws
    from rostersync.config import get_config
    from rostersync.local.deploy import deploy_stack, env_from_outputs
    from rostersync.local.stack import LOCAL_AWS_ENV

    os.environ.update(LOCAL_AWS_ENV)
    os.environ["AWS_ENDPOINT_URL"] = emulator.url
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    outputs = deploy_stack(emulator.url, template_path=REPO_ROOT / "template.yaml")
    os.environ.update(env_from_outputs(outputs))
    get_config.cache_clear()
    aws.reset()
    return outputs


def _start_workers(outputs: dict[str, str], transform_workers: int) -> list[Worker]:
    from rostersync.config import get_config

    config = get_config()
    env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING"}
    workers = [
        Worker("fetch_roster", config.run_queue_url, batch=1, partial=False, env=env),
        *(
            Worker("transform_page", outputs["StagingQueueUrl"], batch=10, partial=True, env=env)
            for _ in range(transform_workers)
        ),
        _apply_worker(env, wait=False),
    ]
    for worker in workers:
        _ready(worker)
    return workers


def _apply_worker(env: dict[str, str], *, wait: bool = True) -> Worker:
    from rostersync.config import get_config

    worker = Worker("apply_run", get_config().apply_queue_url, batch=1, partial=False, env=env)
    if wait:
        _ready(worker)
    return worker


def _ready(worker: Worker) -> None:
    if not worker.ready.wait(120):
        raise RuntimeError(f"worker {worker.function} did not start")


def _configure_district(emulator: Emulator, district_id: str, sis_url: str, page_size: int) -> None:
    from rostersync.local.demo import demo_settings, write_settings
    from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
    from rostersync.local.functions import load_handler
    from rostersync.local.wiring import SettingsWatcher
    from rostersync.store.settings import load_last_good

    settings = demo_settings(sis_url)
    settings["source"]["credentialsParameter"] = f"/rostersync/districts/{district_id}/credentials"
    settings["source"]["pageSize"] = page_size
    write_settings(
        emulator.url, district_id, settings, {"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET}
    )
    # The settings function, fed the Parameter Store Change event as the stack's watcher does.
    watcher = SettingsWatcher("/rostersync/districts/", load_handler("settings_changed"), threading.Event())
    watcher.poll_once()
    if load_last_good(district_id) is None:
        raise RuntimeError("the benchmark's settings were refused")


# -- runs --------------------------------------------------------------------------


def _run(
    emulator: Emulator,
    workers: list[Worker],
    district_id: str,
    mode: str,
    say: Say,
    timeout_s: float,
) -> dict[str, Any]:
    """One run, started as the API starts it; its timings from the workers' reports."""
    from rostersync.pipeline.queues import RunMessage, send_run_message
    from rostersync.store import runs

    emulator.reset()
    cpu_before = emulator.stats()["cpu_s"]
    sent = time.time()
    run_id = runs.start_run(district_id, trigger="api", mode=mode)["runId"]
    send_run_message(RunMessage(districtId=district_id, runId=run_id, trigger="api", mode=mode))  # type: ignore[arg-type]
    last_note = time.monotonic()
    while True:
        run = runs.get_run(district_id, run_id) or {}
        if run.get("status") in FINAL:
            break
        if time.time() - sent > timeout_s:
            raise RuntimeError(f"{mode} run did not finish in {timeout_s:.0f} s (status {run.get('status')})")
        if time.monotonic() - last_note > 15:
            last_note = time.monotonic()
            say(
                f"    ... {time.time() - sent:.0f} s: {run.get('status')}, "
                f"pages {run.get('pagesDone', 0)}/{run.get('pagesTotal', '?')}"
            )
        time.sleep(0.25)
    # The apply worker reports its invocation just after the run record turns final (each of
    # them, when the apply continued across invocations).
    apply_worker = next(w for w in workers if w.function == "apply_run")
    wanted = int(run.get("applyInvocations") or 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(r["start"] >= sent for r in apply_worker.reports) < wanted:
        time.sleep(0.1)
    reports = [r for w in workers for r in w.reports if r["start"] >= sent]
    functions = _function_figures(reports)
    starts = [r["start"] for r in reports if r["function"] == "fetch_roster"]
    ends = [r["end"] for r in reports if r["function"] == "apply_run"]
    stats = emulator.stats()
    writes = stats["writes"]
    return {
        "runId": run_id,
        "status": run["status"],
        "counts": _plain(run.get("counts") or {}),
        "pages": int(run.get("pagesTotal") or 0),
        "seconds": round((max(ends) if ends else time.time()) - (min(starts) if starts else sent), 3),
        "item_writes": writes.get("mirror", 0) + writes.get("product", 0),
        "mirror_writes": writes.get("mirror", 0),
        "product_writes": writes.get("product", 0),
        "bookkeeping_writes": writes.get("bookkeeping", 0),
        # Mirror and product items read (Query, GetItem, BatchGetItem): what a run costs in reads
        "item_reads": stats.get("reads", {}).get("mirror", 0) + stats.get("reads", {}).get("product", 0),
        "apply_read": _plain(run.get("applyRead") or {}),
        "functions": functions,
        "emulator_rss_mb": round(stats["rss_mb"], 1),
        # CPU seconds the emulator spent on this run: where the time of a run goes here.
        "emulator_cpu_s": round(stats["cpu_s"] - cpu_before, 1),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "as_integer_ratio") and not isinstance(value, (int, float)):
        return int(value) if value == int(value) else float(value)
    return value


def _function_figures(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for name in FUNCTIONS:
        mine = [r for r in reports if r["function"] == name]
        durations = [r["end"] - r["start"] for r in mine]
        figures[name] = {
            "invocations": len(mine),
            "max_s": round(max(durations), 3) if durations else 0.0,
            "total_s": round(sum(durations), 3),
            "cpu_s": round(sum(r.get("cpu_s", 0.0) for r in mine), 3),
            "peak_rss_mb": max((r["peak_rss_mb"] for r in mine), default=0.0),
        }
    return figures


def change_one_percent(district: Any, fraction: float = DELTA_FRACTION, seed: int = 5) -> int:
    """Change `fraction` of the classes, users and enrollments in the SIS; returns how many."""
    chooser = random.Random(seed)
    later = (datetime.now(UTC).date() + timedelta(days=120)).isoformat()
    changed = 0
    for entity, change in (
        ("classes", lambda r: {"title": r["title"] + " (B)"}),
        ("users", lambda r: {"familyName": r["familyName"] + "-Lee"}),
        ("enrollments", lambda r: {"endDate": later}),
    ):
        records = district.records(entity)
        count = max(1, round(len(records) * fraction))
        for record in chooser.sample(records, count):
            district.touch(entity, record["sourcedId"], **change(record))
            changed += 1
    return changed


def delta_run(
    emulator: Emulator,
    workers: list[Worker],
    district: Any,
    district_id: str,
    options: BenchOptions,
    say: Say,
    *,
    seed: int,
    whole: bool,
) -> dict[str, Any]:
    """Change 1 % of the district in the SIS, then an incremental run; with `whole`, the
    working set the last run saved is forgotten first, so the apply reads the district whole."""
    from rostersync.store import runs

    size = district_id.removeprefix("bench-").upper()
    changes = change_one_percent(district, seed=seed)
    if whole:
        runs.set_apply_state(district_id, None)
    how = "reading the district whole" if whole else "on the saved working set"
    say(f"[{size}] {changes:,} records changed in the SIS; incremental run {how}...")
    delta = _run(emulator, workers, district_id, "incremental", say, options.run_timeout_s)
    delta["changes"] = changes
    say(
        f"[{size}] delta {how}: {delta['item_writes']:,} item writes for {changes:,} changes in "
        f"{delta['seconds']:.1f} s ({delta['item_reads']:,} items read; "
        f"apply {delta['functions']['apply_run']['max_s']:.1f} s)"
    )
    return delta


def continued_run(
    emulator: Emulator,
    workers: list[Worker],
    district: Any,
    district_id: str,
    options: BenchOptions,
    say: Say,
    apply_s: float,
) -> dict[str, Any]:
    """A full run after a 1 % change whose apply may spend a fifth of the uninterrupted full
    sync's apply time per invocation (`APPLY_TIME_BUDGET_S`, in a restarted apply worker): its
    reading and writes continue across invocations. Then an uninterrupted full run must find
    nothing left to write: the continued run left the product it would have."""
    size = district_id.removeprefix("bench-").upper()
    # A fifth of the uninterrupted apply; a tiny district's (the smoke test's) gets no time at
    # all, a step per invocation, so that it continues whatever the machine's speed
    budget = round(apply_s / 5, 2) if apply_s >= 5 else 0.0
    changes = change_one_percent(district, seed=7)
    index = next(i for i, w in enumerate(workers) if w.function == "apply_run")

    def restart(extra: dict[str, str]) -> None:
        workers[index].stop()
        workers[index] = _apply_worker({**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING", **extra})

    say(f"[{size}] {changes:,} records changed; full run, its apply at most {budget} s per invocation...")
    restart({"APPLY_TIME_BUDGET_S": str(budget)})
    try:
        run = _run(emulator, workers, district_id, "full", say, options.run_timeout_s)
    finally:
        restart({})
    check = _run(emulator, workers, district_id, "full", say, options.run_timeout_s)
    apply = run["functions"]["apply_run"]
    figures = {
        "budget_s": budget,
        "uninterrupted_apply_s": apply_s,
        "changes": changes,
        "status": run["status"],
        "seconds": run["seconds"],
        "item_writes": run["item_writes"],
        "apply_invocations": apply["invocations"],
        "apply_max_s": apply["max_s"],
        "apply_total_s": apply["total_s"],
        "apply_peak_rss_mb": apply["peak_rss_mb"],
        "then_uninterrupted_item_writes": check["item_writes"],
    }
    say(
        f"[{size}] continued full run {run['status']}: {apply['invocations']} apply invocations, longest "
        f"{apply['max_s']:.1f} s (uninterrupted {apply_s:.1f} s), {run['item_writes']:,} item writes; "
        f"the uninterrupted full run after it: {check['item_writes']} item writes"
    )
    return figures


# -- floors ------------------------------------------------------------------------


def write_floor(district_id: str, count: int, threads: int = 4) -> dict[str, Any]:
    """Write `count` items shaped like the sync's own (sampled from it) with plain batch writes."""
    from rostersync import aws
    from rostersync.bench.emulator import FLOOR_PREFIX
    from rostersync.config import get_config
    from rostersync.store import keys
    from rostersync.store.roster import PRODUCT_KIND

    name = get_config().roster_table_name
    table = aws.table(name)
    samples: list[dict[str, Any]] = []
    partitions = [keys.source_pk(district_id, e) for e in ("users", "enrollments", "classes")]
    partitions += [keys.product_pk(district_id, k) for k in PRODUCT_KIND.values()]
    for pk in partitions:
        answer = table.query(
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": pk}, Limit=50
        )
        samples += answer["Items"]
    if not samples or count <= 0:
        return {"items": 0, "seconds": 0.0, "items_per_s": 0.0}

    import boto3

    # One table resource per thread (boto3 resources are not thread-safe), built before the clock starts.
    tables = [boto3.session.Session().resource("dynamodb").Table(name) for _ in range(threads)]

    def write(part: int) -> None:
        with tables[part].batch_writer() as batch:
            for i in range(part, count, threads):
                item = dict(samples[i % len(samples)])
                item["pk"], item["sk"] = f"{FLOOR_PREFIX}{part}", f"{i:09d}"
                item.pop("gsi1pk", None)
                item.pop("gsi1sk", None)
                batch.put_item(Item=item)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(threads)))
    seconds = time.perf_counter() - started
    return {"items": count, "seconds": round(seconds, 3), "items_per_s": round(count / seconds, 1)}


def staged_pages(district_id: str, run_id: str) -> list[tuple[str, bytes]]:
    from rostersync import aws
    from rostersync.config import get_config
    from rostersync.staging.layout import parse_page_key, run_prefix

    s3, bucket = aws.client("s3"), get_config().staging_bucket_name
    keys_: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=run_prefix(district_id, run_id)
    ):
        keys_ += [o["Key"] for o in page.get("Contents", []) if parse_page_key(o["Key"]) is not None]

    def get(key: str) -> tuple[str, bytes]:
        return key, s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(get, sorted(keys_)))


def transform_cpu(pages: list[tuple[str, bytes]], repeat: int = 3) -> dict[str, Any]:
    """The transform's CPU path (parse, normalize, serialize + hash) against parse alone."""
    from rostersync.pipeline.transform import mirror_doc, normalize_page
    from rostersync.staging.layout import parse_page_key

    refs = [(parse_page_key(key), raw) for key, raw in pages]
    records = sum(len(orjson.loads(raw).get("records") or []) for _, raw in pages)

    def parse() -> None:
        for _, raw in refs:
            orjson.loads(raw)

    def transform() -> None:
        for ref, raw in refs:
            assert ref is not None
            body = orjson.loads(raw)
            kept, _rejected = normalize_page(ref.entity, body.get("records") or [], ref.name)
            for record in kept:
                mirror_doc(record, ref.run_id)

    def best(step: Callable[[], None]) -> float:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        return min(times)

    parse_s, transform_s = best(parse), best(transform)
    return {
        "pages": len(pages),
        "records": records,
        "bytes": sum(len(raw) for _, raw in pages),
        "parse_s": round(parse_s, 4),
        "transform_s": round(transform_s, 4),
        "parse_floor_records_per_s": round(records / parse_s, 1) if parse_s else 0.0,
        "transform_records_per_s": round(records / transform_s, 1) if transform_s else 0.0,
    }


def fetch_rates(sis: Any, *, page_size: int, pages: int, concurrency: int) -> dict[str, Any]:
    """Pages per second of the OneRoster REST connector at FETCH_LATENCY_S per page."""
    from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
    from rostersync.sources.oneroster_rest import OneRosterRestConnector

    def rate(workers: int) -> dict[str, Any]:
        connector = OneRosterRestConnector(
            base_url=sis.v1p1_url,
            version="1.1",
            auth="oauth2",
            token_url=sis.token_url,
            client_id=DEMO_CLIENT_ID,
            client_secret=DEMO_CLIENT_SECRET,
            page_size=page_size,
            concurrency=workers,
        )
        with connector:
            next(iter(connector.pages("orgs")))  # the token, outside the timing
            started = time.perf_counter()
            count = 0
            generator = connector.pages("enrollments")
            for _page in generator:
                count += 1
                if count >= pages:
                    generator.close()
                    break
            seconds = time.perf_counter() - started
        return {
            "concurrency": workers,
            "pages": count,
            "seconds": round(seconds, 3),
            "pages_per_s": round(count / seconds, 2),
        }

    before = sis.latency_s
    sis.latency_s = FETCH_LATENCY_S
    try:
        sequential, concurrent = rate(1), rate(concurrency)
    finally:
        sis.latency_s = before
    return {
        "latency_s": FETCH_LATENCY_S,
        "page_size": page_size,
        "sequential": sequential,
        "concurrent": concurrent,
    }


# -- one size ----------------------------------------------------------------------


def _record_counts(district: Any) -> dict[str, int]:
    from rostersync.local.demo_data import ENTITY_NAMES

    return {entity: len(district.records(entity)) for entity in ENTITY_NAMES}


def bench_size(
    size: str,
    options: BenchOptions,
    say: Say,
    *,
    full_only: bool = False,
    checkpoint: Callable[[dict[str, Any]], None] = lambda _result: None,
) -> dict[str, Any]:
    from rostersync.local.demo_data import generate_district
    from rostersync.local.demo_sis import DemoSis

    shape = SIZES[size]
    district_id = f"bench-{size.lower()}"
    result: dict[str, Any] = {"shape": shape}
    emulator = Emulator()
    sis = None
    workers: list[Worker] = []
    try:
        say(f"[{size}] emulator on :{emulator.port}; deploying template.yaml")
        outputs = _deploy(emulator)
        started = time.perf_counter()
        district = generate_district(
            district_id=district_id,
            schools=shape["schools"],
            students_per_school=shape["students_per_school"],
            periods=shape["periods"],
        )
        counts = _record_counts(district)
        result.update(
            users=counts["users"],
            enrollments=counts["enrollments"],
            records=sum(counts.values()),
            record_counts=counts,
            generate_s=round(time.perf_counter() - started, 2),
        )
        say(
            f"[{size}] district: {counts['users']:,} users, {counts['enrollments']:,} enrollments, "
            f"{result['records']:,} records (generated in {result['generate_s']} s)"
        )
        sis = DemoSis(district, latency_s=options.latency_s).start()
        _configure_district(emulator, district_id, sis.url, options.page_size)
        workers = _start_workers(outputs, options.transform_workers)
        result["emulator_rss_before_mb"] = round(emulator.stats()["rss_mb"], 1)

        say(f"[{size}] full sync...")
        full = _run(emulator, workers, district_id, "full", say, options.run_timeout_s)
        full["records_per_s"] = round(result["records"] / full["seconds"], 1) if full["seconds"] else 0.0
        full["items_written_per_s"] = (
            round(full["item_writes"] / full["seconds"], 1) if full["seconds"] else 0.0
        )
        result["full"] = full
        say(
            f"[{size}] full sync {full['status']} in {full['seconds']:.1f} s: {full['records_per_s']:,.0f} records/s, "
            f"{full['item_writes']:,} item writes"
        )
        result["completed"] = full["status"] == "succeeded"
        checkpoint(result)
        if full_only:
            return result

        say(f"[{size}] write floor: {full['item_writes']:,} items by direct batch writes...")
        before = emulator.stats()["rss_mb"]
        floor = write_floor(district_id, full["item_writes"])
        after = emulator.stats()["rss_mb"]
        floor["emulator_bytes_per_item"] = (
            round((after - before) * 1024 * 1024 / floor["items"]) if floor["items"] else 0
        )
        result["write_floor"] = floor
        say(
            f"[{size}] write floor: {floor['items_per_s']:,.0f} items/s; emulator {floor['emulator_bytes_per_item']} B/item"
        )

        say(f"[{size}] transform CPU vs parse floor on the staged pages...")
        pages = staged_pages(district_id, full["runId"])
        result["transform_cpu"] = transform_cpu(pages, repeat=3 if result["records"] < 100_000 else 2)
        del pages
        tc = result["transform_cpu"]
        say(
            f"[{size}] transform {tc['transform_records_per_s']:,.0f} records/s, "
            f"parse floor {tc['parse_floor_records_per_s']:,.0f} records/s"
        )

        say(f"[{size}] fetch paging at {FETCH_LATENCY_S * 1000:.0f} ms per page, sequential vs concurrent...")
        result["fetch"] = fetch_rates(
            sis,
            page_size=options.fetch_page_size,
            pages=options.fetch_pages,
            concurrency=options.fetch_concurrency,
        )
        checkpoint(result)

        say(f"[{size}] full re-sync, nothing changed...")
        result["resync"] = _run(emulator, workers, district_id, "full", say, options.run_timeout_s)
        say(
            f"[{size}] re-sync: {result['resync']['item_writes']} item writes in {result['resync']['seconds']:.1f} s"
        )

        checkpoint(result)
        # A 1 % delta on the working set the re-sync saved; then another, with it forgotten
        for key, seed, whole in (("delta", 5, False), ("delta_whole_read", 6, True)):
            result[key] = delta_run(
                emulator, workers, district, district_id, options, say, seed=seed, whole=whole
            )
            checkpoint(result)

        if result["records"] <= CONTINUED_UP_TO:
            result["continued"] = continued_run(
                emulator,
                workers,
                district,
                district_id,
                options,
                say,
                full["functions"]["apply_run"]["max_s"],
            )
            checkpoint(result)

        result["emulator_rss_after_mb"] = round(emulator.stats()["rss_mb"], 1)
        return result
    finally:
        for worker in workers:
            worker.stop()
        if sis is not None:
            sis.stop()
        emulator.stop()


# -- XL ----------------------------------------------------------------------------


def _available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def xl_estimate(measured: dict[str, Any]) -> dict[str, Any]:
    """XL's emulator memory, scaled from a measured size's items and bytes per item."""
    shape = SIZES["XL"]
    scale = (shape["schools"] * shape["students_per_school"]) / (
        measured["shape"]["schools"] * measured["shape"]["students_per_school"]
    )
    items = measured["full"]["item_writes"] * scale
    per_item = measured["write_floor"]["emulator_bytes_per_item"]
    # The staged pages stay in the emulator's S3 too (no lifecycle expiry there).
    staged_mb = measured.get("transform_cpu", {}).get("bytes", 0) * scale / 1024 / 1024
    return {
        "items": int(items),
        "bytes_per_item": per_item,
        "emulator_mb": round(items * per_item / 1024 / 1024 + staged_mb),
        "available_mb": round(_available_mb()),
    }


def bench_xl_shape() -> dict[str, Any]:
    """XL's counts, by demo_data's formulas (the district is only built if XL is attempted)."""
    shape = SIZES["XL"]
    sections = math.ceil(shape["students_per_school"] / 25)
    teachers = math.ceil(shape["periods"] * sections / 5)
    return {
        "users": shape["schools"] * (shape["students_per_school"] + teachers) + 19,
        "enrollments": shape["schools"]
        * (shape["students_per_school"] * shape["periods"] + shape["periods"] * sections)
        + 45,
        "max_function_s": None,
        "peak_rss_mb": None,
    }


def bench_xl(options: BenchOptions, measured: dict[str, Any] | None, say: Say) -> dict[str, Any]:
    xl: dict[str, Any] = {
        **bench_xl_shape(),
        "completed": False,
        "attempted": "XL" in options.sizes,
    }
    if measured is not None and "write_floor" in measured:
        xl["estimate"] = xl_estimate(measured)
    estimate = xl.get("estimate")
    if not xl["attempted"]:
        xl["reason"] = "not attempted (opt in with BENCH_SIZES=S,M,XL)" + (
            f"; the emulator keeps {estimate['bytes_per_item']} B per DynamoDB item, so XL's "
            f"{estimate['items']:,} items need ~{estimate['emulator_mb'] / 1024:.1f} GiB in the emulator alone "
            f"({estimate['available_mb'] / 1024:.1f} GiB available)"
            if estimate
            else ""
        )
        return xl
    if estimate and estimate["emulator_mb"] > estimate["available_mb"]:
        xl["attempted"] = False
        xl["reason"] = (
            f"not attempted: the emulator keeps {estimate['bytes_per_item']} B per DynamoDB item, so XL's "
            f"{estimate['items']:,} items need ~{estimate['emulator_mb'] / 1024:.1f} GiB, "
            f"more than the {estimate['available_mb'] / 1024:.1f} GiB available"
        )
        say(f"[XL] {xl['reason']}")
        return xl
    try:
        result = bench_size("XL", options, say, full_only=True)
    except Exception as error:  # a benchmark reports a failure, it does not hide it
        xl["reason"] = f"failed: {type(error).__name__}: {error}"
        return xl
    functions = result["full"]["functions"]
    xl.update(
        users=result["users"],
        enrollments=result["enrollments"],
        completed=bool(result["completed"]),
        seconds=result["full"]["seconds"],
        max_function_s=max(f["max_s"] for f in functions.values()),
        peak_rss_mb=max(f["peak_rss_mb"] for f in functions.values()),
        functions=functions,
    )
    if not xl["completed"]:
        xl["reason"] = f"the run ended {result['full']['status']}"
    return xl


# -- the apply engines at scale, without DynamoDB --------------------------------------


def apply_engine_figures(engine: str, users: int, say: Say) -> dict[str, Any]:
    """One engine on a synthetic district of `users` (7 enrollments each), in a fresh process
    so its peak RSS is its own (`rostersync.bench.apply_engine`); the staged one with a full
    re-sync after its first sync."""
    say(f"[engine] {engine} apply engine, {users:,} users, no DynamoDB...")
    resync = ["--resync"] if engine == "staged" else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rostersync.bench.apply_engine",
            "--users",
            str(users),
            "--engine",
            engine,
            *resync,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"engine": engine, "users": users, "failed": f"exit {done.returncode}: {tail[0][:200]}"}
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if engine == "delta":
        say(f"[engine] delta: {delta_line(figures)}")
        return figures
    if engine == "staged":
        say(
            f"[engine] staged: {figures['enrollments']:,} enrollments, {figures['rowsRead']:,} rows read in "
            f"{figures['readSeconds']} s, then the plan step alone {figures['planSeconds']} s "
            f"({figures['planSecondsPerRow'] * 1e6:.1f} µs per row; estimate {figures['planEstimateSeconds']} s); "
            f"a full re-sync's plan step against {figures['resyncRowsRead']:,} rows {figures['resyncPlanSeconds']} s; "
            f"peak RSS {figures['peakRssMB']} MB"
        )
        return figures
    say(
        f"[engine] {engine}: {figures['enrollments']:,} enrollments in {figures['seconds']} s, "
        f"peak RSS {figures['peakRssMB']} MB"
    )
    return figures


def delta_line(figures: dict[str, Any]) -> str:
    scoped, whole = figures["scoped"], figures["whole"]
    return (
        f"{figures['changes']:,} changes on a saved working set of {figures['users']:,} users / "
        f"{figures['enrollments']:,} enrollments: in scope {scoped['seconds']} s comparing "
        f"{scoped['itemsCompared']:,} items, whole {whole['seconds']} s comparing {whole['itemsCompared']:,} "
        f"({'same outcome' if figures['sameOutcome'] else 'OUTCOMES DIFFER'}), peak RSS {figures['peakRssMB']} MB"
    )


def bench_engines(options: BenchOptions, say: Say) -> dict[str, Any]:
    engines: dict[str, Any] = {}
    if options.engine_users:
        engines["side_by_side"] = {
            engine: apply_engine_figures(engine, options.engine_users, say)
            for engine in ("bounded", "memory")
        }
        # an incremental run's rules on the saved working set: in scope, and whole as before
        engines["delta"] = apply_engine_figures("delta", options.engine_users, say)
    if options.engine_xl_users:
        # as a continued apply runs it: the reads, then the plan step (its longest step) alone
        engines["xl_bounded"] = apply_engine_figures("staged", options.engine_xl_users, say)
    return engines


# -- the whole bench ---------------------------------------------------------------


def _ratio(value: float | None, floor: float | None) -> float | None:
    return round(value / floor, 3) if value is not None and floor else None


def summarize(sizes: dict[str, dict[str, Any]], xl: dict[str, Any], options: BenchOptions) -> dict[str, Any]:
    measured = [s for s in ("T", "S", "M") if s in sizes]
    main = sizes[measured[-1]] if measured else {}
    smallest = sizes[measured[0]] if measured else {}
    cpu = main.get("transform_cpu", {})
    full = main.get("full", {})
    floor = main.get("write_floor", {})
    fetch = smallest.get("fetch", {})
    e2e_items_per_s = full.get("items_written_per_s")
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(),
        },
        "options": {
            "sizes": list(options.sizes),
            "page_size": options.page_size,
            "latency_s": options.latency_s,
            "transform_workers": options.transform_workers,
            "fetch_concurrency": options.fetch_concurrency,
        },
        "headline_size": measured[-1] if measured else None,
        "transform_records_per_s": cpu.get("transform_records_per_s"),
        "parse_floor_records_per_s": cpu.get("parse_floor_records_per_s"),
        "e2e_records_per_s": full.get("records_per_s"),
        "e2e_items_written_per_s": e2e_items_per_s,
        "moto_write_floor_items_per_s": floor.get("items_per_s"),
        "resync_unchanged_item_writes": main.get("resync", {}).get("item_writes"),
        "delta_changes": main.get("delta", {}).get("changes"),
        "delta_item_writes": main.get("delta", {}).get("item_writes"),
        "delta_item_reads": main.get("delta", {}).get("item_reads"),
        "delta_whole_read_item_reads": main.get("delta_whole_read", {}).get("item_reads"),
        "fetch_pages_per_s_concurrent": fetch.get("concurrent", {}).get("pages_per_s"),
        "fetch_pages_per_s_sequential": fetch.get("sequential", {}).get("pages_per_s"),
        "continued_apply": {
            size: sizes[size]["continued"] for size in measured if "continued" in sizes[size]
        },
        "xl": xl,
    }
    results["ratios"] = {
        "transform_vs_parse_floor": _ratio(
            results["transform_records_per_s"], results["parse_floor_records_per_s"]
        ),
        "e2e_items_vs_write_floor": _ratio(e2e_items_per_s, results["moto_write_floor_items_per_s"]),
        "delta_writes_per_change": _ratio(results["delta_item_writes"], results["delta_changes"]),
        "fetch_concurrent_vs_sequential": _ratio(
            results["fetch_pages_per_s_concurrent"], results["fetch_pages_per_s_sequential"]
        ),
    }
    ratios = results["ratios"]
    results["targets"] = [
        _target("transform >= 1/4 parse floor", ratios["transform_vs_parse_floor"], lambda v: v >= 0.25),
        _target("e2e >= 2,000 records/s", results["e2e_records_per_s"], lambda v: v >= 2000),
        _target(
            "e2e >= 1/2.5 write floor (per item)", ratios["e2e_items_vs_write_floor"], lambda v: v >= 0.4
        ),
        _target(
            "re-sync unchanged: 0 item writes", results["resync_unchanged_item_writes"], lambda v: v == 0
        ),
        _target("delta writes <= 1.1 x changes", ratios["delta_writes_per_change"], lambda v: v <= 1.1),
        _target(
            "fetch concurrent >= 6 x sequential", ratios["fetch_concurrent_vs_sequential"], lambda v: v >= 6
        ),
        _target(
            "XL < 900 s per function, <= 512 MB",
            xl.get("max_function_s"),
            lambda v: (
                bool(xl["completed"]) and v < LAMBDA_LIMIT_S and (xl.get("peak_rss_mb") or 0) <= RSS_TARGET_MB
            ),
        ),
    ]
    results["functions"] = {
        size: {
            name: {"max_s": f["max_s"], "peak_rss_mb": f["peak_rss_mb"], "invocations": f["invocations"]}
            for name, f in sizes[size]["full"]["functions"].items()
        }
        for size in measured
        if "full" in sizes[size]
    }
    if "S" in sizes and "M" in sizes:
        s_rss = sizes["S"]["full"]["functions"]["apply_run"]["peak_rss_mb"]
        m_rss = sizes["M"]["full"]["functions"]["apply_run"]["peak_rss_mb"]
        s_records, m_records = sizes["S"]["records"], sizes["M"]["records"]
        per_record_kb = (m_rss - s_rss) * 1024 / (m_records - s_records) if m_records > s_records else None
        results["apply_rss_growth"] = {
            "S_mb": s_rss,
            "M_mb": m_rss,
            "kb_per_record": round(per_record_kb, 3) if per_record_kb is not None else None,
            "xl_projection_mb": round(
                m_rss + per_record_kb * (xl["users"] + xl["enrollments"] - m_records) / 1024
            )
            if per_record_kb is not None
            else None,
        }
    results["sizes"] = sizes
    return results


def _target(name: str, value: Any, met: Callable[[Any], bool]) -> dict[str, Any]:
    return {"target": name, "value": value, "met": bool(value is not None and met(value))}


def table(results: dict[str, Any]) -> str:
    lines = []
    sizes = results["sizes"]
    header = (
        f"{'size':<5}{'users':>10}{'enrollm.':>11}{'records':>10}{'full s':>9}{'rec/s':>9}{'writes':>10}"
        f"{'resync w':>9}{'delta w/chg':>13}"
    )
    lines += [header, "-" * len(header)]
    for size, r in sizes.items():
        if "full" not in r:
            continue
        delta = r.get("delta", {})
        lines.append(
            f"{size:<5}{r['users']:>10,}{r['enrollments']:>11,}{r['records']:>10,}{r['full']['seconds']:>9.1f}"
            f"{r['full']['records_per_s']:>9,.0f}{r['full']['item_writes']:>10,}"
            f"{r.get('resync', {}).get('item_writes', '-'):>9}"
            f"{(str(delta.get('item_writes')) + '/' + str(delta.get('changes'))) if delta else '-':>13}"
        )
    lines.append("")
    header = (
        f"{'size':<5}{'function':<16}{'calls':>7}{'max s':>9}{'total s':>9}{'cpu s':>7}{'peak RSS MB':>13}"
    )
    lines += [header, "-" * len(header)]
    for size, r in sizes.items():
        for name, f in r.get("full", {}).get("functions", {}).items():
            lines.append(
                f"{size:<5}{name:<16}{f['invocations']:>7}{f['max_s']:>9.2f}{f['total_s']:>9.1f}{f.get('cpu_s', 0):>7.1f}"
                f"{f['peak_rss_mb']:>13.1f}"
            )
    lines.append("")
    lines.append(f"{'key':<32}{'value':>14}")
    lines.append("-" * 46)
    for key in (
        "transform_records_per_s",
        "parse_floor_records_per_s",
        "e2e_records_per_s",
        "e2e_items_written_per_s",
        "moto_write_floor_items_per_s",
        "resync_unchanged_item_writes",
        "delta_changes",
        "delta_item_writes",
        "delta_item_reads",
        "delta_whole_read_item_reads",
        "fetch_pages_per_s_concurrent",
        "fetch_pages_per_s_sequential",
    ):
        value = results[key]
        lines.append(f"{key:<32}{value if value is not None else '-':>14}")
    lines.append("")
    lines.append(f"{'target':<40}{'value':>12}  met")
    lines.append("-" * 57)
    for target in results["targets"]:
        value = target["value"]
        lines.append(
            f"{target['target']:<40}{value if value is not None else '-':>12}  {'yes' if target['met'] else 'NO'}"
        )
    for size, c in results.get("continued_apply", {}).items():
        lines.append(
            f"{size} full run, apply at most {c['budget_s']} s per invocation: {c['status']}, "
            f"{c['apply_invocations']} invocations, longest {c['apply_max_s']:.1f} s "
            f"(uninterrupted {c['uninterrupted_apply_s']:.1f} s); then uninterrupted: "
            f"{c['then_uninterrupted_item_writes']} item writes"
        )
    xl = results["xl"]
    lines.append("")
    lines.append(
        f"XL ({xl['users']:,} users / {xl['enrollments']:,} enrollments): "
        + ("completed" if xl["completed"] else f"not completed — {xl.get('reason', '')}")
    )
    engine = xl.get("apply_engine")
    if engine:
        lines.append(
            f"XL apply engine alone (bounded, no DynamoDB): {engine['users']:,} users / "
            f"{engine['enrollments']:,} enrollments in {engine['seconds']} s (reads {engine.get('read_s')} s, "
            f"then the plan step {engine.get('plan_step_s')} s; a full re-sync's, the longest step, "
            f"{engine.get('resync_plan_step_s')} s), "
            f"peak RSS {engine['peak_rss_mb']} MB, working set {engine['sqlite_mb']} MB on disk"
        )
    side = results.get("apply_engines", {}).get("side_by_side", {})
    if all("peakRssMB" in side.get(e, {}) for e in ("bounded", "memory")):
        b, m = side["bounded"], side["memory"]
        lines.append(
            f"apply engines side by side ({b['users']:,} users / {b['enrollments']:,} enrollments, no DynamoDB): "
            f"bounded {b['peakRssMB']} MB in {b['seconds']} s, in memory {m['peakRssMB']} MB in {m['seconds']} s"
        )
    delta = results.get("apply_engines", {}).get("delta", {})
    if "scoped" in delta:
        lines.append(f"incremental rules, no DynamoDB: {delta_line(delta)}")
    growth = results.get("apply_rss_growth")
    if growth:
        lines.append(
            f"apply peak RSS: S {growth['S_mb']} MB, M {growth['M_mb']} MB "
            f"({growth['kb_per_record']} KB per source record; XL projection ~{growth['xl_projection_mb']} MB)"
        )
    return "\n".join(lines)


def run_bench(options: BenchOptions, say: Say = print) -> dict[str, Any]:
    started = time.monotonic()
    timed: Say = lambda text: say(f"{time.monotonic() - started:7.1f}s {text}")  # noqa: E731
    sizes: dict[str, dict[str, Any]] = {}
    for size in options.sizes:
        if size == "XL":
            continue
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; expected some of {', '.join(SIZES)}")

        def save(result: dict[str, Any], size: str = size) -> None:
            """What is measured so far, in case a later step does not finish."""
            pending = {"completed": False, "reason": "pending: the bench has not reached XL yet"}
            partial = summarize({**sizes, size: result}, {**bench_xl_shape(), **pending}, options)
            options.out.write_bytes(orjson.dumps(partial, option=orjson.OPT_INDENT_2))

        sizes[size] = bench_size(size, options, timed, checkpoint=save)
        save(sizes[size])
    measured = next((sizes[s] for s in ("M", "S", "T") if s in sizes), None)
    xl = bench_xl(options, measured, timed)
    engines = bench_engines(options, timed)
    xl_engine = engines.get("xl_bounded", {})
    if "peakRssMB" in xl_engine:
        # What the apply function needs at XL, the one function whose work grows with the district
        xl["apply_engine"] = {
            "users": xl_engine["users"],
            "enrollments": xl_engine["enrollments"],
            "seconds": xl_engine["seconds"],
            "read_s": xl_engine["readSeconds"],
            "plan_step_s": xl_engine["planSeconds"],
            "resync_plan_step_s": xl_engine.get("resyncPlanSeconds"),
            "peak_rss_mb": xl_engine["peakRssMB"],
            "sqlite_mb": round(xl_engine["sqliteBytes"] / 2**20),
        }
    results = summarize(sizes, xl, options)
    results["apply_engines"] = engines
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    options.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    say("")
    say(table(results))
    say(f"\nwrote {options.out} ({results['bench_seconds']} s)")
    return results


def options_from_env(**overrides: Any) -> BenchOptions:
    sizes = os.environ.get("BENCH_SIZES")
    options = BenchOptions(**overrides)
    if sizes and "sizes" not in overrides:
        options.sizes = tuple(s.strip().upper() for s in sizes.split(",") if s.strip())
    return options
