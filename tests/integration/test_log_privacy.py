"""No student or staff name, email or username, and no secret, in any log line
or API error (issue 6, security).

The embedded stack runs as `rostersync local up` in a child process whose
stdout and stderr are captured whole: the JSON logs of every function
(powertools, at DEBUG, stricter than the template's INFO) and every other
logger of the process (the root logger at INFO, as LOG_LEVEL gives Lambda),
tracebacks included. The demo SIS runs here, so the test can change it. One
district then goes through what a year brings: a full sync with rejected
records and warnings, a run halted by the deletion safeguard, a fetch that
fails, and bad API requests that carry names and emails. Every run record is read back through the API too:
its errors and warnings name records by sourcedId, never by name or email.

Matching, chosen so that a hit is a real leak and not a common word:
- emails and usernames: case-insensitive, as whole tokens (not inside a
  longer word or address);
- given and family names: every word of them, short ones such as "Ava" or
  "Kim" too, as case-sensitive whole words (so "Ava" inside "Java" is not a
  hit), leaving out the words that are also the district's school, class and term titles
  ("Lincoln High School" is not a person) and the product's own vocabulary.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from rostersync.local.demo import Client, demo_settings
from rostersync.local.demo_data import DEMO_CLIENT_ID, DemoDistrict, generate_district
from rostersync.local.demo_sis import DemoSis
from rostersync.local.http_api import LOCAL_CALLER_HEADER
from rostersync.roster.roles import PRODUCT_ROLES

ROOT = Path(__file__).resolve().parents[2]
# The child: every logger at INFO to stderr, then `rostersync local up`.
_CHILD = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
    "from rostersync.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
SECRET = "s3cr3t-Privacy-Client-Secret-7f2c"  # this test's own credentials secret


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CapturedStack:
    """`rostersync local up` with all of its output kept in `lines`."""

    def __init__(self) -> None:
        self.port, self.aws_port = _free_port(), _free_port()
        env = {**os.environ, "LOG_LEVEL": "DEBUG", "POWERTOOLS_LOG_LEVEL": "DEBUG"}
        env.pop("AWS_ENDPOINT_URL", None)
        ports = ("--port", str(self.port), "--aws-port", str(self.aws_port))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, "local", "up", "--no-demo-sis", *ports],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if "ready" in line:
                self.ready.set()
        self.ready.set()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def aws(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=f"http://127.0.0.1:{self.aws_port}",
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        time.sleep(0.2)  # the reader thread takes the last lines
        return "".join(self.lines)


@pytest.fixture(scope="module")
def stack() -> Iterator[CapturedStack]:
    captured = CapturedStack()
    if not captured.ready.wait(120) or captured.process.poll() is not None:
        output = captured.stop()
        pytest.fail("local stack did not become ready:\n" + output[-4000:])
    yield captured
    captured.stop()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]+", text))


def private_terms(district: DemoDistrict) -> tuple[set[str], set[str]]:
    """(tokens matched case-insensitively: emails and usernames, names matched case-sensitively)."""
    titles = " ".join(
        [o["name"] for o in district.orgs]
        + [c["title"] for c in district.classes]
        + [s["title"] for s in district.academic_sessions]
        + list(PRODUCT_ROLES)
        + ["Main Location"]
    )
    not_names = _words(titles)
    tokens: set[str] = set()
    names: set[str] = set()
    for user in district.users:
        for key in ("email", "username"):
            value = (user.get(key) or "").strip()
            local_part = value.split("@")[0]
            for token in {value, local_part}:
                if len(token) >= 5:
                    tokens.add(token.lower())
        for key in ("givenName", "familyName", "middleName"):
            for word in _words(user.get(key) or ""):
                if word not in not_names:
                    names.add(word)
    return tokens, names


def find_leaks(text: str, tokens: set[str], names: set[str]) -> list[str]:
    lowered = text.lower()
    leaks = [t for t in tokens if re.search(rf"(?<![\w.@+-]){re.escape(t)}(?![\w@+-]|\.\w)", lowered)]
    leaks += [n for n in names if re.search(rf"\b{re.escape(n)}\b", text)]
    return sorted(leaks)


def test_the_matcher_finds_what_it_should_and_nothing_else() -> None:
    district = generate_district()
    tokens, names = private_terms(district)
    email = next(u["email"] for u in district.users if u.get("email"))
    assert find_leaks(f'{{"message": "duplicate {email.upper()}"}}', tokens, names)
    assert find_leaks('{"message": "Garcia"}', tokens, names) == ["Garcia"]
    # Titles, roles and ordinary words are not names; a name inside a word is not a hit.
    assert "Lincoln" not in names and "Biology" not in names and "Student" not in names
    assert not find_leaks('{"message": "Lincoln High School, Teacher 1, Parkway, Stoneware"}', tokens, names)
    assert len(tokens) > 100 and len(names) > 50


def _sync(client: Client, district_id: str, body: dict[str, Any]) -> dict[str, Any]:
    run_id = client.force_sync(district_id, body)
    return client.wait_run(district_id, run_id, timeout_s=180)


def test_no_name_email_or_secret_in_any_log_line_or_api_error(stack: CapturedStack) -> None:
    district = generate_district()
    tokens, names = private_terms(district)
    district_id = f"privacy-{uuid.uuid4().hex[:8]}"
    client = Client(stack.api_url)
    api_text: list[str] = []  # every answer of the API that is not roster data

    with DemoSis(district, client_id=DEMO_CLIENT_ID, client_secret=SECRET) as sis:
        settings = demo_settings(sis.url)
        settings["source"]["credentialsParameter"] = f"/rostersync/districts/{district_id}/credentials"
        ssm = stack.aws("ssm")
        ssm.put_parameter(
            Name=settings["source"]["credentialsParameter"],
            Type="SecureString",
            Value=json.dumps({"clientId": DEMO_CLIENT_ID, "clientSecret": SECRET}),
        )
        ssm.put_parameter(
            Name=f"/rostersync/districts/{district_id}/settings", Type="String", Value=json.dumps(settings)
        )
        client.post("/_local/settings/scan")

        # A full sync: rejected records (no email, duplicate email) and warnings
        first = _sync(client, district_id, {"mode": "full"})
        assert first["status"] == "succeeded", first
        assert first["errors"] and first["warnings"]
        # A run halted by the safeguard: a fifth of the students gone from the SIS
        students = [u["sourcedId"] for u in district.users if u["role"] == "student"]
        for sourced_id in students[: len(students) // 5]:
            district.remove("users", sourced_id)
        halted = _sync(client, district_id, {"mode": "full"})
        assert halted["status"] == "halted", halted
        # A fetch that fails: the SIS refuses every request
        sis.fail_next(403, count=500)
        failed = _sync(client, district_id, {"mode": "full"})
        assert failed["status"] == "failed", failed
        sis.clear_faults()

        runs = client.all_items(f"/districts/{district_id}/runs")
        for run in runs:
            api_text.append(json.dumps(client.get(f"/districts/{district_id}/runs/{run['runId']}")))
            for kind in ("errors", "warnings"):
                api_text.append(
                    json.dumps(client.all_items(f"/districts/{district_id}/runs/{run['runId']}/{kind}"))
                )

    # Bad requests that carry a student's email and names
    student = next(u for u in district.users if u["role"] == "student" and u.get("email"))
    email, given, family = student["email"], student["givenName"], student["familyName"]
    d = f"{stack.api_url}/districts/{district_id}"
    bad_requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"{d}/users", {"params": {"email": email, "role": given}}),
        ("GET", f"{d}/users", {"params": {"email": email, "status": family}}),
        ("GET", f"{d}/users", {"params": {"email": email, "limit": family}}),
        ("GET", f"{d}/classes", {"params": {"includeHidden": email}}),
        ("GET", f"{d}/runs/{email}", {}),
        ("GET", f"{d}/runs/{email}/errors", {}),
        ("GET", f"{stack.api_url}/districts/{email}/runs", {}),
        ("GET", f"{stack.api_url}/districts/{given}.{family}/users", {}),
        ("POST", f"{d}/sync", {"json": {"mode": email}}),
        ("POST", f"{d}/sync", {"json": {"dryRun": given, "confirmDeletes": family}}),
        ("POST", f"{d}/sync", {"data": f'{{"mode": "{email}", "{given}": '}),
        ("POST", f"{d}/pushes", {"json": {"name": given}}),
        ("GET", f"{d}/pushes/{email}", {}),
        ("PUT", f"{d}/pushes/{family}/users/0", {"json": {"records": [student]}}),
        ("POST", f"{d}/pushes/{email}/complete", {"json": {"mode": family}}),
        ("GET", f"{stack.api_url}/{email}", {}),
        # A refused caller whose role session is named after a person (as identity centers do)
        (
            "GET",
            f"{d}/runs",
            {"headers": {LOCAL_CALLER_HEADER: f"arn:aws:sts::123456789012:assumed-role/t/{email}"}},
        ),
    ]
    for method, url, options in bad_requests:
        answer = requests.request(method, url, timeout=30, **options)
        assert 400 <= answer.status_code < 500, (method, url, answer.status_code)
        assert set(answer.json()) == {"error"}, answer.text
        api_text.append(answer.text)

    logs = stack.stop()
    assert '"district_id"' in logs and district_id in logs  # the functions did log, structured
    assert '"api access refused"' in logs and "arn:aws:iam::123456789012:role/t" in logs

    # Then no name, email or username is in any of it
    assert find_leaks(logs, tokens, names) == [], _context(logs, find_leaks(logs, tokens, names))
    answers = "\n".join(api_text)
    assert find_leaks(answers, tokens, names) == [], _context(answers, find_leaks(answers, tokens, names))
    # Nor the credentials secret, nor the OAuth access token the SIS issued
    assert SECRET not in logs and SECRET not in answers
    assert "Bearer" not in logs and "access_token" not in logs


def _context(text: str, leaks: list[str]) -> str:
    """Where each leak is, to fix it at its source."""
    shown = []
    for leak in leaks[:5]:
        at = text.lower().find(leak.lower())
        shown.append(f"{leak!r}: ...{text[max(0, at - 300) : at + 100]}...")
    return "\n".join(shown)
