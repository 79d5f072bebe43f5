"""One district, every kind of source (SPEC 2): OneRoster REST 1.1 and 1.2, a CSV
bundle over SFTP and through the S3 inbox, PowerSchool, and a direct push all
end in the same product state, as a district (and other products) see it:
by names and emails, since each source has its own ids."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from rostersync.local.demo import push_district
from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, generate_district

pytestmark = pytest.mark.e2e

OPTIONS = {
    "usernameSource": True,
    "usernameRules": [{"op": "stripDomain"}, {"op": "lowercase"}],
    "classNameFields": ["period", "term"],
    "timezone": "America/Chicago",
}


def _product(stack: Any, district_id: str) -> dict[str, Any]:
    """The product as seen by a person: schools, classes and users by name and email."""
    schools = {s["id"]: s["name"] for s in stack.client.all_items(f"/districts/{district_id}/schools")}
    users = stack.client.all_items(f"/districts/{district_id}/users")
    email = {u["id"]: u["email"] for u in users}
    classes = stack.client.all_items(f"/districts/{district_id}/classes", includeHidden="true")
    return {
        "schools": sorted(schools.values()),
        "users": sorted(
            (
                u["email"],
                u["role"],
                u["status"],
                u["username"],
                tuple(sorted(schools[s] for s in u["schoolIds"])),
            )
            for u in users
        ),
        "classes": sorted(
            (
                c["name"],
                schools[c["schoolId"]],
                tuple(sorted(email[t] for t in c["teacherIds"])),
                tuple(sorted(email[s] for s in c["studentIds"])),
                c["visible"],
                c["startDate"],
            )
            for c in classes
        ),
    }


def _wait_new_run(stack: Any, district_id: str, before: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for run in stack.client.get(f"/districts/{district_id}/runs")["items"]:
            if run["runId"] not in before:
                return stack.client.wait_run(district_id, run["runId"], timeout_s=120)
        time.sleep(0.3)
    raise AssertionError("no run started")


def _settings(source: dict[str, Any]) -> dict[str, Any]:
    return {"source": source, **OPTIONS}


def _credentials_name(district_id: str) -> str:
    return f"/rostersync/districts/{district_id}/credentials"


def sync_rest(stack, district_id, tmp_path, version):
    from rostersync.local.demo_sis import DemoSis

    with DemoSis(generate_district()) as sis:
        root = sis.v1p1_url if version == "1.1" else sis.v1p2_url
        stack.put_credentials(district_id, {"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET})
        source = {
            "type": "oneroster",
            "baseUrl": root,
            "version": version,
            "auth": "oauth2",
            "tokenUrl": sis.token_url,
            "credentialsParameter": _credentials_name(district_id),
        }
        stack.put_settings(district_id, _settings(source))
        stack.scan_settings()
        return stack.sync(district_id, {"mode": "full"})


def sync_powerschool(stack, district_id, tmp_path):
    from rostersync.local.powerschool_sis import PowerSchoolSis

    server = PowerSchoolSis(
        generate_district(), client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET
    ).start()
    try:
        stack.put_credentials(district_id, {"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET})
        source = {
            "type": "powerschool",
            "baseUrl": server.url,
            "credentialsParameter": _credentials_name(district_id),
        }
        stack.put_settings(district_id, _settings(source))
        stack.scan_settings()
        return stack.sync(district_id, {"mode": "full"})
    finally:
        server.stop()


def sync_csv_inbox(stack, district_id, tmp_path):
    from rostersync.local.demo_csv import write_bundle

    stack.put_settings(district_id, _settings({"type": "oneroster-csv"}))
    stack.scan_settings()
    bundle = write_bundle(generate_district(), tmp_path / "bundle.zip", version="1.1")
    bucket = stack.client.get("/_local/outputs")["StagingBucketName"]
    stack.aws("s3").upload_file(str(bundle), bucket, f"inbox/{district_id}/export.zip")
    return _wait_new_run(stack, district_id, set())


def sync_csv_1_2_sftp(stack, district_id, tmp_path, sftp_server):
    from rostersync.local.demo_csv import write_bundle

    folder = sftp_server.root / district_id
    folder.mkdir(parents=True)
    write_bundle(generate_district(), folder / "roster-2026-11-30.zip", version="1.2")
    stack.put_credentials(district_id, sftp_server.credentials)
    source = {
        "type": "oneroster-csv",
        "sftp": {
            "host": "127.0.0.1",
            "port": sftp_server.port,
            "path": str(folder),
            "username": sftp_server.username,
            "hostKey": sftp_server.host_key,
        },
        "credentialsParameter": _credentials_name(district_id),
    }
    stack.put_settings(district_id, _settings(source))
    stack.scan_settings()
    return stack.sync(district_id)


def sync_direct(stack, district_id, tmp_path):
    stack.put_settings(district_id, _settings({"type": "direct"}))
    stack.scan_settings()
    run_id = push_district(stack.client, district_id, generate_district())
    return stack.client.wait_run(district_id, run_id, timeout_s=120)


@pytest.fixture(scope="module")
def reference(stack, tmp_path_factory) -> dict[str, Any]:
    district_id = f"ref-{int(time.time() * 1000) % 10**9}"
    run = sync_rest(stack, district_id, tmp_path_factory.mktemp("ref"), "1.1")
    assert run["status"] == "succeeded", run
    return _product(stack, district_id)


@pytest.mark.parametrize("kind", ["rest-1.2", "csv-inbox", "csv-1.2-sftp", "powerschool", "direct"])
def test_every_source_ends_in_the_same_product_state(kind, stack, district_id, tmp_path, reference, request):
    if kind == "rest-1.2":
        run = sync_rest(stack, district_id, tmp_path, "1.2")
    elif kind == "csv-inbox":
        run = sync_csv_inbox(stack, district_id, tmp_path)
    elif kind == "csv-1.2-sftp":
        run = sync_csv_1_2_sftp(stack, district_id, tmp_path, request.getfixturevalue("sftp_server"))
    elif kind == "powerschool":
        run = sync_powerschool(stack, district_id, tmp_path)
    else:
        run = sync_direct(stack, district_id, tmp_path)
    assert run["status"] == "succeeded", json.dumps(run)[:2000]
    assert run["mode"] == "full"
    got = _product(stack, district_id)
    expected = reference
    if kind == "powerschool":
        # In PowerSchool a student belongs to one school: the demo's two-school
        # student comes back at its first school only (documented in powerschool_sis).
        expected = {**reference, "users": _one_school(reference["users"], _email_of("u-stu-twoschools"))}
    assert got["schools"] == expected["schools"]
    assert got["users"] == expected["users"]
    assert got["classes"] == expected["classes"]


def _email_of(sourced_id: str) -> str:
    return str(generate_district().find("users", sourced_id)["email"]).lower()


def _one_school(users: list[tuple], email: str) -> list[tuple]:
    return sorted((*u[:4], u[4][:1]) if u[0] == email else u for u in users)


def _zip_folder(folder, dest):
    import zipfile

    with zipfile.ZipFile(dest, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return dest


def test_a_bad_bundle_is_answered_not_swallowed(stack, district_id, tmp_path):
    from rostersync.local.demo_csv import write_bundle

    stack.put_settings(district_id, _settings({"type": "oneroster-csv"}))
    stack.scan_settings()
    bucket = stack.client.get("/_local/outputs")["StagingBucketName"]

    # A broken row is rejected with its file and line; the rest of the bundle goes on
    folder = write_bundle(generate_district(), tmp_path / "good", version="1.1", zip=False)
    users = folder / "users.csv"
    lines = users.read_text(encoding="utf-8").splitlines()
    users.write_text("\n".join([*lines, "u-broken,active,only,three-fields"]) + "\n", encoding="utf-8")
    stack.aws("s3").upload_file(
        str(_zip_folder(folder, tmp_path / "one.zip")), bucket, f"inbox/{district_id}/one.zip"
    )
    run = _wait_new_run(stack, district_id, set())
    assert run["status"] == "succeeded"
    (broken,) = [e for e in run["errors"] if e["sourcedId"] == "u-broken"]
    assert broken["reason"].startswith(f"users.csv line {len(lines) + 1}:")
    assert run["counts"]["users"]["created"] == 137

    # A bundle without a required column fails its run, naming the file and the column
    before = {r["runId"] for r in stack.client.get(f"/districts/{district_id}/runs")["items"]}
    classes = folder / "classes.csv"
    header, *rows = classes.read_text(encoding="utf-8").splitlines()
    columns = header.split(",")
    at = columns.index("schoolSourcedId")
    cut = [",".join(c for i, c in enumerate(line.split(",")) if i != at) for line in [header, *rows]]
    classes.write_text("\n".join(cut) + "\n", encoding="utf-8")
    stack.aws("s3").upload_file(
        str(_zip_folder(folder, tmp_path / "two.zip")), bucket, f"inbox/{district_id}/two.zip"
    )
    failed = _wait_new_run(stack, district_id, before)
    assert failed["status"] == "failed"
    assert "classes.csv" in failed["message"] and "schoolSourcedId" in failed["message"]
    # and nothing was deleted
    assert len(stack.client.all_items(f"/districts/{district_id}/users")) == 137
