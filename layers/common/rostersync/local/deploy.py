"""Deploy `template.yaml` onto a running moto server, the way CloudFormation would.

The SAM template is translated offline with samtranslator (the library behind
`sam deploy`'s transform) and created as a stack through moto's CloudFormation,
so the embedded stack and the tests run on the resources, names and settings of
the template itself, not on a copy that could drift.

moto's CloudFormation (5.2) creates every resource of the template but leaves
some of their settings out; `deploy_stack` applies those with the service APIs
once the stack is complete, every intrinsic function inside them resolved by
moto itself (see `_Deferred`):

- S3 bucket: `NotificationConfiguration` (S3 -> StagingQueue),
  `PublicAccessBlockConfiguration`, `LifecycleConfiguration`,
  `OwnershipControls`, `VersioningConfiguration` are ignored;
- DynamoDB table: `PointInTimeRecoverySpecification` and
  `TimeToLiveSpecification` are ignored, and `SSESpecification` is read under
  the API's key `Enabled` rather than CloudFormation's `SSEEnabled`;
- Lambda function: `Layers` is ignored (and `Ref` of a layer version answers
  the object's repr), `Architectures` too (no API can set it afterwards, so
  functions read x86_64 on the emulator);
- `AWS::SQS::QueuePolicy`, `AWS::S3::BucketPolicy`,
  `AWS::Lambda::EventInvokeConfig`, `AWS::ApiGateway::Stage`,
  `AWS::CloudWatch::Alarm` and `AWS::Scheduler::*` are not supported at all
  (the alarms are put with `PutMetricAlarm`: moto keeps them, never fires them);
- `Ref` of an `AWS::Events::EventBus` answers the object's repr, not the
  bus name: such `Ref`s are rewritten as `Fn::GetAtt [bus, Name]`;
- `AWS::ApiGateway::RestApi` ignores its OpenAPI `Body`, so the deployment
  that SAM adds fails ("no methods"): the body is put with `PutRestApi` and the
  stage deployed afterwards.

Three differences are deliberate. Every function and the layer get a tiny
placeholder zip (moto cannot run Lambda code without Docker; the embedded stack
calls the handlers in-process). The SQS event source mappings are created
*disabled*: enabled, moto would try to invoke the function (in Docker) on every
SendMessage and swallow the message; they stay visible through
`ListEventSourceMappings` (queue, function, batch size), so the embedded stack
can wire queues to handlers from the template itself. The staging bucket's
"deny unless HTTPS" statement is left out of its policy: moto enforces bucket
policies and the emulator serves plain HTTP on loopback.

This module is for the local stack and the tests only: the Lambda runtime never
imports it (it needs samtranslator and aws-sam-cli from the dev dependencies).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

# Template Outputs -> the environment names that rostersync.config reads.
OUTPUT_ENV: dict[str, str] = {
    "RosterTableName": "ROSTER_TABLE_NAME",
    "StagingBucketName": "STAGING_BUCKET_NAME",
    "RunQueueUrl": "RUN_QUEUE_URL",
    "RunQueueArn": "RUN_QUEUE_ARN",
    "ApplyQueueUrl": "APPLY_QUEUE_URL",
    "SchedulerRoleArn": "SCHEDULER_ROLE_ARN",
    "SchedulerGroupName": "SCHEDULER_GROUP",
    "RunEventBusName": "RUN_EVENT_BUS_NAME",
}

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[4] / "template.yaml"
ARTIFACT_BUCKET = "rostersync-local-artifacts"
ARTIFACT_KEY = "placeholder.zip"
PLACEHOLDER_CODE_URI = f"s3://{ARTIFACT_BUCKET}/{ARTIFACT_KEY}"

# Outputs added to resolve deferred properties; never returned to callers.
_RESOLVE_OUTPUT_PREFIX = "RostersyncLocalResolve"
_INTRINSICS = frozenset(
    {
        "Ref",
        "Fn::GetAtt",
        "Fn::Sub",
        "Fn::Join",
        "Fn::Select",
        "Fn::If",
        "Fn::FindInMap",
        "Fn::ImportValue",
        "Fn::Base64",
    }
)
# Properties moto's CloudFormation ignores; deploy_stack applies them itself.
_DROPPED_PROPERTIES: dict[str, tuple[str, ...]] = {
    "AWS::S3::Bucket": (
        "PublicAccessBlockConfiguration",
        "OwnershipControls",
        "VersioningConfiguration",
        "LifecycleConfiguration",
        "NotificationConfiguration",
    ),
    "AWS::DynamoDB::Table": ("PointInTimeRecoverySpecification", "TimeToLiveSpecification"),
    "AWS::ApiGateway::RestApi": ("Body",),
    # Architectures too, but no API can change it after creation: moto's
    # functions read x86_64.
    "AWS::Lambda::Function": ("Layers",),
}
# Resource types whose `Ref` moto answers with the object's repr instead of
# what CloudFormation answers; their `Ref`s are read through this attribute.
_REF_ATTRIBUTE = {"AWS::Events::EventBus": "Name"}
# Resource types that deploy_stack applies itself after the stack is created.
_DEFERRED_TYPES = frozenset(
    {
        "AWS::SQS::QueuePolicy",
        "AWS::S3::BucketPolicy",
        "AWS::Lambda::EventInvokeConfig",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::Stage",
        "AWS::Scheduler::ScheduleGroup",
        "AWS::Scheduler::Schedule",
        "AWS::CloudWatch::Alarm",
    }
)

logger = logging.getLogger(__name__)


class DeployError(RuntimeError):
    """The stack could not be created on the emulator."""


# --------------------------------------------------------------- translate ---


class OfflineManagedPolicyLoader:
    """samtranslator asks IAM for the ARNs of AWS managed policies named by
    short name in `Policies`. The template names none (SAM adds its own by
    ARN), so no lookup is needed and nothing goes to the network."""

    def load(self) -> dict[str, str]:
        return {}


@contextmanager
def _region_env(region: str) -> Iterator[None]:
    """samtranslator derives the partition from the default region."""
    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved


def load_sam_template(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The SAM template as a dict, short-form tags (`!Ref`, `!Sub`...) expanded
    exactly as the SAM CLI expands them."""
    from samcli.yamlhelper import yaml_parse

    return yaml_parse(Path(path).read_text())


def translate_template(
    path: str | os.PathLike[str] = DEFAULT_TEMPLATE,
    *,
    parameter_values: Mapping[str, Any] | None = None,
    code_uri: str = PLACEHOLDER_CODE_URI,
    region: str = "us-east-1",
) -> dict[str, Any]:
    """Translate the SAM template to plain CloudFormation, offline.

    Local `CodeUri`/`ContentUri` folders are replaced by `code_uri` (an S3
    URI), as `sam package` would replace them by the uploaded artifact.
    """
    from samtranslator.translator.transform import transform

    sam = load_sam_template(path)
    for resource in sam.get("Resources", {}).values():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Serverless::Function" and "InlineCode" not in props:
            props["CodeUri"] = code_uri
        elif resource.get("Type") == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = code_uri
    sam.get("Globals", {}).get("Function", {}).pop("CodeUri", None)

    sam_logger = logging.getLogger("samtranslator")
    level = sam_logger.level
    sam_logger.setLevel(logging.ERROR)  # it logs feature-toggle chatter at INFO
    try:
        with _region_env(region):
            return transform(sam, dict(parameter_values or {}), OfflineManagedPolicyLoader())
    finally:
        sam_logger.setLevel(level)


def cached_translation(
    path: str | os.PathLike[str] = DEFAULT_TEMPLATE,
    *,
    parameter_values: Mapping[str, Any] | None = None,
    region: str = "us-east-1",
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """`translate_template`, kept on disk by the template's bytes, the
    parameters and the samtranslator version: a hit skips importing the SAM
    libraries, most of the time a deploy spends before moto starts creating."""
    from importlib.metadata import version

    template_bytes = Path(path).read_bytes()
    key = hashlib.sha256(
        json.dumps(
            [
                hashlib.sha256(template_bytes).hexdigest(),
                dict(parameter_values or {}),
                region,
                PLACEHOLDER_CODE_URI,
                version("aws-sam-translator"),
                version("aws-sam-cli"),
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    directory = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "rostersync-translated"
    cached = directory / f"{key}.json"
    try:
        return dict(json.loads(cached.read_text()))
    except (OSError, ValueError):
        pass
    cfn = translate_template(path, parameter_values=parameter_values, region=region)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f"{key}.{os.getpid()}.tmp"
        partial.write_text(json.dumps(cfn))
        partial.replace(cached)  # atomic: parallel test workers may race here
    except OSError:
        logger.warning("could not cache the translated template", extra={"path": str(cached)})
    return cfn


# ------------------------------------------------------- moto preparation ---


class _Deferred:
    """Properties that moto's CloudFormation would drop, kept for after create.

    Every intrinsic function inside them is swapped for a token and added to
    the stack as an extra Output, so moto resolves `Ref`, `Fn::GetAtt` and
    `Fn::Sub` itself; `resolve` puts the values back.
    """

    def __init__(self) -> None:
        self.outputs: dict[str, dict[str, Any]] = {}
        self.items: list[tuple[str, str, Any]] = []  # (kind, logical id, properties)

    def add(self, kind: str, logical_id: str, properties: Any) -> None:
        self.items.append((kind, logical_id, self._tokenize(copy.deepcopy(properties))))

    def _tokenize(self, node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1 and next(iter(node)) in _INTRINSICS:
                token = f"{_RESOLVE_OUTPUT_PREFIX}{len(self.outputs)}"
                self.outputs[token] = {"Value": node}
                return {"__token__": token}
            return {key: self._tokenize(value) for key, value in node.items()}
        if isinstance(node, list):
            return [self._tokenize(value) for value in node]
        return node

    @staticmethod
    def resolve(node: Any, values: Mapping[str, str]) -> Any:
        if isinstance(node, dict):
            if set(node) == {"__token__"}:
                return values[node["__token__"]]
            return {key: _Deferred.resolve(value, values) for key, value in node.items()}
        if isinstance(node, list):
            return [_Deferred.resolve(value, values) for value in node]
        return node


def prepare_for_moto(cfn: dict[str, Any]) -> tuple[dict[str, Any], _Deferred]:
    """A copy of the translated template that moto's CloudFormation creates
    completely, and what to apply after it."""
    template = copy.deepcopy(cfn)
    resources: dict[str, Any] = template["Resources"]
    template = _refs_as_attributes(template, resources)
    resources = template["Resources"]
    deferred = _Deferred()

    for logical_id, resource in list(resources.items()):
        kind = resource["Type"]
        props = resource.setdefault("Properties", {})
        if kind in _DEFERRED_TYPES:
            del resources[logical_id]
            if kind == "AWS::ApiGateway::Stage":
                props.pop("DeploymentId", None)  # a new deployment makes the stage
            if kind != "AWS::ApiGateway::Deployment":
                deferred.add(kind, logical_id, props)
            continue
        dropped = {key: props.pop(key) for key in _DROPPED_PROPERTIES.get(kind, ()) if key in props}
        if "Layers" in dropped:
            # moto answers `Ref` of a LayerVersion with the object's repr, not
            # its ARN: name the layer instead and look the ARN up afterwards.
            dropped["Layers"] = [_layer_name(layer, resources) for layer in dropped["Layers"]]
        if dropped:
            deferred.add(kind, logical_id, {"Ref": {"Ref": logical_id}, **dropped})
        if kind == "AWS::DynamoDB::Table" and "SSESpecification" in props:
            # moto reads the API's name of the switch, CloudFormation's is SSEEnabled.
            sse = props["SSESpecification"]
            sse["Enabled"] = sse.get("SSEEnabled", False)
        elif kind == "AWS::Lambda::EventSourceMapping":
            # Enabled, moto would invoke the function (Docker) on each message.
            props["Enabled"] = False

    # Nothing may wait on a resource that is no longer in the template.
    for resource in resources.values():
        depends = resource.get("DependsOn")
        if depends is not None:
            kept = [d for d in ([depends] if isinstance(depends, str) else depends) if d in resources]
            if kept:
                resource["DependsOn"] = kept
            else:
                del resource["DependsOn"]

    template.setdefault("Outputs", {}).update(deferred.outputs)
    return template, deferred


def _refs_as_attributes(node: Any, resources: Mapping[str, Any]) -> Any:
    """`{"Ref": X}` as `{"Fn::GetAtt": [X, attribute]}` where moto's `Ref` of X is wrong."""
    if isinstance(node, dict):
        if set(node) == {"Ref"} and isinstance(node["Ref"], str):
            attribute = _REF_ATTRIBUTE.get(resources.get(node["Ref"], {}).get("Type", ""))
            if attribute:
                return {"Fn::GetAtt": [node["Ref"], attribute]}
        return {key: _refs_as_attributes(value, resources) for key, value in node.items()}
    if isinstance(node, list):
        return [_refs_as_attributes(value, resources) for value in node]
    return node


def _layer_name(layer: Any, resources: Mapping[str, Any]) -> Any:
    if isinstance(layer, dict) and set(layer) == {"Ref"}:
        target = resources.get(layer["Ref"], {})
        if target.get("Type") == "AWS::Lambda::LayerVersion":
            return {"LayerLogicalId": layer["Ref"]}
    return layer


def placeholder_zip() -> bytes:
    """The code moto stores for every function and the layer."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "app.py",
            "def lambda_handler(event, context):\n"
            "    raise RuntimeError('placeholder: the embedded stack runs handlers in-process')\n",
        )
    return buffer.getvalue()


# ------------------------------------------------------------------ deploy ---


def _clients(endpoint_url: str, region: str) -> dict[str, Any]:
    # Any credentials do for moto; fixed ones never reach for a profile or IMDS.
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - the emulator's, not a secret
        region_name=region,
    )
    config = BotoConfig(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=120)
    names = ("cloudformation", "s3", "sqs", "dynamodb", "lambda", "apigateway", "scheduler", "cloudwatch")
    return {name: session.client(name, endpoint_url=endpoint_url, config=config) for name in names}  # type: ignore[call-overload]


def _stack_status(cloudformation: Any, stack_name: str) -> dict[str, Any] | None:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise
    return stacks[0] if stacks else None


def _wait_for_stack(cloudformation: Any, stack_name: str, timeout_s: float = 60.0) -> dict[str, Any]:
    # Not the boto3 waiter: it sleeps 30 s between polls; moto is usually done
    # by the time CreateStack answers.
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        stack = _stack_status(cloudformation, stack_name)
        status = stack["StackStatus"] if stack else "MISSING"
        if status.endswith("_COMPLETE") and "ROLLBACK" not in status:
            return stack  # type: ignore[return-value]
        if status.endswith(("_FAILED", "ROLLBACK_COMPLETE")) or time.monotonic() > deadline:
            events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
            reasons = [
                f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}"
                for e in events
                if e.get("ResourceStatusReason")
            ]
            raise DeployError(f"stack {stack_name} ended {status}: {reasons[:5]}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _ensure_artifact(s3: Any, region: str) -> None:
    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=ARTIFACT_BUCKET)
        else:
            s3.create_bucket(Bucket=ARTIFACT_BUCKET, CreateBucketConfiguration={"LocationConstraint": region})
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    s3.put_object(Bucket=ARTIFACT_BUCKET, Key=ARTIFACT_KEY, Body=placeholder_zip())


def _s3_notification(config: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's NotificationConfiguration in the S3 API's shape."""

    def filter_of(item: Mapping[str, Any]) -> dict[str, Any]:
        rules = item.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        if not rules:
            return {}
        return {"Filter": {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}}

    shapes = (
        ("QueueConfigurations", "Queue", "QueueArn"),
        ("TopicConfigurations", "Topic", "TopicArn"),
        ("LambdaConfigurations", "Function", "LambdaFunctionArn"),
    )
    api: dict[str, Any] = {}
    for section, cfn_key, api_key in shapes:
        items = config.get(section) or []
        if items:
            api[section] = [
                {api_key: item[cfn_key], "Events": [item["Event"]], **filter_of(item)} for item in items
            ]
    if config.get("EventBridgeConfiguration", {}).get("EventBridgeEnabled"):
        api["EventBridgeConfiguration"] = {}
    return api


def _policy_json(document: Any) -> str:
    return document if isinstance(document, str) else json.dumps(document)


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """One CloudFormation lifecycle rule in the S3 API's shape."""
    api: dict[str, Any] = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "Id" in rule:
        api["ID"] = rule["Id"]
    if "ExpirationInDays" in rule:
        api["Expiration"] = {"Days": rule["ExpirationInDays"]}
    if "AbortIncompleteMultipartUpload" in rule:
        api["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    if "NoncurrentVersionExpirationInDays" in rule:
        api["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule["NoncurrentVersionExpirationInDays"]}
    ignored = set(rule) - {
        "Id",
        "Status",
        "Prefix",
        "ExpirationInDays",
        "AbortIncompleteMultipartUpload",
        "NoncurrentVersionExpirationInDays",
    }
    if ignored:
        logger.warning("lifecycle rule settings not applied on the emulator", extra={"keys": sorted(ignored)})
    return api


def _apply_bucket_settings(s3: Any, bucket: str, props: Mapping[str, Any]) -> None:
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    if "OwnershipControls" in props:
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=props["OwnershipControls"])
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]}
        )
    if "LifecycleConfiguration" in props:
        rules = [_lifecycle_rule(rule) for rule in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    if "NotificationConfiguration" in props:
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration=_s3_notification(props["NotificationConfiguration"])
        )


def _apply_table_settings(dynamodb: Any, table: str, props: Mapping[str, Any]) -> None:
    if "PointInTimeRecoverySpecification" in props:
        dynamodb.update_continuous_backups(
            TableName=table, PointInTimeRecoverySpecification=props["PointInTimeRecoverySpecification"]
        )
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )


# Order of application: a queue policy before the notification that needs it
# (S3 checks it may send), an API's methods before the stage that deploys them.
_PHASE = {
    "AWS::SQS::QueuePolicy": 0,
    "AWS::S3::BucketPolicy": 0,
    "AWS::Scheduler::ScheduleGroup": 0,
    "AWS::S3::Bucket": 1,
    "AWS::DynamoDB::Table": 1,
    "AWS::ApiGateway::RestApi": 1,
    "AWS::Lambda::Function": 1,
    "AWS::Lambda::EventInvokeConfig": 1,
    "AWS::ApiGateway::Stage": 2,
    "AWS::Scheduler::Schedule": 2,
    "AWS::CloudWatch::Alarm": 2,
}


def _layer_arn(lambda_: Any, layer: Any) -> str:
    if not isinstance(layer, dict):
        return str(layer)
    # moto names a stack's layer {stack}-{logical id}-{suffix}, whatever its LayerName.
    infix = f"-{layer['LayerLogicalId']}-"
    for candidate in lambda_.list_layers()["Layers"]:
        if infix in candidate["LayerName"]:
            return str(candidate["LatestMatchingVersion"]["LayerVersionArn"])
    raise DeployError(f"layer {layer['LayerLogicalId']} not found on the emulator")


def _without_tls_only_denies(document: Any) -> dict[str, Any]:
    """The policy less its "deny unless HTTPS" statements: moto enforces
    bucket policies, and the emulator serves plain HTTP on loopback."""
    policy = json.loads(document) if isinstance(document, str) else copy.deepcopy(document)
    statements = policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]
    policy["Statement"] = [
        s for s in statements if not (s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s))
    ]
    return policy


def _apply_deferred(clients: Mapping[str, Any], deferred: _Deferred, values: Mapping[str, str]) -> None:
    items = [
        (kind, logical_id, _Deferred.resolve(props, values)) for kind, logical_id, props in deferred.items
    ]
    items.sort(key=lambda item: _PHASE[item[0]])

    for kind, logical_id, props in items:
        if kind == "AWS::SQS::QueuePolicy":
            for queue_url in props["Queues"]:
                clients["sqs"].set_queue_attributes(
                    QueueUrl=queue_url, Attributes={"Policy": _policy_json(props["PolicyDocument"])}
                )
        elif kind == "AWS::S3::BucketPolicy":
            policy = _without_tls_only_denies(props["PolicyDocument"])
            if policy["Statement"]:
                clients["s3"].put_bucket_policy(Bucket=props["Bucket"], Policy=json.dumps(policy))
        elif kind == "AWS::S3::Bucket":
            _apply_bucket_settings(clients["s3"], props["Ref"], props)
        elif kind == "AWS::DynamoDB::Table":
            _apply_table_settings(clients["dynamodb"], props["Ref"], props)
        elif kind == "AWS::ApiGateway::RestApi":
            clients["apigateway"].put_rest_api(
                restApiId=props["Ref"], mode="overwrite", body=json.dumps(props["Body"]).encode()
            )
        elif kind == "AWS::Lambda::Function":
            layers = [_layer_arn(clients["lambda"], layer) for layer in props["Layers"]]
            clients["lambda"].update_function_configuration(FunctionName=props["Ref"], Layers=layers)
        elif kind == "AWS::Lambda::EventInvokeConfig":
            options = {
                k: props[k] for k in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds") if k in props
            }
            if props.get("DestinationConfig"):
                options["DestinationConfig"] = props["DestinationConfig"]
            clients["lambda"].put_function_event_invoke_config(
                FunctionName=props["FunctionName"], Qualifier=props.get("Qualifier", "$LATEST"), **options
            )
        elif kind == "AWS::ApiGateway::Stage":
            clients["apigateway"].create_deployment(
                restApiId=props["RestApiId"],
                stageName=props["StageName"],
                tracingEnabled=bool(props.get("TracingEnabled", False)),
                variables=props.get("Variables") or {},
            )
        elif kind == "AWS::Scheduler::ScheduleGroup":
            clients["scheduler"].create_schedule_group(Name=props.get("Name", logical_id))
        elif kind == "AWS::Scheduler::Schedule":
            clients["scheduler"].create_schedule(**{"Name": logical_id, **props})
        elif kind == "AWS::CloudWatch::Alarm":
            # CloudFormation's properties are PutMetricAlarm's parameters, by the same names.
            clients["cloudwatch"].put_metric_alarm(**{"AlarmName": logical_id, **props})


def deploy_stack(
    endpoint_url: str,
    *,
    template_path: str | os.PathLike[str] = DEFAULT_TEMPLATE,
    stack_name: str = "rostersync",
    region: str = "us-east-1",
    parameters: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Create the template's stack on the moto server at `endpoint_url` and
    answer its Outputs as {OutputKey: OutputValue}.

    A stack of that name already complete on the server is not created again;
    its outputs are answered.
    """
    started = time.perf_counter()
    # Translated before the server is first asked anything: a server that has
    # just started is still importing its CloudFormation engine meanwhile.
    template, deferred = prepare_for_moto(
        cached_translation(template_path, parameter_values=parameters, region=region)
    )
    clients = _clients(endpoint_url, region)
    cloudformation = clients["cloudformation"]

    existing = _stack_status(cloudformation, stack_name)
    if existing is None or existing["StackStatus"] in ("DELETE_COMPLETE",):
        _ensure_artifact(clients["s3"], region)
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        stack = _wait_for_stack(cloudformation, stack_name)
        all_outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        _apply_deferred(clients, deferred, all_outputs)
    else:
        stack = _wait_for_stack(cloudformation, stack_name)
        all_outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    outputs = {k: v for k, v in all_outputs.items() if not k.startswith(_RESOLVE_OUTPUT_PREFIX)}
    logger.info(
        "stack deployed on emulator",
        extra={"stack_name": stack_name, "seconds": round(time.perf_counter() - started, 3)},
    )
    return outputs


def env_from_outputs(outputs: Mapping[str, str]) -> dict[str, str]:
    """The environment that rostersync.config reads, from the stack Outputs
    (what Lambda gets from the template's Globals on AWS)."""
    return {env: outputs[key] for key, env in OUTPUT_ENV.items() if key in outputs}
