"""A real OpenSSH sshd on loopback, for the SFTP tests (integration and e2e).

Runs Debian's /usr/sbin/sshd (installed by .ci/run) with a config of its own:
a temp ed25519 host key, a test user with a password (sshd without PAM
refuses a locked account) and an authorized client key.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

SSHD = Path("/usr/sbin/sshd")
TEST_USER = "rostersync-sftp"


@dataclass(frozen=True)
class Sshd:
    port: int
    host_key: str  # "ssh-ed25519 AAAA..." as a district would pin it
    folder: Path  # what the test user sees over SFTP
    password: str
    private_key: str  # OpenSSH text, unencrypted
    encrypted_key: str  # OpenSSH text, passphrase below
    passphrase: str
    username: str = TEST_USER


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def openssh_private(key: ed25519.Ed25519PrivateKey, passphrase: str | None = None) -> str:
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    ).decode()


def openssh_public(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode()


def _ensure_test_user(password: str) -> None:
    if subprocess.run(["id", TEST_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", TEST_USER], check=True, capture_output=True)
    subprocess.run(
        ["chpasswd"], input=f"{TEST_USER}:{password}\n", text=True, check=True, capture_output=True
    )


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sshd exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"sshd did not listen on port {port}: {log.read_text()[-2000:]}")


@contextmanager
def running_sshd() -> Iterator[Sshd]:
    if not SSHD.exists():
        pytest.skip("OpenSSH server not installed (/usr/sbin/sshd missing; apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("starting sshd with its own config and a test user needs root")
    work = Path(tempfile.mkdtemp(prefix="rostersync-sshd-"))
    work.chmod(0o755)  # the test user must reach the SFTP folder through every parent
    folder = work / "outbox"
    folder.mkdir(mode=0o755)
    password = secrets.token_urlsafe(16)
    passphrase = secrets.token_urlsafe(8)
    _ensure_test_user(password)

    host_key = ed25519.Ed25519PrivateKey.generate()
    host_key_path = work / "ssh_host_ed25519_key"
    host_key_path.write_text(openssh_private(host_key))
    host_key_path.chmod(0o600)
    client_key = ed25519.Ed25519PrivateKey.generate()
    authorized = work / "authorized_keys"
    authorized.write_text(openssh_public(client_key) + "\n")
    authorized.chmod(0o644)

    port = free_port()
    config = work / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key_path}",
                f"PidFile {work / 'sshd.pid'}",
                "Subsystem sftp internal-sftp",
                "UsePAM no",
                "StrictModes no",
                f"AuthorizedKeysFile {authorized}",
                "PermitRootLogin yes",
                "PasswordAuthentication yes",
                "KbdInteractiveAuthentication no",
                "MaxAuthTries 10",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    checked = subprocess.run(
        [str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        pytest.fail(f"sshd rejects the test config: {checked.stderr}")
    log = work / "sshd.log"
    process = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(log)])
    try:
        _wait_for_port(port, process, log)
        yield Sshd(
            port=port,
            host_key=openssh_public(host_key),
            folder=folder,
            password=password,
            private_key=openssh_private(client_key),
            encrypted_key=openssh_private(client_key, passphrase),
            passphrase=passphrase,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)
