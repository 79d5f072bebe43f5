"""template.yaml: what it declares (static, on the SAM and translated
templates) and what it creates (deployed on the moto server)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from rostersync import config as config_module
from rostersync.local.deploy import OUTPUT_ENV, cached_translation, env_from_outputs, load_sam_template

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"

EXPECTED_OUTPUTS = {
    "StagingBucketName",
    "RosterTableName",
    "ApiUrl",
    "RunQueueUrl",
    "RunQueueArn",
    "StagingQueueUrl",
    "ApplyQueueUrl",
    "RunDeadLetterQueueUrl",
    "StagingDeadLetterQueueUrl",
    "ApplyDeadLetterQueueUrl",
    "SchedulerRoleArn",
    "FetchRosterFunctionName",
    "TransformPageFunctionName",
    "ApplyRunFunctionName",
    "SettingsChangedFunctionName",
    "ApiFunctionName",
}
FUNCTIONS = {
    "FetchRosterFunction": "functions/fetch_roster/",
    "TransformPageFunction": "functions/transform_page/",
    "ApplyRunFunction": "functions/apply_run/",
    "SettingsChangedFunction": "functions/settings_changed/",
    "ApiFunction": "functions/api/",
}
API_ROUTES = {
    ("post", "/districts/{id}/sync"),
    ("get", "/districts/{id}/runs"),
    ("get", "/districts/{id}/runs/{runId}"),
    ("get", "/districts/{id}/schools"),
    ("get", "/districts/{id}/classes"),
    ("get", "/districts/{id}/users"),
    ("get", "/districts/{id}/runs/{runId}/errors"),
    ("get", "/districts/{id}/runs/{runId}/warnings"),
    ("post", "/districts/{id}/pushes"),
    ("get", "/districts/{id}/pushes/{pushId}"),
    ("put", "/districts/{id}/pushes/{pushId}/{entity}/{page}"),
    ("post", "/districts/{id}/pushes/{pushId}/complete"),
}
# Allow statements whose Resource may be "*": (role, action) -> why AWS needs it.
# Empty today: X-Ray and logs come through the AWS managed policies below, and
# powertools Metrics writes EMF to the log (no cloudwatch:PutMetricData).
STAR_RESOURCE_ALLOWED: dict[tuple[str, str], str] = {}
# The managed policies SAM attaches by itself, and why they are acceptable.
MANAGED_POLICIES_ALLOWED = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": "logs:CreateLogStream/PutLogEvents",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": "Tracing: Active; X-Ray takes no resource ARNs",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": "SQS event source polling",
}


# ------------------------------------------------------------------ static ---


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_sam_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return cached_translation(TEMPLATE_PATH)  # keyed by the template bytes: never stale


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_statements(cfn: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in cfn["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                for statement in _as_list(policy["PolicyDocument"]["Statement"]):
                    yield logical_id, statement
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for statement in _as_list(props["PolicyDocument"]["Statement"]):
                yield logical_id, statement


def test_no_allow_statement_has_a_star_resource_or_a_wildcard_action(cfn: dict[str, Any]) -> None:
    statements = list(_role_statements(cfn))
    assert len(statements) > 10
    for role, statement in statements:
        if statement["Effect"] != "Allow":
            continue
        actions = _as_list(statement["Action"])
        for action in actions:
            assert "*" not in action, f"{role}: wildcard action {action}"
        if "*" in _as_list(statement["Resource"]):
            for action in actions:
                assert (role, action) in STAR_RESOURCE_ALLOWED, f"{role}: {action} on Resource '*'"


def test_only_the_expected_managed_policies_are_attached(cfn: dict[str, Any]) -> None:
    for logical_id, resource in cfn["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            for arn in resource["Properties"].get("ManagedPolicyArns", []):
                assert arn in MANAGED_POLICIES_ALLOWED, f"{logical_id}: {arn}"


def test_resource_policies_allow_only_their_source(cfn: dict[str, Any]) -> None:
    for logical_id, resource in cfn["Resources"].items():
        if resource["Type"] in ("AWS::SQS::QueuePolicy", "AWS::S3::BucketPolicy"):
            for statement in _as_list(resource["Properties"]["PolicyDocument"]["Statement"]):
                if statement["Effect"] == "Allow":
                    assert "aws:SourceArn" in json.dumps(statement.get("Condition")), logical_id


def test_staging_bucket_denies_plain_http(sam: dict[str, Any]) -> None:
    statements = sam["Resources"]["StagingBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )


def test_credentials_are_decrypted_through_ssm_only(sam: dict[str, Any]) -> None:
    statements = [
        s
        for policy in sam["Resources"]["FetchRosterFunction"]["Properties"]["Policies"]
        for s in policy.get("Statement", [])
    ]
    (kms,) = [s for s in statements if s["Action"] == "kms:Decrypt"]
    assert kms["Condition"] == {
        "StringEquals": {"kms:ViaService": {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"}}
    }
    for statement in statements:
        if any(a.startswith("ssm:") for a in _as_list(statement["Action"])):
            assert statement["Resource"]["Fn::Sub"].endswith(":parameter/rostersync/districts/*")


def test_every_function_is_declared_as_agreed(sam: dict[str, Any]) -> None:
    resources = sam["Resources"]
    globals_ = sam["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.11"
    assert globals_["Architectures"] == ["arm64"]
    assert globals_["Tracing"] == "Active"
    assert globals_["Layers"] == [{"Ref": "CommonLayer"}]
    assert resources["CommonLayer"]["Metadata"]["BuildMethod"] == "python3.11"
    assert resources["CommonLayer"]["Properties"]["ContentUri"] == "layers/common"
    for name, code_uri in FUNCTIONS.items():
        props = resources[name]["Properties"]
        assert props["CodeUri"] == code_uri
        assert props.get("Handler", globals_.get("Handler")) == "app.lambda_handler"


def test_globals_give_every_name_config_reads(sam: dict[str, Any]) -> None:
    variables = sam["Globals"]["Function"]["Environment"]["Variables"]
    for env in set(OUTPUT_ENV.values()) | {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "LOG_LEVEL",
    }:
        assert env in variables, env
    assert variables["POWERTOOLS_SERVICE_NAME"] == "rostersync"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Rostersync"
    # Every OUTPUT_ENV name is a field of rostersync.config.
    assert set(OUTPUT_ENV.values()) <= set(config_module._ENV.values())


def test_every_function_has_a_log_group_with_retention(sam: dict[str, Any]) -> None:
    groups = {
        json.dumps(r["Properties"]["LogGroupName"]): r["Properties"]
        for r in sam["Resources"].values()
        if r["Type"] == "AWS::Logs::LogGroup"
    }
    for name in FUNCTIONS:
        props = groups.get(json.dumps({"Fn::Sub": f"/aws/lambda/${{{name}}}"}))
        assert props is not None, f"{name} has no log group"
        assert props["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_asynchronously_invoked_functions_have_a_dead_letter_destination(sam: dict[str, Any]) -> None:
    props = sam["Resources"]["SettingsChangedFunction"]["Properties"]
    on_failure = props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["SettingsDeadLetterQueue", "Arn"]}}
    (event,) = props["Events"].values()
    assert event["Type"] == "EventBridgeRule"
    assert event["Properties"]["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": ["SettingsDeadLetterQueue", "Arn"]}
    }
    assert event["Properties"]["Pattern"] == {
        "source": ["aws.ssm"],
        "detail-type": ["Parameter Store Change"],
        "detail": {"name": [{"prefix": "/rostersync/districts/"}]},
    }


def test_sqs_visibility_timeouts_cover_six_function_timeouts(sam: dict[str, Any]) -> None:
    resources = sam["Resources"]
    default_timeout = sam["Globals"]["Function"]["Timeout"]
    for name in FUNCTIONS:
        props = resources[name]["Properties"]
        for event in props.get("Events", {}).values():
            if event["Type"] == "SQS":
                queue = event["Properties"]["Queue"]["Fn::GetAtt"][0]
                visibility = resources[queue]["Properties"]["VisibilityTimeout"]
                assert visibility >= 6 * props.get("Timeout", default_timeout), name


def test_api_is_iam_authorised_on_every_route(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    api = sam["Resources"]["RosterApi"]["Properties"]
    assert api["StageName"] == "v1"
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    assert api["TracingEnabled"] is True
    routes = {
        (e["Properties"]["Method"], e["Properties"]["Path"])
        for e in sam["Resources"]["ApiFunction"]["Properties"]["Events"].values()
        if e["Type"] == "Api"
    }
    assert routes >= API_ROUTES
    body = cfn["Resources"]["RosterApi"]["Properties"]["Body"]
    for path, methods in body["paths"].items():
        for method, operation in methods.items():
            assert operation["security"] == [{"AWS_IAM": []}], f"{method} {path}"


def test_template_outputs_are_the_agreed_names(sam: dict[str, Any]) -> None:
    assert set(sam["Outputs"]) >= EXPECTED_OUTPUTS
    assert sam["Outputs"]["ApiUrl"]["Value"] == {
        "Fn::Sub": "https://${RosterApi}.execute-api.${AWS::Region}.amazonaws.com/v1"
    }


# ---------------------------------------------------------------- deployed ---


def test_every_output_is_deployed(aws_stack: dict[str, str]) -> None:
    missing = EXPECTED_OUTPUTS - {k for k, v in aws_stack.items() if v}
    assert not missing
    assert aws_stack["ApiUrl"].startswith("https://") and aws_stack["ApiUrl"].endswith("/v1")
    assert aws_stack["RunQueueArn"].startswith("arn:aws:sqs:us-east-1:")


def test_env_from_outputs_feeds_config(aws_stack: dict[str, str]) -> None:
    env = env_from_outputs(aws_stack)
    assert set(env) == set(OUTPUT_ENV.values())
    config = config_module.get_config()
    assert config.roster_table_name == aws_stack["RosterTableName"]
    assert config.staging_bucket_name == aws_stack["StagingBucketName"]
    assert config.run_queue_url == aws_stack["RunQueueUrl"]
    assert config.run_queue_arn == aws_stack["RunQueueArn"]
    assert config.apply_queue_url == aws_stack["ApplyQueueUrl"]
    assert config.scheduler_role_arn == aws_stack["SchedulerRoleArn"]
    assert config.scheduler_group == "default"


def test_table(aws_stack: dict[str, str], aws_clients: Callable[[str], Any]) -> None:
    dynamodb = aws_clients("dynamodb")
    name = aws_stack["RosterTableName"]
    table = dynamodb.describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    (gsi,) = table["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "ByEmail"
    assert gsi["KeySchema"] == [
        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
    ]
    assert gsi["Projection"]["ProjectionType"] == "ALL"
    assert table["SSEDescription"]["Status"] == "ENABLED"
    backups = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expiresAt"}


def test_bucket(aws_stack: dict[str, str], aws_clients: Callable[[str], Any]) -> None:
    s3 = aws_clients("s3")
    bucket = aws_stack["StagingBucketName"]
    assert bucket == "rostersync-staging-123456789012-us-east-1"
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    expiry = {
        (r.get("Filter", {}).get("Prefix") or r.get("Prefix")): r["Expiration"]["Days"]
        for r in rules
        if r["Status"] == "Enabled"
    }
    assert expiry == {"staging/": 7, "inbox/": 30, "pushes/": 7, "state/": 30}


def _staging_queue_arn(aws_stack: dict[str, str], sqs: Any) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=aws_stack["StagingQueueUrl"], AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def test_bucket_notifies_staging_queue(aws_stack: dict[str, str], aws_clients: Callable[[str], Any]) -> None:
    s3, sqs = aws_clients("s3"), aws_clients("sqs")
    configuration = s3.get_bucket_notification_configuration(Bucket=aws_stack["StagingBucketName"])
    staging_arn = _staging_queue_arn(aws_stack, sqs)
    (queue_config,) = [c for c in configuration["QueueConfigurations"] if c["QueueArn"] == staging_arn]
    assert queue_config["Events"] == ["s3:ObjectCreated:*"]
    rules = {r["Name"].lower(): r["Value"] for r in queue_config["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "staging/", "suffix": ".json"}
    # S3 may send to the queue only from this bucket.
    policy = sqs.get_queue_attributes(QueueUrl=aws_stack["StagingQueueUrl"], AttributeNames=["Policy"])
    assert f"arn:aws:s3:::{aws_stack['StagingBucketName']}" in policy["Attributes"]["Policy"]


def test_an_inbox_upload_starts_a_run(clean_stack: dict[str, str], aws_clients: Callable[[str], Any]) -> None:
    s3, sqs = aws_clients("s3"), aws_clients("sqs")
    s3.put_object(Bucket=clean_stack["StagingBucketName"], Key="inbox/lincoln/bundle 1.zip", Body=b"PK")
    bodies = [b for b in _drain(sqs, clean_stack["RunQueueUrl"]) if "Records" in b]
    (record,) = [r for b in bodies for r in b["Records"]]
    assert record["s3"]["object"]["key"] in ("inbox/lincoln/bundle+1.zip", "inbox%2Flincoln%2Fbundle+1.zip")

    from rostersync.pipeline.queues import run_messages

    (message,) = run_messages(json.dumps(bodies[0]))
    assert (message.districtId, message.trigger) == ("lincoln", "inbox")
    assert message.checkpoint == {"bundleKey": "inbox/lincoln/bundle 1.zip"}


def _drain(sqs: Any, queue_url: str, settle_s: float = 0.5) -> list[dict[str, Any]]:
    """Every message now on the queue (deleted as read)."""
    bodies: list[dict[str, Any]] = []
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if not messages:
            time.sleep(0.05)
    return bodies


def test_staged_page_delivers_an_s3_event_to_the_staging_queue(
    clean_stack: dict[str, str], aws_clients: Callable[[str], Any]
) -> None:
    s3, sqs = aws_clients("s3"), aws_clients("sqs")
    bucket, queue_url = clean_stack["StagingBucketName"], clean_stack["StagingQueueUrl"]

    s3.put_object(Bucket=bucket, Key="staging/x/y/z.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="staging/x/y/manifest.txt", Body=b"-")  # suffix filter
    s3.put_object(Bucket=bucket, Key="inbox/x/bundle.json", Body=b"{}")  # prefix filter

    records = [record for body in _drain(sqs, queue_url) for record in body.get("Records", [])]
    assert len(records) == 1
    (record,) = records
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == bucket
    # Keys arrive URL-encoded (moto also encodes "/" as %2F; AWS leaves it).
    assert unquote_plus(record["s3"]["object"]["key"]) == "staging/x/y/z.json"


@pytest.mark.parametrize("queue", ["Run", "Staging", "Apply"])
def test_each_queue_redrives_to_its_dead_letter_queue(
    queue: str, aws_stack: dict[str, str], aws_clients: Callable[[str], Any]
) -> None:
    sqs = aws_clients("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=aws_stack[f"{queue}QueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=aws_stack[f"{queue}DeadLetterQueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == 5
    assert attributes["SqsManagedSseEnabled"] == "true"


def test_functions_are_deployed_with_the_stack_environment(
    aws_stack: dict[str, str], aws_clients: Callable[[str], Any]
) -> None:
    lambda_ = aws_clients("lambda")
    for name in FUNCTIONS:
        function = lambda_.get_function_configuration(FunctionName=aws_stack[f"{name}Name"])
        assert function["Runtime"] == "python3.11"
        assert function["Handler"] == "app.lambda_handler"
        # (moto ignores Architectures: every function reads x86_64 there)
        variables = function["Environment"]["Variables"]
        for key, value in env_from_outputs(aws_stack).items():
            assert variables[key] == value, (name, key)
        assert len(function["Layers"]) == 1


def test_sqs_triggers_are_recorded_but_disabled_on_moto(
    aws_stack: dict[str, str], aws_clients: Callable[[str], Any]
) -> None:
    """Enabled, moto would try to run the function in Docker on each message;
    the embedded stack reads these mappings and calls the handlers itself."""
    lambda_, sqs = aws_clients("lambda"), aws_clients("sqs")
    mappings = lambda_.list_event_source_mappings()["EventSourceMappings"]
    by_queue = {m["EventSourceArn"]: m for m in mappings}
    expected = {
        "RunQueueUrl": ("FetchRosterFunctionName", 1),
        "StagingQueueUrl": ("TransformPageFunctionName", 10),
    }
    expected["ApplyQueueUrl"] = ("ApplyRunFunctionName", 1)
    for queue_output, (function_output, batch_size) in expected.items():
        arn = sqs.get_queue_attributes(QueueUrl=aws_stack[queue_output], AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        mapping = by_queue[arn]
        assert mapping["FunctionArn"].endswith(f":function:{aws_stack[function_output]}")
        assert mapping["BatchSize"] == batch_size
        assert mapping["State"] == "Disabled"


def test_settings_rule_and_scheduler_role(
    aws_stack: dict[str, str],
    aws_clients: Callable[[str], Any],
    load_event: Callable[[str], dict[str, Any]],
) -> None:
    events, iam = aws_clients("events"), aws_clients("iam")
    rule = events.describe_rule(Name="rostersync-settings-changed")
    assert json.loads(rule["EventPattern"])["detail"] == {"name": [{"prefix": "/rostersync/districts/"}]}
    # moto's TestEventPattern is not implemented; its rule matcher is.
    from moto.events.models import EventPattern

    pattern = EventPattern.load(rule["EventPattern"])
    sample: Any = load_event("settings_change")
    assert pattern.matches_event(sample)
    sample["detail"]["name"] = "/other/app/settings"
    assert not pattern.matches_event(sample)
    role_name = aws_stack["SchedulerRoleArn"].rsplit("/", 1)[1]
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "scheduler.amazonaws.com"}


def test_api_routes_and_stage(aws_stack: dict[str, str], aws_clients: Callable[[str], Any]) -> None:
    apigateway = aws_clients("apigateway")
    api_id = aws_stack["ApiUrl"].removeprefix("https://").split(".", 1)[0]
    resources = apigateway.get_resources(restApiId=api_id, limit=500)["items"]
    routes = {
        (method.lower(), resource["path"])
        for resource in resources
        for method in resource.get("resourceMethods", {})
    }
    assert routes >= API_ROUTES
    assert "v1" in {stage["stageName"] for stage in apigateway.get_stages(restApiId=api_id)["item"]}


# ------------------------------------------------- the shared test fixtures ---


def test_clean_stack_empties_what_tests_leave_behind(
    aws_stack: dict[str, str], aws_clients: Callable[[str], Any], request: pytest.FixtureRequest
) -> None:
    dynamodb, s3, sqs, ssm = (aws_clients(name) for name in ("dynamodb", "s3", "sqs", "ssm"))
    dynamodb.put_item(TableName=aws_stack["RosterTableName"], Item={"pk": {"S": "d#USER"}, "sk": {"S": "u1"}})
    s3.put_object(Bucket=aws_stack["StagingBucketName"], Key="staging/d/r/users/000001.json", Body=b"{}")
    sqs.send_message(QueueUrl=aws_stack["RunQueueUrl"], MessageBody="{}")
    ssm.put_parameter(Name="/rostersync/districts/d/settings", Value="{}", Type="String", Overwrite=True)

    request.getfixturevalue("clean_stack")

    assert dynamodb.scan(TableName=aws_stack["RosterTableName"])["Count"] == 0
    assert "Contents" not in s3.list_objects_v2(Bucket=aws_stack["StagingBucketName"])
    assert "Messages" not in sqs.receive_message(QueueUrl=aws_stack["RunQueueUrl"])
    assert ssm.get_parameters_by_path(Path="/rostersync", Recursive=True)["Parameters"] == []


def test_lambda_context_counts_down(lambda_context: Any) -> None:
    assert 899_000 < lambda_context.get_remaining_time_in_millis() <= 900_000
    lambda_context.set_remaining_time_in_millis(1_000)
    assert lambda_context.get_remaining_time_in_millis() <= 1_000
    assert lambda_context.invoked_function_arn.startswith("arn:aws:lambda:us-east-1:")


def test_load_event_reads_the_events_folder(load_event: Callable[[str], dict[str, Any]]) -> None:
    event = load_event("settings_change")
    assert event["source"] == "aws.ssm"
    assert event["detail-type"] == "Parameter Store Change"
    event["changed"] = True
    assert "changed" not in load_event("settings_change")  # a fresh copy each call
