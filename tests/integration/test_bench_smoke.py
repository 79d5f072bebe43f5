"""`make bench` on a tiny district: the machinery runs end to end and writes every key.

The bench runs in its own process (it points the AWS environment at its own
emulator), exactly as `make bench` runs it, on size T (a few dozen users).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

ISSUE_KEYS = (
    "transform_records_per_s",
    "parse_floor_records_per_s",
    "e2e_records_per_s",
    "moto_write_floor_items_per_s",
    "resync_unchanged_item_writes",
    "delta_changes",
    "delta_item_writes",
    "fetch_pages_per_s_concurrent",
    "fetch_pages_per_s_sequential",
)


def test_bench_on_a_tiny_district_writes_every_key(tmp_path: Path) -> None:
    # Given a tiny district; When the bench runs on it
    out = tmp_path / "bench-results.json"
    command = [sys.executable, "-m", "rostersync.cli", "bench", "--sizes", "T", "--out", str(out)]
    command += ["--engine-users", "2000", "--engine-xl-users", "3000"]
    answer = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]

    # Then every key of the issue is there, measured
    results = json.loads(out.read_text())
    for key in ISSUE_KEYS:
        assert isinstance(results[key], int | float), key
    assert results["transform_records_per_s"] > 0 and results["parse_floor_records_per_s"] > 0
    assert results["e2e_records_per_s"] > 0 and results["moto_write_floor_items_per_s"] > 0
    assert set(results["xl"]) >= {"users", "enrollments", "completed", "max_function_s", "peak_rss_mb"}
    assert results["xl"]["completed"] is False and results["xl"]["reason"]
    # and the apply engines ran side by side, and the bounded one at the "XL" size given
    side = results["apply_engines"]["side_by_side"]
    assert side["bounded"]["counts"] == side["memory"]["counts"] and side["bounded"]["users"] == 2000
    assert results["xl"]["apply_engine"]["users"] == 3000 and results["xl"]["apply_engine"]["peak_rss_mb"] > 0
    # and a 1 % change on a saved working set, in scope and whole: the same plan, fewer compared
    delta = results["apply_engines"]["delta"]
    assert delta["sameOutcome"] and delta["changes"] > 0
    assert delta["scoped"]["itemsCompared"] < delta["whole"]["itemsCompared"]

    # and the runs did what the pipeline promises, counted at the emulator
    tiny = results["sizes"]["T"]
    assert tiny["full"]["status"] == "succeeded"
    assert tiny["full"]["mirror_writes"] == tiny["records"]  # every source record mirrored once
    assert tiny["full"]["product_writes"] > 0
    assert results["resync_unchanged_item_writes"] == 0
    assert results["delta_changes"] >= 3 and results["delta_item_writes"] >= results["delta_changes"]
    # the incremental run built on the working set the re-sync saved, and read far less than
    # the same run reading the district whole
    assert tiny["delta"]["apply_read"]["savedState"] is True
    # and a full run whose apply continued across invocations left nothing for the next to write
    continued = results["continued_apply"]["T"]
    assert continued["status"] == "succeeded" and continued["apply_invocations"] > 1
    assert continued["item_writes"] > 0 and continued["then_uninterrupted_item_writes"] == 0
    assert tiny["delta_whole_read"]["apply_read"] == {"savedState": False}
    assert 0 < results["delta_item_reads"] < results["delta_whole_read_item_reads"]
    for function in ("fetch_roster", "transform_page", "apply_run"):
        figures = results["functions"]["T"][function]
        assert figures["invocations"] >= 1 and figures["max_s"] > 0 and figures["peak_rss_mb"] > 50
    assert len(results["targets"]) == 7
    assert "transform_records_per_s" in answer.stdout  # the table was printed
