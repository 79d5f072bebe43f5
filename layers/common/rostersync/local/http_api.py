"""The HTTP API of SPEC 6 on loopback: requests become API Gateway REST proxy events.

There is no IAM on loopback. The event's caller (`requestContext.identity.userArn`,
which API Gateway fills after SigV4 on AWS) is the local operator
`LOCAL_OPERATOR_ARN` (the embedded stack makes it the deployment's operator),
unless the request carries the local-only header `X-Rostersync-Local-Caller`:
its value is taken as the caller's ARN, and an empty value sends no identity at
all. Tests use it to act as a district's caller; it means nothing on AWS, where
API Gateway builds the identity itself and a client cannot choose it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rostersync.local.functions import Handler, LocalContext

LOCAL_OPERATOR_ARN = "arn:aws:iam::123456789012:role/rostersync-local-operator"
LOCAL_CALLER_HEADER = "X-Rostersync-Local-Caller"

LocalRoute = Callable[[str, str, bytes], tuple[int, Any] | None]


def api_gateway_event(
    method: str, raw_path: str, headers: dict[str, str], body: bytes, caller: str | None = LOCAL_OPERATOR_ARN
) -> dict[str, Any]:
    parts = urlsplit(raw_path)
    headers = {k: v for k, v in headers.items() if k.lower() != LOCAL_CALLER_HEADER.lower()}
    identity: dict[str, Any] = {"sourceIp": "127.0.0.1"}
    if caller:
        identity |= {"userArn": caller, "accountId": caller.split(":")[4] if caller.count(":") >= 5 else None}
    query = parse_qs(parts.query, keep_blank_values=True)
    text = body.decode("utf-8", errors="replace") if body else None
    return {
        "resource": parts.path,
        "path": parts.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": parts.path,
            "httpMethod": method,
            "path": f"/v1{parts.path}",
            "stage": "v1",
            "requestId": str(uuid.uuid4()),
            "identity": identity,
            "accountId": "123456789012",
        },
        "body": text,
        "isBase64Encoded": False,
    }


class LocalApiServer:
    def __init__(self, handler: Handler, *, host: str, port: int, local_routes: LocalRoute) -> None:
        api_handler = handler
        extra = local_routes

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return  # request lines may carry query values (emails): keep them out of logs

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                local = extra(self.command, self.path, body)
                if local is not None:
                    status, payload = local
                    self._send(status, {"Content-Type": "application/json"}, json.dumps(payload))
                    return
                named = self.headers.get(LOCAL_CALLER_HEADER)
                caller = LOCAL_OPERATOR_ARN if named is None else named.strip() or None
                event = api_gateway_event(self.command, self.path, dict(self.headers.items()), body, caller)
                answer = api_handler(event, LocalContext("ApiFunction"))
                headers = dict(answer.get("headers") or {})
                for name, values in (answer.get("multiValueHeaders") or {}).items():
                    headers[name] = values[-1]
                self._send(int(answer["statusCode"]), headers, answer.get("body") or "")

            def _send(self, status: int, headers: dict[str, str], body: str) -> None:
                data = body.encode()
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _handle
            do_POST = _handle
            do_PUT = _handle
            do_DELETE = _handle
            do_PATCH = _handle

        self.server = ThreadingHTTPServer((host, port), RequestHandler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="local-api", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
