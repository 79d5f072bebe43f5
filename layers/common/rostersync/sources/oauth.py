"""Credentials for OneRoster REST sources, as `requests` auth objects.

- `OAuth2ClientCredentials`: OAuth 2 client credentials grant (RFC 6749 4.4),
  used by OneRoster 1.2 and by many 1.1 servers. The token is cached until
  shortly before it expires and renewed once when the API answers 401.
- `OAuth1Signer`: OAuth 1.0a request signing with HMAC-SHA256 (RFC 5849),
  the original OneRoster 1.1 scheme: consumer key and secret, no token.

Secrets stay inside these objects: they never appear in a message, a log line
or a URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, quote, urlsplit

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from rostersync.errors import SourceError
from rostersync.sources.http import Clock, HttpClient, redact_url

ONEROSTER_1P2_SCOPE = "https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly"

# RFC 6749 leaves expires_in optional; servers that omit it usually issue
# hour-long tokens, and a 401 renews the token anyway.
_DEFAULT_TOKEN_LIFETIME_S = 3600.0


class OAuth2ClientCredentials(AuthBase):
    """Bearer auth whose token comes from a client-credentials grant.

    Thread-safe: concurrent page fetches share one token, and only one of
    them fetches a new token when it expires or is rejected.
    """

    def __init__(
        self,
        http: HttpClient,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        clock: Clock = time.monotonic,
        refresh_margin_s: float = 60.0,
    ) -> None:
        self._http = http
        self._token_url = token_url
        self._client = HTTPBasicAuth(client_id, client_secret)
        self._scope = scope
        self._clock = clock
        self._refresh_margin_s = refresh_margin_s
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.access_token()}"
        return request

    def access_token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._token, self._expires_at = self._fetch_token()
            return self._token

    def refresh(self, rejected: requests.PreparedRequest) -> bool:
        """Forget the token the server rejected, unless another thread already renewed it."""
        with self._lock:
            if self._token is not None and rejected.headers.get("Authorization") == f"Bearer {self._token}":
                self._token = None
        return True

    def _fetch_token(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        requested_at = self._clock()
        response = self._http.request(
            "POST", self._token_url, data=form, auth=self._client, headers={"Accept": "application/json"}
        )
        token, lifetime = _parse_token_response(response, redact_url(self._token_url))
        # Renew a little early so a token never expires between check and use.
        usable_for = max(lifetime - self._refresh_margin_s, lifetime / 2)
        return token, requested_at + usable_for


def _parse_token_response(response: requests.Response, url: str) -> tuple[str, float]:
    # Messages here never quote the body: a successful token response holds the token.
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise SourceError(f"POST {url}: token response is not valid JSON") from exc
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise SourceError(f"POST {url}: token response has no access_token")
    return token, _token_lifetime(body.get("expires_in"))


def _token_lifetime(expires_in: object) -> float:
    if isinstance(expires_in, bool):
        return _DEFAULT_TOKEN_LIFETIME_S
    try:
        lifetime = float(expires_in)  # type: ignore[arg-type]  # some servers send a string
    except (TypeError, ValueError):
        return _DEFAULT_TOKEN_LIFETIME_S
    return lifetime if math.isfinite(lifetime) and lifetime > 0 else _DEFAULT_TOKEN_LIFETIME_S


class OAuth1Signer(AuthBase):
    """Signs each request (and each retry, with a fresh nonce) per RFC 5849 with HMAC-SHA256."""

    def __init__(
        self,
        consumer_key: str,
        consumer_secret: str,
        *,
        clock: Clock = time.time,
        nonce: Callable[[], str] = lambda: secrets.token_hex(16),
    ) -> None:
        self._consumer_key = consumer_key
        self._key = signing_key(consumer_secret)
        self._clock = clock
        self._nonce = nonce

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        oauth = {
            "oauth_consumer_key": self._consumer_key,
            "oauth_nonce": self._nonce(),
            "oauth_signature_method": "HMAC-SHA256",
            "oauth_timestamp": str(int(self._clock())),
            "oauth_version": "1.0",
        }
        base = signature_base_string(
            request.method or "GET", request.url or "", [*oauth.items(), *_form_body_params(request)]
        )
        oauth["oauth_signature"] = hmac_signature(base, self._key, hashlib.sha256)
        request.headers["Authorization"] = authorization_header(oauth)
        return request


def percent_encode(value: str) -> str:
    """RFC 5849 3.6: UTF-8, then every byte but ALPHA / DIGIT / "-" / "." / "_" / "~" as %XX."""
    return quote(value, safe="")


def base_string_uri(url: str) -> str:
    """RFC 5849 3.4.1.2: lower-case scheme and host, default port dropped, no query."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}.get(scheme)
    port = f":{parts.port}" if parts.port is not None and parts.port != default_port else ""
    return f"{scheme}://{host}{port}{parts.path or '/'}"


def normalized_parameters(params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1.3.2: encode, sort by name then value, join with "=" and "&"."""
    encoded = sorted((percent_encode(name), percent_encode(value)) for name, value in params)
    return "&".join(f"{name}={value}" for name, value in encoded)


def signature_base_string(method: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1: the query of `url` plus `params` (oauth_* and form body ones)."""
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    signed = [(name, value) for name, value in [*query, *params] if name != "oauth_signature"]
    return "&".join(
        (method.upper(), percent_encode(base_string_uri(url)), percent_encode(normalized_parameters(signed)))
    )


def signing_key(consumer_secret: str, token_secret: str = "") -> str:
    return f"{percent_encode(consumer_secret)}&{percent_encode(token_secret)}"


def hmac_signature(base_string: str, key: str, digestmod: Callable = hashlib.sha256) -> str:
    digest = hmac.new(key.encode(), base_string.encode(), digestmod).digest()
    return base64.b64encode(digest).decode("ascii")


def authorization_header(oauth_params: dict[str, str]) -> str:
    return "OAuth " + ", ".join(f'{percent_encode(k)}="{percent_encode(v)}"' for k, v in oauth_params.items())


def _form_body_params(request: requests.PreparedRequest) -> list[tuple[str, str]]:
    # RFC 5849 3.4.1.3.1: a form-encoded body is signed too; other bodies are not.
    raw_type = request.headers.get("Content-Type") or ""
    content_type = raw_type.decode("latin-1") if isinstance(raw_type, bytes) else raw_type
    if not request.body or not content_type.startswith("application/x-www-form-urlencoded"):
        return []
    body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
    return parse_qsl(body, keep_blank_values=True)
