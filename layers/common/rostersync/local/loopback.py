"""A test or demo HTTP server on loopback, served from a daemon thread.

The demo SIS (`demo_sis.DemoSis`) and the PowerSchool test server
(`powerschool_sis.PowerSchoolSis`) differ in what they answer, not in how they
start and stop: that part is here.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import Self


class LoopbackServer:
    """Start, stop and address an HTTP server; a subclass makes it (`_http_server`)."""

    label = "server"  # "the {label} is not started"
    thread_name = "loopback-server"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port  # port 0: any free port, known once started
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _http_server(self) -> ThreadingHTTPServer:
        raise NotImplementedError

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._server = self._http_server()
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's base URL."""
        if self._server is None:
            raise RuntimeError(f"the {self.label} is not started")
        return f"http://{self.host}:{self.port}"
