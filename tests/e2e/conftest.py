"""The embedded stack as a user runs it: `rostersync local up` in its own process,
driven over HTTP, with settings written to SSM through the emulator's endpoint.
The demo SIS runs here in the test process so tests can change its data.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from rostersync.local.demo import Client, demo_settings
from rostersync.local.demo_data import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, generate_district
from rostersync.local.demo_sis import DemoSis

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    def __init__(self, api_url: str, aws_url: str) -> None:
        self.api_url = api_url
        self.aws_url = aws_url
        self.client = Client(api_url)

    def aws(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.aws_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def put_settings(self, district_id: str, settings: dict[str, Any] | str) -> None:
        import json

        value = settings if isinstance(settings, str) else json.dumps(settings)
        self.aws("ssm").put_parameter(
            Name=f"/rostersync/districts/{district_id}/settings", Type="String", Value=value, Overwrite=True
        )

    def put_credentials(self, district_id: str, credentials: dict[str, str]) -> None:
        import json

        self.aws("ssm").put_parameter(
            Name=f"/rostersync/districts/{district_id}/credentials",
            Type="SecureString",
            Value=json.dumps(credentials),
            Overwrite=True,
        )

    def scan_settings(self) -> None:
        """Deliver pending settings-change events now rather than at the next poll."""
        self.client.post("/_local/settings/scan")

    def sync(self, district_id: str, body: Any = None) -> dict[str, Any]:
        run_id = self.client.force_sync(district_id, body)
        return self.client.wait_run(district_id, run_id, timeout_s=120)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    port, aws_port = _free_port(), _free_port()
    env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING"}
    env.pop("AWS_ENDPOINT_URL", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rostersync.cli",
            "local",
            "up",
            "--port",
            str(port),
            "--aws-port",
            str(aws_port),
            "--no-demo-sis",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    lines = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if "ready" in line:
            break
    else:
        process.kill()
        pytest.fail("local stack did not become ready:\n" + "".join(lines[-40:]))
    if process.poll() is not None:
        pytest.fail("local stack exited:\n" + "".join(lines[-40:]))
    # Keep draining its output so the pipe never fills and blocks the stack.
    import threading

    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        yield Stack(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{aws_port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def sis() -> Iterator[DemoSis]:
    with DemoSis(generate_district()) as server:
        yield server


@pytest.fixture
def district_id() -> str:
    return f"d-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def connect(stack: Stack, sis: DemoSis, district_id: str) -> Any:
    """Connect `district_id` to the test's demo SIS with the given option overrides."""

    def _connect(version: str = "1.1", **overrides: Any) -> dict[str, Any]:
        settings = demo_settings(sis.url, version, **overrides)
        settings["source"]["credentialsParameter"] = f"/rostersync/districts/{district_id}/credentials"
        stack.put_credentials(district_id, {"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET})
        stack.put_settings(district_id, settings)
        stack.scan_settings()
        return settings

    return _connect


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[Any]:
    """A real sshd on loopback serving bundles over SFTP (key login)."""
    from dataclasses import dataclass

    from sshd_server import running_sshd

    @dataclass(frozen=True)
    class SftpServer:
        root: Path
        port: int
        username: str
        host_key: str
        credentials: dict[str, str]

    with running_sshd() as sshd:
        yield SftpServer(
            sshd.folder, sshd.port, sshd.username, sshd.host_key, {"privateKey": sshd.private_key}
        )
