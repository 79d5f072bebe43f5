"""The working set a run leaves behind, so the next incremental run need not read the district.

After a run that succeeded, the bounded engine's SQLite file holds the district's
mirror as records (what every rule reads) and the product items exactly as the
run left them stored. It is saved to the staging bucket (`state/{district}/`,
encrypted like the rest) and named in the district item (`applyState`). The
next incremental run downloads it, lays over it only the mirror records its own
pages named (a BatchGet of those ids), computes, and plans against the saved
product items: it reads what changed from DynamoDB, not the whole district.

A saved working set is used only when nothing but dry runs started since the
run that saved it: any other run may have changed the mirror (its transform) or
the product (its apply), so then the district is read whole again, and the run
saves a fresh one. Full runs always read the district whole (the fresh picture a
full run promises), and save.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from rostersync import aws
from rostersync.config import get_config
from rostersync.roster.compute import RosterOptions
from rostersync.roster.working_set import LEFTOVER_PREFIX, SCHEMA_VERSION, WorkingSet
from rostersync.store import runs

logger = Logger(service="rostersync", child=True)


def state_key(district_id: str) -> str:
    return f"state/{district_id}/working-set.sqlite"


def reusable_state(district_id: str, run_id: str) -> dict[str, Any] | None:
    """The district's saved working set, if this run may build on it."""
    state = runs.get_district(district_id).get("applyState")
    if not isinstance(state, dict) or state.get("schema") != SCHEMA_VERSION or not state.get("runId"):
        return None
    since = runs.runs_since(district_id, str(state["runId"]))
    if any(r.get("runId") != run_id and not r.get("dryRun") for r in since):
        return None  # another run may have changed the mirror or the product since
    return state


def open_saved(district_id: str, run_id: str, options: RosterOptions, today: Any) -> WorkingSet | None:
    """The saved working set, downloaded and ready to be changed and computed; None if there
    is none this run may use (or it cannot be read: the run then reads the district whole)."""
    state = reusable_state(district_id, run_id)
    if state is None:
        return None
    handle, path = tempfile.mkstemp(prefix=f"{LEFTOVER_PREFIX}{os.getpid()}-", suffix=".sqlite")
    os.close(handle)
    try:
        aws.client("s3").download_file(get_config().staging_bucket_name, str(state["key"]), path)
        return WorkingSet(options, today, saved=path)
    except (ClientError, ValueError, OSError) as error:
        logger.warning("saved working set not used", reason=type(error).__name__, district_id=district_id)
        if os.path.exists(path):
            os.remove(path)
        return None


def save(district_id: str, run_id: str, working_set: WorkingSet) -> bool:
    """Save the working set of a run whose writes all succeeded; False (logged) if it cannot
    be: the next run then reads the district whole, as if none had been saved."""
    try:
        working_set.prepare_to_save()
        key = state_key(district_id)
        aws.client("s3").upload_file(working_set.path, get_config().staging_bucket_name, key)
        runs.set_apply_state(district_id, {"runId": run_id, "key": key, "schema": SCHEMA_VERSION})
        return True
    except Exception as error:  # the run succeeded: a state not saved only costs the next run time
        logger.warning("working set not saved", reason=type(error).__name__, district_id=district_id)
        return False
