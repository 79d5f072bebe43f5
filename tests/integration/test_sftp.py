"""SFTP pick-up against a real OpenSSH sshd on a loopback port.

The `sshd` fixture starts Debian's `/usr/sbin/sshd` with a configuration of its
own (temp host key, temp authorized_keys, internal-sftp) and a dedicated test
user whose password it sets, so both password and key logins are real. It
needs root (sshd's privilege separation) and skips with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sshd_server import TEST_USER, Sshd, running_sshd
from sshd_server import free_port as _free_port
from sshd_server import openssh_private as _openssh_private
from sshd_server import openssh_public as _openssh_public

from rostersync.errors import SourceError
from rostersync.local.demo_csv import write_bundle
from rostersync.local.demo_data import generate_district
from rostersync.sources.oneroster_csv import OneRosterCsvBundle
from rostersync.sources.sftp import fetch_newest_bundle, load_private_key, parse_host_key

HOST_KEY_MISMATCH = re.escape("host key of 127.0.0.1 does not match the pinned key")


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    with running_sshd() as server:
        yield server


@pytest.fixture
def outbox(sshd: Sshd) -> Iterator[Path]:
    """The SFTP folder, emptied after each test."""
    yield sshd.folder
    for child in sshd.folder.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def _put_zip(folder: Path, name: str, mtime: int, body: bytes = b"roster") -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("manifest.csv", "propertyName,value\r\n")
        bundle.writestr("payload.txt", body)
    path.chmod(0o644)
    os.utime(path, (mtime, mtime))
    return path


def _put_folder(folder: Path, name: str, mtime: int, *, manifest: bool = True) -> Path:
    path = folder / name
    path.mkdir(mode=0o755)
    files = {"users.csv": "sourcedId\r\n"} | ({"manifest.csv": "propertyName,value\r\n"} if manifest else {})
    for filename, text in files.items():
        (path / filename).write_text(text)
        (path / filename).chmod(0o644)
        os.utime(path / filename, (mtime, mtime))
    os.utime(path, (mtime, mtime))
    return path


def _fetch(
    sshd: Sshd, dest: Path, credentials: dict, processed: set[str] | None = None, **overrides: Any
) -> tuple[str, Path] | None:
    arguments: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": sshd.port,
        "path": str(sshd.folder),
        "username": TEST_USER,
        "host_key": sshd.host_key,
        "credentials": credentials,
        "processed": processed or set(),
        "dest_dir": dest,
        "timeout_s": 10,
    } | overrides
    return fetch_newest_bundle(**arguments)


# ---- login ----------------------------------------------------------------------------


def test_key_login_downloads_the_bundle(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    _put_zip(outbox, "roster-2026-03-01.zip", 1_700_000_000, b"payload")

    fetched = _fetch(sshd, tmp_path, {"privateKey": sshd.private_key})

    assert fetched is not None
    name, local = fetched
    assert name == "roster-2026-03-01.zip"
    assert local == tmp_path / name
    assert local.read_bytes() == (outbox / name).read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no partial download left behind


def test_encrypted_key_login_with_passphrase(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    _put_zip(outbox, "a.zip", 1_700_000_000)

    fetched = _fetch(sshd, tmp_path, {"privateKey": sshd.encrypted_key, "passphrase": sshd.passphrase})

    assert fetched is not None and fetched[0] == "a.zip"


def test_password_login_downloads_the_bundle(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    _put_zip(outbox, "a.zip", 1_700_000_000)

    fetched = _fetch(sshd, tmp_path, {"password": sshd.password})

    assert fetched is not None and fetched[0] == "a.zip"


def test_wrong_password_is_refused_without_echoing_it(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    wrong = "not-the-password-" + secrets.token_hex(4)

    with pytest.raises(SourceError) as refused:
        _fetch(sshd, tmp_path, {"password": wrong})

    message = str(refused.value)
    assert "127.0.0.1" in message and str(sshd.folder) in message and "refused" in message
    assert wrong not in message


def test_unknown_client_key_is_refused(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    stranger = _openssh_private(ed25519.Ed25519PrivateKey.generate())

    with pytest.raises(SourceError, match="login as 'rostersync-sftp' with private key refused"):
        _fetch(sshd, tmp_path, {"privateKey": stranger})


def test_wrong_passphrase_fails_before_connecting(sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot be read") as refused:
        _fetch(sshd, tmp_path, {"privateKey": sshd.encrypted_key, "passphrase": "wrong"})

    assert sshd.passphrase not in str(refused.value)


# ---- host key -------------------------------------------------------------------------


@pytest.fixture
def login_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every credential paramiko is asked to send, by method."""
    attempts: list[str] = []
    original_password = paramiko.Transport.auth_password
    original_key = paramiko.Transport.auth_publickey

    def auth_password(self, username, password, *args, **kwargs):
        attempts.append("password")
        return original_password(self, username, password, *args, **kwargs)

    def auth_publickey(self, username, key, *args, **kwargs):
        attempts.append("publickey")
        return original_key(self, username, key, *args, **kwargs)

    monkeypatch.setattr(paramiko.Transport, "auth_password", auth_password)
    monkeypatch.setattr(paramiko.Transport, "auth_publickey", auth_publickey)
    return attempts


def test_wrong_host_key_is_refused_before_login(
    sshd: Sshd, outbox: Path, tmp_path: Path, login_attempts: list[str]
) -> None:
    _put_zip(outbox, "a.zip", 1_700_000_000)
    impostor = _openssh_public(ed25519.Ed25519PrivateKey.generate())

    with pytest.raises(SourceError, match=HOST_KEY_MISMATCH) as refused:
        _fetch(sshd, tmp_path, {"password": sshd.password}, host_key=impostor)

    assert login_attempts == []
    assert sshd.password not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_pinned_key_of_a_type_the_server_lacks_is_refused(
    sshd: Sshd, tmp_path: Path, login_attempts: list[str]
) -> None:
    ecdsa = _openssh_public(ec.generate_private_key(ec.SECP256R1()))

    with pytest.raises(SourceError, match=HOST_KEY_MISMATCH):
        _fetch(sshd, tmp_path, {"privateKey": sshd.private_key}, host_key=ecdsa)

    assert login_attempts == []


def test_right_host_key_then_login(
    sshd: Sshd, outbox: Path, tmp_path: Path, login_attempts: list[str]
) -> None:
    _put_zip(outbox, "a.zip", 1_700_000_000)
    pinned_with_comment = f"{sshd.host_key} root@sftp.example.org"

    assert _fetch(sshd, tmp_path, {"password": sshd.password}, host_key=pinned_with_comment) is not None
    assert login_attempts == ["password"]


def test_host_key_setting_that_is_not_a_key_is_a_source_error() -> None:
    with pytest.raises(
        SourceError, match=re.escape("sftp.hostKey for sftp.example.org is not a public key line")
    ):
        parse_host_key("SHA256:abcdef", "sftp.example.org")


# ---- choosing the bundle ---------------------------------------------------------------


def test_newest_unprocessed_bundle_is_picked(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    _put_zip(outbox, "a-old.zip", 1_700_000_000)
    _put_zip(outbox, "b-tie.zip", 1_700_000_100)
    _put_zip(outbox, "c-tie.zip", 1_700_000_100)  # same second as b: the name breaks the tie
    _put_folder(outbox, "d-loose", 1_700_000_200)
    _put_folder(outbox, "e-no-manifest", 1_700_000_900, manifest=False)  # not a bundle
    _put_zip(outbox, ".f-uploading.zip", 1_700_000_900)  # an upload in progress
    (outbox / "notes.txt").write_text("not a bundle")
    credentials = {"privateKey": sshd.private_key}

    picked: list[str] = []
    processed: set[str] = set()
    while (fetched := _fetch(sshd, tmp_path / str(len(picked)), credentials, processed)) is not None:
        picked.append(fetched[0])
        processed.add(fetched[0])

    assert picked == ["d-loose", "c-tie.zip", "b-tie.zip", "a-old.zip"]


def test_loose_bundle_folder_is_downloaded_whole(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    _put_folder(outbox, "loose", 1_700_000_000)

    fetched = _fetch(sshd, tmp_path, {"password": sshd.password})

    assert fetched is not None
    name, local = fetched
    assert name == "loose" and local.is_dir()
    assert sorted(p.name for p in local.iterdir()) == ["manifest.csv", "users.csv"]


def test_nothing_new_gives_none(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    _put_zip(outbox, "a.zip", 1_700_000_000)
    _put_folder(outbox, "b", 1_700_000_100)

    assert _fetch(sshd, tmp_path, {"password": sshd.password}, processed={"a.zip", "b"}) is None
    assert list(tmp_path.iterdir()) == []


def test_empty_folder_gives_none(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    assert _fetch(sshd, tmp_path, {"privateKey": sshd.private_key}) is None


def test_missing_folder_names_host_and_path(sshd: Sshd, tmp_path: Path) -> None:
    missing = str(sshd.folder / "nowhere")

    with pytest.raises(
        SourceError, match=re.escape(f"SFTP 127.0.0.1:{sshd.port} {missing}: cannot list the folder")
    ):
        _fetch(sshd, tmp_path, {"privateKey": sshd.private_key}, path=missing)


def test_closed_port_is_a_source_error(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there

    with pytest.raises(SourceError, match=re.escape(f"SFTP 127.0.0.1:{port}: cannot connect")):
        fetch_newest_bundle(
            "127.0.0.1", port, "/outbox", "someone", "ssh-ed25519 AAAA", {"password": "x"}, set(), tmp_path,
            timeout_s=5,
        )  # fmt: skip


def test_oversized_bundle_is_refused(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    _put_zip(outbox, "big.zip", 1_700_000_000, b"x" * 10_000)

    with pytest.raises(SourceError, match=r"big\.zip is \d+ bytes, more than 100$"):
        _fetch(sshd, tmp_path, {"password": sshd.password}, max_bundle_bytes=100)


# ---- end to end: the demo district over SFTP --------------------------------------------


def test_demo_bundle_over_sftp_reads_back(sshd: Sshd, outbox: Path, tmp_path: Path) -> None:
    district = generate_district(today=date(2026, 3, 1))
    bundle = write_bundle(district, outbox / "demo.zip")
    bundle.chmod(0o644)

    fetched = _fetch(sshd, tmp_path, {"privateKey": sshd.private_key})

    assert fetched is not None
    with OneRosterCsvBundle(fetched[1]) as read:
        users = [record for page in read.pages("users") for record in page.records]
    assert len(users) == len(district.users)


def test_private_key_loader_accepts_pem_ecdsa() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )

    assert load_private_key(pem).get_name() == "ecdsa-sha2-nistp256"
