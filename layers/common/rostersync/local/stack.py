"""The embedded stack (SPEC 7): template.yaml's resources on a moto server, its
event wiring, its HTTP API on loopback, and the built-in demo SIS.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer

from rostersync import aws
from rostersync.config import get_config
from rostersync.local.deploy import deploy_stack, env_from_outputs
from rostersync.local.functions import REPO_ROOT, load_handler
from rostersync.local.http_api import LOCAL_OPERATOR_ARN, LocalApiServer
from rostersync.local.wiring import QueuePoller, ScheduleFirer, SettingsWatcher

LOCAL_AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",  # the emulator's, not a secret
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Rostersync",
    "POWERTOOLS_SERVICE_NAME": "rostersync",
    # The loopback API calls as this operator unless a request names another
    # caller (local/http_api.py): no IAM here, the same authorization code.
    "OPERATOR_PRINCIPAL_ARN": LOCAL_OPERATOR_ARN,
}


class LocalStack:
    def __init__(
        self,
        *,
        port: int = 3000,
        aws_port: int = 5000,
        host: str = "127.0.0.1",
        root: Path = REPO_ROOT,
        demo_sis: bool = True,
        schedule_interval_s: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.aws_port = aws_port
        self.root = root
        self.with_demo_sis = demo_sis
        self.schedule_interval_s = schedule_interval_s
        self.stop_event = threading.Event()
        self.outputs: dict[str, str] = {}
        self.moto: ThreadedMotoServer | None = None
        self.api: LocalApiServer | None = None
        self.sis: Any = None
        self.pollers: list[QueuePoller] = []
        self.watcher: SettingsWatcher | None = None
        self.firer: ScheduleFirer | None = None

    @property
    def aws_url(self) -> str:
        return f"http://{self.host}:{self.aws_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api.port if self.api else self.port}"

    def start(self) -> LocalStack:
        self.moto = ThreadedMotoServer(ip_address=self.host, port=self.aws_port, verbose=False)
        self.moto.start()
        if self.aws_port == 0:
            self.aws_port = self.moto.get_host_and_port()[1]
        os.environ.update(LOCAL_AWS_ENV)
        os.environ["AWS_ENDPOINT_URL"] = self.aws_url
        self.outputs = deploy_stack(self.aws_url, template_path=self.root / "template.yaml")
        os.environ.update(env_from_outputs(self.outputs))
        get_config.cache_clear()
        aws.reset()

        handlers = {
            name: load_handler(name, self.root)
            for name in ("fetch_roster", "transform_page", "apply_run", "settings_changed", "api")
        }
        config = get_config()
        self.pollers = [
            QueuePoller(
                "FetchRosterFunction",
                config.run_queue_url,
                handlers["fetch_roster"],
                batch_size=1,
                partial_failures=False,
                stop=self.stop_event,
            ),
            QueuePoller(
                "TransformPageFunction",
                self.outputs["StagingQueueUrl"],
                handlers["transform_page"],
                batch_size=10,
                partial_failures=True,
                stop=self.stop_event,
            ),
            QueuePoller(
                "ApplyRunFunction",
                config.apply_queue_url,
                handlers["apply_run"],
                batch_size=1,
                partial_failures=False,
                stop=self.stop_event,
            ),
        ]
        self.watcher = SettingsWatcher(config.settings_prefix, handlers["settings_changed"], self.stop_event)
        self.firer = ScheduleFirer(self.stop_event, lambda: datetime.now(UTC), self.schedule_interval_s)
        for thread in (*self.pollers, self.watcher, self.firer):
            thread.start()

        if self.with_demo_sis:
            from rostersync.local.demo_data import generate_district
            from rostersync.local.demo_sis import DemoSis

            self.sis = DemoSis(generate_district(), host=self.host).start()
        self.api = LocalApiServer(
            handlers["api"], host=self.host, port=self.port, local_routes=self._local_route
        )
        self.api.start()
        return self

    def local_outputs(self) -> dict[str, str]:
        outputs = dict(self.outputs)
        outputs["ApiUrl"] = self.api_url
        outputs["AwsEndpointUrl"] = self.aws_url
        if self.sis is not None:
            outputs["DemoSisUrl"] = self.sis.url
        return outputs

    def _local_route(self, method: str, path: str, body: bytes) -> tuple[int, Any] | None:
        """Local-only routes under /_local: never part of the deployed API."""
        if not path.startswith("/_local/"):
            return None
        if method == "GET" and path == "/_local/outputs":
            return 200, self.local_outputs()
        if method == "POST" and path.startswith("/_local/schedules/") and path.endswith("/fire"):
            name = path.removeprefix("/_local/schedules/").removesuffix("/fire")
            try:
                assert self.firer is not None
                self.firer.fire(name)
            except Exception as error:
                return 404, {
                    "error": {"code": "not_found", "message": f"no schedule {name}: {type(error).__name__}"}
                }
            return 202, {"fired": name}
        if method == "POST" and path == "/_local/settings/scan":
            assert self.watcher is not None
            return 200, {"events": self.watcher.poll_once()}
        return 404, {"error": {"code": "not_found", "message": "no such local route"}}

    def stop(self) -> None:
        self.stop_event.set()
        if self.api:
            self.api.stop()
        if self.sis is not None:
            self.sis.stop()
        for thread in self.pollers:
            thread.join(timeout=5)
        if self.moto:
            self.moto.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
