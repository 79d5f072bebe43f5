"""The connector for a district's `source` settings."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from rostersync.config import get_config
from rostersync.errors import SourceError
from rostersync.pipeline.queues import RunMessage
from rostersync.sources.base import Connector

DEFAULT_MAX_CONCURRENCY = 8


def _secret(credentials: dict[str, Any], *names: str) -> str:
    for name in names:
        if credentials.get(name):
            return str(credentials[name])
    raise SourceError(f"credentials parameter has no {names[0]!r}")


def build_connector(
    source: dict[str, Any],
    credentials: dict[str, Any],
    *,
    district_id: str,
    message: RunMessage,
    processed_bundles: frozenset[str] = frozenset(),
) -> Connector:
    """source: the settings' `source` object (SPEC 3 names); credentials: its SecureString JSON."""
    kind = source.get("type")
    if message.checkpoint.get("bundleKey") and kind != "oneroster-csv":
        raise SourceError(f"a bundle uploaded to inbox/ needs source type 'oneroster-csv', not {kind!r}")
    page_size = source.get("pageSize") or 100
    rate = source.get("maxRequestsPerMinute")
    # Pages in flight at once where the source tells its total (settings maxConcurrency).
    concurrency = int(source.get("maxConcurrency") or DEFAULT_MAX_CONCURRENCY)
    if kind == "oneroster":
        from rostersync.sources.oneroster_rest import OneRosterRestConnector

        return OneRosterRestConnector(
            base_url=source["baseUrl"],
            version=source["version"],
            auth=source["auth"],
            token_url=source.get("tokenUrl"),
            client_id=_secret(credentials, "clientId", "consumerKey", "key"),
            client_secret=_secret(credentials, "clientSecret", "consumerSecret", "secret"),
            page_size=page_size,
            max_requests_per_minute=rate,
            concurrency=concurrency,
            timeout_s=get_config().source_timeout_s,
            backoff_base_s=get_config().source_retry_base_s,
        )
    if kind == "powerschool":
        from rostersync.sources.powerschool import PowerSchoolConnector

        return PowerSchoolConnector(
            base_url=source["baseUrl"],
            client_id=_secret(credentials, "clientId"),
            client_secret=_secret(credentials, "clientSecret"),
            page_size=page_size,
            max_requests_per_minute=rate,
            concurrency=concurrency,
        )
    if kind == "direct":
        from rostersync.sources.direct import DirectPushConnector

        push_id = message.checkpoint.get("pushId")
        if not push_id:
            raise SourceError("a direct source is synced when a push completes: POST /districts/{id}/pushes")
        return DirectPushConnector(district_id, str(push_id))
    if kind == "oneroster-csv":
        return _csv_bundle(
            source, credentials, district_id=district_id, message=message, processed=processed_bundles
        )
    raise SourceError(f"source type {kind!r} is not supported")


def _csv_bundle(
    source: dict[str, Any],
    credentials: dict[str, Any],
    *,
    district_id: str,
    message: RunMessage,
    processed: frozenset[str],
) -> Connector:
    from rostersync.sources.oneroster_csv import OneRosterCsvBundle

    class DownloadedBundle(OneRosterCsvBundle):
        """A bundle copied to local disk for the run; the copy goes when the run is done with it."""

        def close(self) -> None:
            try:
                super().close()
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    workdir = Path(tempfile.mkdtemp(prefix="rostersync-bundle-"))
    bundle_key = message.checkpoint.get("bundleKey")
    if bundle_key:
        from rostersync.staging.pages import download

        local = workdir / Path(str(bundle_key)).name
        download(str(bundle_key), local)
        message.checkpoint["bundleName"] = str(bundle_key)
        return DownloadedBundle(local, page_size=source.get("pageSize") or 1000)
    sftp = source.get("sftp")
    if not sftp:
        raise SourceError(f"no bundle to read: upload one to inbox/{district_id}/ or configure source.sftp")
    from rostersync.sources.sftp import fetch_newest_bundle

    # A continued fetch reads the very bundle it began, even if a newer one arrived since.
    resuming = message.type == "continue" and message.checkpoint.get("bundleName")
    found = fetch_newest_bundle(
        host=sftp["host"],
        port=int(sftp.get("port") or 22),
        path=sftp["path"],
        username=sftp["username"],
        host_key=sftp["hostKey"],
        credentials=credentials,
        processed=set(processed),
        dest_dir=workdir,
        name=str(message.checkpoint["bundleName"]) if resuming else None,
    )
    if found is None:
        shutil.rmtree(workdir, ignore_errors=True)
        raise NoNewBundleError(f"no new bundle in {sftp['path']} on {sftp['host']}")
    name, local = found
    # Remembered once the fetch has read it, so the next run picks a newer one.
    message.checkpoint["bundleName"] = name
    return DownloadedBundle(local, page_size=source.get("pageSize") or 1000)


class NoNewBundleError(SourceError):
    """Nothing new on the SFTP server: the run ends with nothing to do, not as a failure."""

    code = "no_new_bundle"
