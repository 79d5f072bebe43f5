"""`make demo`: a full sync of the demo district through the real pipeline.

Drives the embedded stack exactly as an outside script would: settings and
credentials written to SSM through the emulator's endpoint, a force sync over
HTTP, the run polled, the product read back from the API.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3
import requests

DEMO_DISTRICT = "demo"
FINAL = {"succeeded", "failed", "halted", "previewed"}


class DemoError(RuntimeError):
    pass


def demo_settings(sis_url: str, version: str = "1.1", **overrides: Any) -> dict[str, Any]:
    base = f"{sis_url}/ims/oneroster/v1p1" if version == "1.1" else f"{sis_url}/ims/oneroster/rostering/v1p2"
    settings: dict[str, Any] = {
        "source": {
            "type": "oneroster",
            "baseUrl": base,
            "version": version,
            "auth": "oauth2",
            "tokenUrl": f"{sis_url}/oauth/token",
            "credentialsParameter": f"/rostersync/districts/{DEMO_DISTRICT}/credentials",
        },
        "usernameSource": True,
        "usernameRules": [{"op": "stripDomain"}, {"op": "lowercase"}],
        "classNameFields": ["period", "term"],
        "timezone": "America/Chicago",
    }
    settings.update(overrides)
    return settings


class Client:
    """A thin HTTP client of the API, as a district's script would write it."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.http = requests.Session()

    def get(self, path: str, **params: Any) -> Any:
        answer = self.http.get(f"{self.api_url}{path}", params=params, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def post(self, path: str, body: Any = None) -> requests.Response:
        return self.http.post(f"{self.api_url}{path}", json=body, timeout=30)

    def all_items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.get(path, limit=1000, **({"cursor": cursor} if cursor else {}), **params)
            items.extend(page["items"])
            cursor = page["nextCursor"]
            if not cursor:
                return items

    def force_sync(self, district_id: str, body: Any = None, wait_settings_s: float = 30) -> str:
        """POST a force sync; while the settings event is still on its way, the API answers 404."""
        deadline = time.monotonic() + wait_settings_s
        while True:
            answer = self.post(f"/districts/{district_id}/sync", body)
            if answer.status_code == 202:
                return str(answer.json()["runId"])
            if answer.status_code != 404 or time.monotonic() > deadline:
                raise DemoError(f"force sync answered {answer.status_code}: {answer.text}")
            time.sleep(0.3)

    def wait_run(self, district_id: str, run_id: str, timeout_s: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.get(f"/districts/{district_id}/runs/{run_id}")
            if run["status"] in FINAL:
                return run  # type: ignore[no-any-return]
            time.sleep(0.3)
        raise DemoError(f"run {run_id} did not finish within {timeout_s:.0f} s")


def write_settings(
    aws_url: str, district_id: str, settings: dict[str, Any], credentials: dict[str, str]
) -> None:
    ssm = _aws(aws_url, "ssm")
    ssm.put_parameter(
        Name=f"/rostersync/districts/{district_id}/credentials",
        Type="SecureString",
        Value=json.dumps(credentials),
        Overwrite=True,
    )
    ssm.put_parameter(
        Name=f"/rostersync/districts/{district_id}/settings",
        Type="String",
        Value=json.dumps(settings),
        Overwrite=True,
    )


SOURCES = ("rest", "rest-1.2", "csv", "powerschool", "direct")
ENTITY_NAMES = ("orgs", "academicSessions", "classes", "users", "enrollments")


def run_demo(
    api_url: str,
    aws_url: str,
    sis_url: str,
    *,
    source: str = "rest",
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Sync the demo district from one kind of source and print what was synced."""
    from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, generate_district

    client = Client(api_url)
    credentials = {"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET}
    started = time.monotonic()
    extra_server: Any = None
    try:
        if source in ("rest", "rest-1.2"):
            version = "1.2" if source == "rest-1.2" else "1.1"
            write_settings(aws_url, DEMO_DISTRICT, demo_settings(sis_url, version), credentials)
            run_id = client.force_sync(DEMO_DISTRICT, {"mode": "full"})
            label = f"the demo SIS (OneRoster {version} REST)"
        elif source == "powerschool":
            from rostersync.local.powerschool_sis import PowerSchoolSis

            extra_server = PowerSchoolSis(
                generate_district(), client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET
            ).start()
            settings = demo_settings(sis_url) | {
                "source": {
                    "type": "powerschool",
                    "baseUrl": extra_server.url,
                    "credentialsParameter": f"/rostersync/districts/{DEMO_DISTRICT}/credentials",
                }
            }
            write_settings(aws_url, DEMO_DISTRICT, settings, credentials)
            run_id = client.force_sync(DEMO_DISTRICT, {"mode": "full"})
            label = "a PowerSchool server (/ws/v1, plugin OAuth)"
        elif source == "csv":
            write_settings(
                aws_url, DEMO_DISTRICT, demo_settings(sis_url) | {"source": {"type": "oneroster-csv"}}, {}
            )
            run_id = _upload_bundle(client, aws_url, generate_district())
            label = f"a OneRoster 1.1 CSV bundle uploaded to inbox/{DEMO_DISTRICT}/"
        elif source == "direct":
            write_settings(
                aws_url, DEMO_DISTRICT, demo_settings(sis_url) | {"source": {"type": "direct"}}, {}
            )
            run_id = push_district(client, DEMO_DISTRICT, generate_district())
            label = "a direct push through the API"
        else:
            raise DemoError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
        run = client.wait_run(DEMO_DISTRICT, run_id)
    finally:
        if extra_server is not None:
            extra_server.stop()
    elapsed = time.monotonic() - started
    summary = {
        "run": run,
        "schools": client.all_items(f"/districts/{DEMO_DISTRICT}/schools"),
        "classes": client.all_items(f"/districts/{DEMO_DISTRICT}/classes", includeHidden="true"),
        "users": client.all_items(f"/districts/{DEMO_DISTRICT}/users"),
    }
    print_summary(summary, elapsed, label, say)
    if run["status"] != "succeeded":
        raise DemoError(f"run ended {run['status']}: {run.get('message', '')}")
    if source in ("rest", "rest-1.2"):
        # The same district again: nothing changed in the SIS, so nothing is written.
        again = client.wait_run(DEMO_DISTRICT, client.force_sync(DEMO_DISTRICT))
        read = again.get("applyRead") or {}
        basis = (
            f"built on the working set the first run saved ({read.get('changedRecords', 0)} changed records read)"
            if read.get("savedState")
            else "the district read whole"
        )
        say(
            f"\nre-sync ({again['mode']}, nothing changed in the SIS): {again['status']}, "
            f"{again.get('itemWrites', 0)} item writes; {basis}"
        )
        summary["resync"] = again
    return summary


def _upload_bundle(client: Client, aws_url: str, district: Any) -> str:
    """Upload the district as a CSV bundle to the inbox; the upload starts the run."""
    import tempfile
    from pathlib import Path

    from rostersync.local.demo_csv import write_bundle

    before = {r["runId"] for r in client.get(f"/districts/{DEMO_DISTRICT}/runs")["items"]}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_bundle(district, Path(tmp) / "bundle.zip", version="1.1")
        bucket = client.get("/_local/outputs")["StagingBucketName"]
        _aws(aws_url, "s3").upload_file(str(bundle), bucket, f"inbox/{DEMO_DISTRICT}/roster-demo.zip")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for run in client.get(f"/districts/{DEMO_DISTRICT}/runs")["items"]:
            if run["runId"] not in before:
                return str(run["runId"])
        time.sleep(0.3)
    raise DemoError("the uploaded bundle did not start a run within 60 s")


def push_district(client: Client, district_id: str, district: Any, page_size: int = 100) -> str:
    """Push a district through the direct-push API, page by page, and complete the push."""
    deadline = time.monotonic() + 30
    while True:
        opened = client.post(f"/districts/{district_id}/pushes")
        if opened.status_code == 201:
            break
        if opened.status_code != 404 or time.monotonic() > deadline:
            raise DemoError(f"opening a push answered {opened.status_code}: {opened.text}")
        time.sleep(0.3)  # the settings event is still on its way
    push_id = opened.json()["pushId"]
    for entity in ENTITY_NAMES:
        records = district.records(entity)
        for page, start in enumerate(range(0, len(records), page_size)):
            answer = client.http.put(
                f"{client.api_url}/districts/{district_id}/pushes/{push_id}/{entity}/{page}",
                json={"records": records[start : start + page_size]},
                timeout=30,
            )
            if answer.status_code != 200:
                raise DemoError(f"pushing {entity} page {page} answered {answer.status_code}: {answer.text}")
    completed = client.post(f"/districts/{district_id}/pushes/{push_id}/complete", {"mode": "full"})
    if completed.status_code != 202:
        raise DemoError(f"completing the push answered {completed.status_code}: {completed.text}")
    return str(completed.json()["runId"])


def _aws(aws_url: str, service: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=aws_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the emulator's, not a secret
    )


def print_summary(summary: dict[str, Any], elapsed: float, label: str, say: Callable[[str], None]) -> None:
    run = summary["run"]
    say(f"\nrostersync demo: district '{DEMO_DISTRICT}' from {label}")
    say(
        f"run {run['runId']}: {run['status']} ({run['mode']}) in {elapsed:.1f} s, "
        f"{run.get('itemWrites', 0)} item writes"
    )
    say("\ncounts        created updated deleted unchanged rejected")
    for entity in ("schools", "classes", "users", "enrollments"):
        c = run["counts"].get(entity, {})
        say(
            f"  {entity:<12}{c.get('created', 0):>7}{c.get('updated', 0):>8}{c.get('deleted', 0):>8}"
            f"{c.get('unchanged', 0):>10}{c.get('rejected', 0):>9}"
        )
    say(f"\nschools ({len(summary['schools'])}):")
    for school in summary["schools"]:
        say(f"  {school['id']}: {school['name']}")
    visible = [c for c in summary["classes"] if c["visible"]]
    hidden = [c for c in summary["classes"] if not c["visible"]]
    say(f"\nclasses: {len(visible)} visible, {len(hidden)} hidden")
    for cls in sorted(visible, key=lambda c: c["name"]):
        say(
            f"  {cls['name']}  [{cls['schoolId']}] "
            f"{len(cls['teacherIds'])} teacher(s), {len(cls['studentIds'])} students"
        )
    for cls in hidden:
        say(f"  hidden until {cls['visibleFrom']}: {cls['name']} (starts {cls['startDate']})")
    roles = Counter(u["role"] for u in summary["users"])
    statuses = Counter(u["status"] for u in summary["users"])
    say(
        f"\nusers: {len(summary['users'])} ({', '.join(f'{n} {r}' for r, n in sorted(roles.items()))}; "
        f"{statuses.get('inactive', 0)} inactive)"
    )
    say(f"\nrejected records ({len(run['errors'])}):")
    for issue in run["errors"]:
        say(f"  {issue['entity']} {issue['sourcedId']}: {issue['reason']}")
    say(f"\nwarnings ({len(run['warnings'])}):")
    for issue in run["warnings"]:
        say(f"  {issue['entity']} {issue['sourcedId']}: {issue['reason']}")
