"""The shared test API.

- The environment is set here, at import, before any test module imports a
  handler: fake AWS credentials in us-east-1 (nothing can reach a real
  account) and the powertools settings of template.yaml's Globals.
- `moto_server` (session): a moto server of this test process (one per
  pytest-xdist worker), on a free loopback port. It runs in a child process:
  `moto.mock_aws` in a unit test resets every moto backend *of its own
  process*, which would wipe a server running in-process, and the child has
  its own interpreter lock. It is started as soon as collection shows that a
  test will need it, so its start-up overlaps the first tests.
- `aws_stack` (session): template.yaml deployed onto that server; sets
  `AWS_ENDPOINT_URL` and the environment of rostersync.config from the stack
  Outputs, and yields the Outputs.
- `clean_table` / `clean_stack` (function): empty the table and the bucket
  (and, for clean_stack, the queues, the district parameters and schedules)
  so tests do not depend on one another.
- `lambda_context`, `load_event(name)` (events/{name}.json).

Tests that do not use `aws_stack` run without the environment it set
(`AWS_ENDPOINT_URL` included), so `moto.mock_aws` intercepts their calls as
usual and a module may point the same names at a server of its own.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = REPO_ROOT / "events"
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account

os.environ.update(
    {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "POWERTOOLS_SERVICE_NAME": "rostersync",
        "POWERTOOLS_METRICS_NAMESPACE": "Rostersync",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOGGER_LOG_EVENT": "false",
        "LOG_LEVEL": "INFO",
        "SAM_CLI_TELEMETRY": "0",
        # The deployment's operator (template OperatorPrincipalArn): the
        # caller of the sample events/api_*.json, allowed on every district.
        "OPERATOR_PRINCIPAL_ARN": "arn:aws:iam::123456789012:user/rostersync-operator",
    }
)
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN"):
    os.environ.pop(_name, None)

# The child that serves moto: prints its port, serves until its stdin closes
# (the test process ended or died), so it never outlives the session.
_MOTO_CHILD = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
import moto.cloudformation.models  # the slow import (~3 s), done before the first CreateStack
sys.stdin.read()
"""


class _MotoChild:
    """One moto server process per test process, started once."""

    process: subprocess.Popen[str] | None = None
    endpoint_url: str | None = None
    log_path = Path(tempfile.gettempdir()) / f"rostersync-moto-{os.getpid()}.log"

    @classmethod
    def start(cls) -> None:
        if cls.process is None:
            with cls.log_path.open("w") as log:
                cls.process = subprocess.Popen(
                    [sys.executable, "-c", _MOTO_CHILD],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )

    @classmethod
    def endpoint(cls, timeout_s: float = 60.0) -> str:
        cls.start()
        process = cls.process
        assert process is not None and process.stdout is not None
        if cls.endpoint_url is None:
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                ready = selector.select(timeout_s)
            line = process.stdout.readline().strip() if ready else ""
            if not line.isdigit():
                process.kill()
                raise RuntimeError(f"moto server did not start: {cls.log_path.read_text()[-2000:]}")
            cls.endpoint_url = f"http://127.0.0.1:{line}"
        return cls.endpoint_url

    @classmethod
    def stop(cls) -> None:
        if cls.process is not None:
            assert cls.process.stdin is not None
            cls.process.stdin.close()
            cls.process.terminate()  # its state is of no further use
            cls.process.wait(timeout=10)
            cls.process = None
            cls.endpoint_url = None


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the server as soon as it is known that a test will want it: its
    start-up (~4 s of imports) then overlaps the tests that run first."""
    if any("moto_server" in getattr(item, "fixturenames", ()) for item in items):
        _MotoChild.start()


def pytest_unconfigure() -> None:
    _MotoChild.stop()  # if no test ended up asking for it


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL of a moto server for this test process."""
    try:
        yield _MotoChild.endpoint()
    finally:
        _MotoChild.stop()


# The environment aws_stack set (empty until it runs).
_STACK_ENV: dict[str, str] = {}


@pytest.fixture(scope="session")
def aws_stack(moto_server: str) -> Iterator[dict[str, str]]:
    """template.yaml deployed on `moto_server`; yields its Outputs.

    Sets AWS_ENDPOINT_URL and the rostersync.config environment for the
    session (restored afterwards), as Lambda's environment would be.
    """
    from rostersync import config
    from rostersync.local.deploy import deploy_stack, env_from_outputs

    outputs = deploy_stack(moto_server, template_path=TEMPLATE_PATH, region=REGION)
    env = {"AWS_ENDPOINT_URL": moto_server, **env_from_outputs(outputs)}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    _STACK_ENV.update(env)
    config.get_config.cache_clear()
    try:
        yield outputs
    finally:
        _STACK_ENV.clear()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        config.get_config.cache_clear()


@pytest.fixture(autouse=True)
def _isolated_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh caches for every test; tests that did not ask for the stack run
    without its environment (so `mock_aws` intercepts their calls)."""
    if "aws_stack" in request.fixturenames:
        request.getfixturevalue("aws_stack")  # its environment is what this test sees
    else:
        # Only what aws_stack set: a test may point the names at its own server.
        for name, value in _STACK_ENV.items():
            if os.environ.get(name) == value:
                monkeypatch.delenv(name)
    _clear_caches()
    yield
    _clear_caches()


_clients_endpoint: list[str | None] = [None]


def _clear_caches() -> None:
    """Config and powertools values every time; the shared boto3 clients (and
    powertools' providers, which hold one) when the endpoint they were made
    for is no longer the one in the environment. Making clients is slow, so
    they are not remade for every test."""
    from rostersync import config

    config.get_config.cache_clear()
    parameters = sys.modules.get("aws_lambda_powertools.utilities.parameters.base")
    if parameters is not None:
        for provider in parameters.DEFAULT_PROVIDERS.values():  # type: ignore[attr-defined]
            provider.clear_cache()
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint != _clients_endpoint[0]:
        _clients_endpoint[0] = endpoint
        shared = sys.modules.get("rostersync.aws")
        if shared is not None:
            shared.reset()  # type: ignore[attr-defined]
        if parameters is not None:
            parameters.DEFAULT_PROVIDERS.clear()  # type: ignore[attr-defined]


def _client(service: str, endpoint_url: str) -> Any:
    import boto3

    return boto3.client(service, region_name=REGION, endpoint_url=endpoint_url)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def aws_clients(aws_stack: dict[str, str], moto_server: str) -> Callable[[str], Any]:
    """`aws_clients("dynamodb")`: a boto3 client of the emulator (cached)."""
    cache: dict[str, Any] = {}

    def get(service: str) -> Any:
        if service not in cache:
            cache[service] = _client(service, moto_server)
        return cache[service]

    return get


def _empty_table(dynamodb: Any, table_name: str) -> None:
    paginator = dynamodb.get_paginator("scan")
    keys = [
        {"pk": item["pk"], "sk": item["sk"]}
        for page in paginator.paginate(TableName=table_name, ProjectionExpression="pk, sk")
        for item in page["Items"]
    ]
    for start in range(0, len(keys), 25):
        requests = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]
        pending: dict[str, Any] = {table_name: requests}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def _empty_bucket(s3: Any, bucket: str) -> None:
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        objects = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})


@pytest.fixture
def clean_table(aws_stack: dict[str, str], aws_clients: Callable[[str], Any]) -> dict[str, str]:
    """Empty roster table and staging bucket; yields the stack Outputs."""
    _empty_table(aws_clients("dynamodb"), aws_stack["RosterTableName"])
    _empty_bucket(aws_clients("s3"), aws_stack["StagingBucketName"])
    return aws_stack


@pytest.fixture
def clean_stack(clean_table: dict[str, str], aws_clients: Callable[[str], Any]) -> dict[str, str]:
    """clean_table, plus: every stack queue purged, the district parameters
    (/rostersync/...) and the rostersync-* schedules deleted."""
    sqs = aws_clients("sqs")
    for key, value in clean_table.items():
        if key.endswith("QueueUrl"):
            sqs.purge_queue(QueueUrl=value)

    ssm = aws_clients("ssm")
    names = [
        parameter["Name"]
        for page in ssm.get_paginator("get_parameters_by_path").paginate(Path="/rostersync", Recursive=True)
        for parameter in page["Parameters"]
    ]
    for start in range(0, len(names), 10):
        ssm.delete_parameters(Names=names[start : start + 10])

    scheduler = aws_clients("scheduler")
    group = clean_table.get("SchedulerGroupName", "default")
    for page in scheduler.get_paginator("list_schedules").paginate(GroupName=group, NamePrefix="rostersync-"):
        for schedule in page["Schedules"]:
            scheduler.delete_schedule(Name=schedule["Name"], GroupName=group)
    return clean_table


@dataclass
class FakeLambdaContext:
    """What handlers and powertools read from Lambda's context object."""

    function_name: str = "rostersync-test-function"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:rostersync-test-function"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/rostersync-test-function"
    log_stream_name: str = "2026/01/01/[$LATEST]test"
    timeout_ms: int = 900_000
    _deadline: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.set_remaining_time_in_millis(self.timeout_ms)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def set_remaining_time_in_millis(self, millis: int) -> None:
        """Pretend the invocation has `millis` left (e.g. to force a checkpoint)."""
        self._deadline = time.monotonic() + millis / 1000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


def _read_event(name: str) -> dict[str, Any]:
    path = EVENTS_DIR / f"{name.removesuffix('.json')}.json"
    return json.loads(path.read_text())


@pytest.fixture
def load_event() -> Callable[[str], dict[str, Any]]:
    """`load_event("sqs_run_start")` -> the parsed events/sqs_run_start.json
    (a fresh copy each call, so tests may change it)."""
    return _read_event
