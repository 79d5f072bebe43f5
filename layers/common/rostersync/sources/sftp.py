"""Pick up the newest OneRoster CSV bundle from a district's SFTP server.

`fetch_newest_bundle` connects with paramiko, checks the server's host key
against the one pinned in settings (`sftp.hostKey`, e.g. "ssh-ed25519 AAAA...")
*before* any credential is sent, logs in with a password or a private key,
lists the folder, and downloads the newest bundle not processed yet: a `*.zip`
file, or a folder holding `manifest.csv`. "Newest" is by modification time,
then by name, so two bundles uploaded in the same second still come in order.

Every failure is a `SourceError` naming host, port and path (never a password
or a key), so the run fails and deletes nothing.
"""

from __future__ import annotations

import io
import os
import socket
import stat
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from rostersync.errors import SourceError

DEFAULT_TIMEOUT_S = 30.0
# A bundle zip bigger than this is not a roster (the largest districts make ~300 MB).
MAX_BUNDLE_BYTES = 4 * 1024**3
MANIFEST = "manifest.csv"

# Host key algorithms to offer per pinned key type, so the server shows the
# pinned key and not another one it also holds.
_HOST_KEY_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),  # an RSA key, signed with SHA-2
}


@dataclass(frozen=True)
class _Candidate:
    name: str
    mtime: int
    is_dir: bool
    size: int


def fetch_newest_bundle(
    host: str,
    port: int,
    path: str,
    username: str,
    host_key: str,
    credentials: Mapping[str, Any],
    processed: Set[str],
    dest_dir: Path,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bundle_bytes: int = MAX_BUNDLE_BYTES,
    name: str | None = None,
) -> tuple[str, Path] | None:
    """Download the newest bundle in `path` whose name is not in `processed`.

    Returns (bundle name, local path under `dest_dir`), or None when there is
    nothing new. `credentials` holds `password`, or `privateKey` (OpenSSH or
    PEM text) with an optional `passphrase`. With `name`, download that
    bundle (a fetch continued in a new invocation reads the one it began);
    it being gone is a `SourceError`.
    """
    where = f"SFTP {host}:{port} {path}"
    pinned_type, pinned_key = parse_host_key(host_key, host)
    login = _login_from(credentials)  # a bad key fails here, before any network
    transport: paramiko.Transport | None = None
    try:
        transport = _connect(host, port, pinned_type, timeout_s)
        _check_host_key(transport, host, pinned_type, pinned_key)
        _authenticate(transport, username, login, where)
        sftp = paramiko.SFTPClient.from_transport(transport)
        if sftp is None:
            raise SourceError(f"{where}: the server refused the sftp subsystem")
        with sftp:
            sftp.get_channel().settimeout(timeout_s)  # type: ignore[union-attr]
            if name is not None:
                candidate = next((c for c in _candidates(sftp, path, where) if c.name == name), None)
                if candidate is None:
                    raise SourceError(f"{where}: bundle {name[:80]!r} is gone from the server")
            else:
                candidate = _newest(sftp, path, processed, where)
            if candidate is None:
                return None
            return candidate.name, _download(sftp, path, candidate, dest_dir, max_bundle_bytes, where)
    except SourceError:
        raise
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SourceError(f"{where}: {_describe(exc)}") from None
    finally:
        if transport is not None:
            transport.close()


# ---- host key -----------------------------------------------------------------------


def parse_host_key(host_key: str, host: str) -> tuple[str, str]:
    """(key type, base64 key) of a pinned key; a trailing comment or a known_hosts host prefix is ignored."""
    tokens = host_key.split()
    for position, token in enumerate(tokens[:-1]):
        if token in _HOST_KEY_ALGORITHMS:
            return token, tokens[position + 1]
    raise SourceError(
        f"sftp.hostKey for {host} is not a public key line such as 'ssh-ed25519 AAAA...'"
        f" (supported types: {', '.join(_HOST_KEY_ALGORITHMS)})"
    )


def _connect(host: str, port: int, key_type: str, timeout_s: float) -> paramiko.Transport:
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise SourceError(f"SFTP {host}:{port}: cannot connect ({_describe(exc)})") from None
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout_s
    transport.handshake_timeout = timeout_s
    transport.auth_timeout = timeout_s
    transport.get_security_options().key_types = _HOST_KEY_ALGORITHMS[key_type]
    try:
        transport.start_client(timeout=timeout_s)
    except paramiko.SSHException as exc:
        transport.close()
        if "host key" in str(exc).lower():
            raise SourceError(
                f"host key of {host} does not match the pinned key: the server offers no {key_type} key"
            ) from None
        raise SourceError(f"SFTP {host}:{port}: SSH handshake failed ({_describe(exc)})") from None
    return transport


def _check_host_key(transport: paramiko.Transport, host: str, key_type: str, key: str) -> None:
    offered = transport.get_remote_server_key()
    if offered.get_name() != key_type or offered.get_base64() != key:
        transport.close()
        # The fingerprint lets an administrator compare with the server's own.
        raise SourceError(
            f"host key of {host} does not match the pinned key"
            f" (server offered {offered.get_name()} {offered.fingerprint}); nothing was sent"
        )


# ---- login ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Login:
    password: str | None = None
    key: paramiko.PKey | None = None

    def __repr__(self) -> str:  # never show a secret, even in a traceback's locals
        return f"_Login(method={'password' if self.password is not None else 'private key'})"


def _login_from(credentials: Mapping[str, Any]) -> _Login:
    private_key = credentials.get("privateKey")
    if private_key:
        return _Login(key=load_private_key(str(private_key), credentials.get("passphrase")))
    password = credentials.get("password")
    if password:
        return _Login(password=str(password))
    raise SourceError("the credentials parameter has neither 'password' nor 'privateKey'")


def load_private_key(text: str, passphrase: str | None = None) -> paramiko.PKey:
    """A paramiko key from OpenSSH or PEM private key text (Ed25519, ECDSA or RSA)."""
    data = text.strip().replace("\r\n", "\n").encode() + b"\n"
    secret = passphrase.encode() if passphrase else None
    loaded: object
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=secret)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=secret)
    except (ValueError, TypeError):
        # TypeError: encrypted without a passphrase, or a passphrase for a plain key.
        raise SourceError(
            "the private key in the credentials parameter cannot be read"
            " (not an OpenSSH or PEM key, or a wrong or missing passphrase)"
        ) from None
    key_class: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    else:
        raise SourceError("the private key in the credentials parameter is of an unsupported type")
    try:
        return key_class.from_private_key(io.StringIO(data.decode()), password=passphrase or None)
    except (paramiko.SSHException, ValueError):
        raise SourceError("the private key in the credentials parameter cannot be read") from None


def _authenticate(transport: paramiko.Transport, username: str, login: _Login, where: str) -> None:
    method = "password" if login.password is not None else "private key"
    try:
        if login.password is not None:
            transport.auth_password(username, login.password)
        else:
            transport.auth_publickey(username, login.key)
    except paramiko.BadAuthenticationType as exc:
        allowed = ", ".join(exc.allowed_types) or "none"
        raise SourceError(
            f"{where}: the server does not accept {method} login (it allows: {allowed})"
        ) from None
    except paramiko.AuthenticationException:
        raise SourceError(f"{where}: login as {username!r} with {method} refused") from None
    if not transport.is_authenticated():
        raise SourceError(f"{where}: login as {username!r} with {method} refused")


# ---- choosing and downloading ----------------------------------------------------------


def _newest(sftp: paramiko.SFTPClient, path: str, processed: Set[str], where: str) -> _Candidate | None:
    candidates = [c for c in _candidates(sftp, path, where) if c.name not in processed]
    return max(candidates, key=lambda c: (c.mtime, c.name), default=None)


def _candidates(sftp: paramiko.SFTPClient, path: str, where: str) -> list[_Candidate]:
    try:
        entries = sftp.listdir_attr(path)
    except OSError as exc:
        raise SourceError(f"{where}: cannot list the folder ({_describe(exc)})") from None
    found = []
    for entry in entries:
        # Dot files are uploads in progress (".roster.zip.part") or system files;
        # symbolic links would let one bundle appear under two names.
        if entry.filename.startswith(".") or entry.st_mode is None or stat.S_ISLNK(entry.st_mode):
            continue
        if stat.S_ISREG(entry.st_mode) and entry.filename.lower().endswith(".zip"):
            found.append(_Candidate(entry.filename, entry.st_mtime or 0, False, entry.st_size or 0))
        elif stat.S_ISDIR(entry.st_mode):
            manifest_mtime = _manifest_mtime(sftp, _join(path, entry.filename))
            if manifest_mtime is not None:
                # A loose bundle is written file by file; its newest part dates it.
                mtime = max(entry.st_mtime or 0, manifest_mtime)
                found.append(_Candidate(entry.filename, mtime, True, 0))
    return found


def _manifest_mtime(sftp: paramiko.SFTPClient, folder: str) -> int | None:
    try:
        attrs = sftp.stat(_join(folder, MANIFEST))
    except OSError:
        return None  # a folder without a manifest is not a bundle
    return attrs.st_mtime or 0


def _download(
    sftp: paramiko.SFTPClient, path: str, candidate: _Candidate, dest_dir: Path, max_bytes: int, where: str
) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    local = _local_path(dest_dir, candidate.name, where)
    remote = _join(path, candidate.name)
    if not candidate.is_dir:
        _get_file(sftp, remote, local, candidate.size, max_bytes, where)
        return local
    local.mkdir(exist_ok=True)
    budget = max_bytes
    for entry in sftp.listdir_attr(remote):
        if entry.st_mode is None or not stat.S_ISREG(entry.st_mode) or entry.filename.startswith("."):
            continue  # a loose bundle is flat: one folder of CSV files
        size = entry.st_size or 0
        _get_file(
            sftp,
            _join(remote, entry.filename),
            _local_path(local, entry.filename, where),
            size,
            budget,
            where,
        )
        budget -= size
    return local


def _get_file(
    sftp: paramiko.SFTPClient, remote: str, local: Path, size: int, max_bytes: int, where: str
) -> None:
    if size > max_bytes:
        raise SourceError(f"{where}: {PurePosixPath(remote).name} is {size} bytes, more than {max_bytes}")
    # Downloaded under a temporary name: a broken transfer never looks like a bundle.
    partial = local.with_name(f".{local.name}.part")
    try:
        sftp.get(remote, str(partial))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, local)


def _local_path(folder: Path, name: str, where: str) -> Path:
    local = folder / name
    # Remote names come from the server: one must not write outside dest_dir.
    if name in ("", ".", "..") or "/" in name or "\\" in name or local.resolve().parent != folder.resolve():
        raise SourceError(f"{where}: refusing the remote name {name[:80]!r}")
    return local


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if folder not in ("", ".") else name


def _describe(exc: BaseException) -> str:
    """A reason without secrets: the exception type and its message (paramiko's never hold credentials)."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
