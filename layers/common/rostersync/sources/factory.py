"""The connector for a district's `source` settings."""

from __future__ import annotations

from typing import Any

from rostersync.errors import SourceError
from rostersync.sources.base import Connector


def _secret(credentials: dict[str, Any], *names: str) -> str:
    for name in names:
        if credentials.get(name):
            return str(credentials[name])
    raise SourceError(f"credentials parameter has no {names[0]!r}")


def build_connector(source: dict[str, Any], credentials: dict[str, Any]) -> Connector:
    """source: the settings' `source` object (SPEC 3 names); credentials: its SecureString JSON."""
    kind = source.get("type")
    if kind == "oneroster":
        from rostersync.sources.oneroster_rest import OneRosterRestConnector

        return OneRosterRestConnector(
            base_url=source["baseUrl"],
            version=source["version"],
            auth=source["auth"],
            token_url=source.get("tokenUrl"),
            client_id=_secret(credentials, "clientId", "consumerKey", "key"),
            client_secret=_secret(credentials, "clientSecret", "consumerSecret", "secret"),
            page_size=source.get("pageSize") or 100,
            max_requests_per_minute=source.get("maxRequestsPerMinute"),
        )
    raise SourceError(f"source type {kind!r} cannot be fetched yet")
