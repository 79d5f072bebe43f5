"""Least-privilege and data-protection proofs over template.yaml (issue 6).

test_template.py already refuses `*` resources and wildcard actions, checks
the managed policies, the KMS condition of the fetch, the log groups of the
functions, IAM on every API method, and the deployed bucket and table. This
file proves what those leave open, for every resource of its kind (so a
resource added later is held to the same bar):

- every ARN an Allow statement names is built from this stack's own
  resources, in its own account and region; an ARN with a wildcard in it is
  one of a short list below, each with its reason;
- only the fetch function can read (and decrypt) a district's credentials;
- every bucket is encrypted, blocks public access (all four), refuses plain
  HTTP and expires what it stages; every table is encrypted with
  point-in-time recovery; every queue is encrypted; every log group expires;
- the API has IAM on every method and Lambda answers only this API.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rostersync.local.deploy import cached_translation, load_sam_template

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
PSEUDO = {"AWS::Partition", "AWS::Region", "AWS::AccountId", "AWS::StackName", "AWS::URLSuffix"}

# ARNs with a wildcard that an Allow statement may name, matched against the
# Fn::Sub template (references resolved to `${Name}`), with the reason.
WILDCARD_ARNS: dict[str, str] = {
    r"arn:\$\{AWS::Partition\}:dynamodb:\$\{AWS::Region\}:\$\{AWS::AccountId\}:table/\$\{RosterTable\}/index/\*": (
        "the GSIs of the stack's own table (SAM's DynamoDB policy templates)"
    ),
    r"arn:\$\{AWS::Partition\}:s3:::\$\{StagingBucket\}/(staging|inbox|pushes|state)/\*": (
        "objects under one prefix of the stack's own bucket"
    ),
    r"arn:\$\{AWS::Partition\}:s3:::\$\{StagingBucket\}/state/\*/apply-\*": (
        "the apply's write checkpoints (deleted once their run ends), not the saved working sets"
    ),
    r"arn:\$\{AWS::Partition\}:ssm:\$\{AWS::Region\}:\$\{AWS::AccountId\}:parameter/rostersync/districts/\*": (
        "district credentials (fetch only): their names are the districts' choice under this prefix"
    ),
    r"arn:\$\{AWS::Partition\}:ssm:\$\{AWS::Region\}:\$\{AWS::AccountId\}:parameter/rostersync/districts/\*/settings": (
        "every district's settings parameter, and nothing else under the prefix"
    ),
    r"arn:\$\{AWS::Partition\}:kms:\$\{AWS::Region\}:\$\{AWS::AccountId\}:key/\*": (
        "the key of a SecureString is the district's choice; usable only through SSM (kms:ViaService)"
    ),
    r"arn:\$\{AWS::Partition\}:scheduler:\$\{AWS::Region\}:\$\{AWS::AccountId\}:schedule/"
    r"\$\{SchedulerGroupName\}/rostersync-\*": "the district schedules this stack creates, by name prefix",
}
# Allow statements on a prefix ARN (no stack resource in it) must carry these conditions.
REQUIRED_CONDITIONS = {"kms:Decrypt": {"StringEquals": ["kms:ViaService"]}}


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_sam_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return cached_translation(TEMPLATE_PATH)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _allow_statements(cfn: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in cfn["Resources"].items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] == "AWS::IAM::Role":
            documents = [policy["PolicyDocument"] for policy in props.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents = [props["PolicyDocument"]]
        for document in documents:
            for statement in _as_list(document["Statement"]):
                if statement["Effect"] == "Allow":
                    yield logical_id, statement


def _arn_template(cfn: dict[str, Any], expression: Any) -> str:
    """An ARN expression as one Fn::Sub template whose every reference is
    `${Resource}`, `${Resource.Attr}`, `${Parameter}` or a pseudo parameter;
    fails on anything else (a literal ARN, another account, an import)."""
    names = set(cfn["Resources"]) | set(cfn.get("Parameters", {}))
    if isinstance(expression, str) and "arn:" not in expression:
        return expression  # a literal piece of a Sub, such as SAM's `__Stage__: "*"`
    if isinstance(expression, dict) and "Fn::GetAtt" in expression:
        target, attribute = expression["Fn::GetAtt"]
        assert target in cfn["Resources"], expression
        return f"${{{target}.{attribute}}}"
    if isinstance(expression, dict) and "Ref" in expression:
        assert expression["Ref"] in names, expression
        return f"${{{expression['Ref']}}}"
    assert isinstance(expression, dict) and "Fn::Sub" in expression, f"not built from the stack: {expression}"
    template, variables = (
        (expression["Fn::Sub"], {}) if isinstance(expression["Fn::Sub"], str) else expression["Fn::Sub"]
    )
    for name, value in variables.items():
        template = template.replace(f"${{{name}}}", _arn_template(cfn, value))
    for reference in re.findall(r"\$\{([^}]+)\}", template):
        assert reference in PSEUDO or reference.split(".")[0] in names, f"{reference} in {template}"
    return str(template)


def _names_stack_resource(cfn: dict[str, Any], template: str) -> bool:
    return any(ref.split(".")[0] in cfn["Resources"] for ref in re.findall(r"\$\{([^}]+)\}", template))


def test_every_allowed_resource_is_this_stacks_own(cfn: dict[str, Any]) -> None:
    checked = 0
    for role, statement in _allow_statements(cfn):
        assert "NotAction" not in statement and "NotResource" not in statement, role
        for resource in _as_list(statement["Resource"]):
            template = _arn_template(cfn, resource)
            checked += 1
            if template.startswith("${") and template.endswith("}"):
                continue  # a Ref or GetAtt of a stack resource
            plain = template
            for pseudo, token in (("Partition", "PARTITION"), ("Region", "REGION"), ("AccountId", "ACCOUNT")):
                plain = plain.replace(f"${{AWS::{pseudo}}}", token)
            fields = plain.split(":", 5)
            assert fields[:2] == ["arn", "PARTITION"], f"{role}: {template}"
            if fields[2] != "s3":  # S3 ARNs carry no region or account
                assert fields[3:5] == ["REGION", "ACCOUNT"], f"{role}: {template}"
            if "*" in template:
                assert any(re.fullmatch(p, template) for p in WILDCARD_ARNS), (
                    f"{role}: wildcard ARN {template}"
                )
            else:
                assert _names_stack_resource(cfn, template), f"{role}: {template} names no stack resource"
            for action in _as_list(statement["Action"]):
                for operator, keys in REQUIRED_CONDITIONS.get(action, {}).items():
                    condition = statement.get("Condition", {}).get(operator, {})
                    assert set(keys) <= set(condition), f"{role}: {action} without {keys}"
    assert checked > 20


def test_no_action_is_a_whole_service_or_a_write_wildcard(cfn: dict[str, Any]) -> None:
    for role, statement in _allow_statements(cfn):
        for action in _as_list(statement["Action"]):
            service, _, name = action.partition(":")
            assert service and name and "*" not in action and "?" not in action, f"{role}: {action}"


def _ssm_statements(cfn: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for role, statement in _allow_statements(cfn):
        if any(a.startswith(("ssm:", "kms:", "secretsmanager:")) for a in _as_list(statement["Action"])):
            found.setdefault(role, []).append(statement)
    return found


def test_only_the_fetch_can_read_or_decrypt_credentials(cfn: dict[str, Any]) -> None:
    found = _ssm_statements(cfn)
    assert set(found) == {"FetchRosterFunctionRole", "SettingsChangedFunctionRole"}
    fetch_actions = {a for s in found["FetchRosterFunctionRole"] for a in _as_list(s["Action"])}
    # One parameter at a time by name: no GetParametersByPath to list a district's parameters.
    assert fetch_actions == {"ssm:GetParameter", "kms:Decrypt"}
    (settings_statement,) = found["SettingsChangedFunctionRole"]
    assert _as_list(settings_statement["Action"]) == ["ssm:GetParameter"]
    # The settings function reads settings parameters only, never a district's credentials.
    assert _arn_template(cfn, settings_statement["Resource"]).endswith(
        ":parameter/rostersync/districts/*/settings"
    )


def test_only_the_apply_can_read_or_write_saved_working_sets(cfn: dict[str, Any]) -> None:
    # state/ holds each district's roster (names, emails) between runs: the apply alone touches it.
    touching: dict[str, set[str]] = {}
    for role, statement in _allow_statements(cfn):
        for resource in _as_list(statement["Resource"]):
            arn = _arn_template(cfn, resource)
            if "/state/" in arn or arn.endswith("}/*"):
                touching.setdefault(role, set()).update(_as_list(statement["Action"]))
    assert touching == {"ApplyRunFunctionRole": {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}}
    # and it may delete only its write checkpoints, never a saved working set
    deletes = [
        _arn_template(cfn, resource)
        for _, statement in _allow_statements(cfn)
        if "s3:DeleteObject" in _as_list(statement["Action"])
        for resource in _as_list(statement["Resource"])
    ]
    assert [arn for arn in deletes if "/state/" in arn] == [
        "arn:${AWS::Partition}:s3:::${StagingBucket}/state/*/apply-*"
    ]


def test_credentials_must_be_a_secure_string(clean_stack, aws_clients) -> None:
    from rostersync.errors import SourceError
    from rostersync.pipeline.credentials import load_credentials

    aws_clients("ssm").put_parameter(
        Name="/rostersync/districts/plain/credentials",
        Type="String",
        Value='{"clientSecret": "s3cr3t-value"}',
    )
    with pytest.raises(SourceError) as caught:
        load_credentials("/rostersync/districts/plain/credentials")
    assert "must be a SecureString" in str(caught.value) and "s3cr3t" not in str(caught.value)


def _resources(sam: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in sam["Resources"].items() if r["Type"] == kind}


def test_every_bucket_is_encrypted_private_https_only_and_expires_what_it_stages(sam: dict[str, Any]) -> None:
    buckets = _resources(sam, "AWS::S3::Bucket")
    assert buckets
    policies = _resources(sam, "AWS::S3::BucketPolicy")
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms", "aws:kms:dsse")
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]  # no ACLs
        expiring = {
            r.get("Prefix") or r.get("Filter", {}).get("Prefix"): r["ExpirationInDays"]
            for r in props["LifecycleConfiguration"]["Rules"]
            if r["Status"] == "Enabled" and "ExpirationInDays" in r
        }
        # Staged pages, inbox bundles and pushed pages hold student records: none is kept for long.
        assert {"staging/", "inbox/", "pushes/"} <= set(expiring), name
        assert all(days <= 30 for days in expiring.values()), expiring
        denies_http = [
            s
            for policy in policies.values()
            if policy["Properties"]["Bucket"] == {"Ref": name}
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert denies_http, f"{name} accepts plain HTTP"


def test_every_table_is_encrypted_recoverable_and_kept(sam: dict[str, Any]) -> None:
    tables = _resources(sam, "AWS::DynamoDB::Table")
    assert tables
    for name, table in tables.items():
        props = table["Properties"]
        assert props["SSESpecification"]["SSEEnabled"] is True, name
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, name
        assert table.get("DeletionPolicy") == "Retain", name


def test_every_queue_is_encrypted(sam: dict[str, Any]) -> None:
    queues = _resources(sam, "AWS::SQS::Queue")
    assert len(queues) >= 7
    for name, queue in queues.items():
        props = queue.get("Properties", {})
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, (
            f"{name} is not encrypted"
        )


def test_every_log_group_expires(sam: dict[str, Any]) -> None:
    groups = _resources(sam, "AWS::Logs::LogGroup")
    assert len(groups) >= 5
    for name, group in groups.items():
        assert "RetentionInDays" in group["Properties"], f"{name} keeps logs forever"


def test_every_api_method_requires_iam_and_lambda_answers_only_this_api(cfn: dict[str, Any]) -> None:
    apis = {k: r for k, r in cfn["Resources"].items() if r["Type"] in ("AWS::ApiGateway::RestApi",)}
    assert set(apis) == {"RosterApi"}
    assert not [k for k, r in cfn["Resources"].items() if r["Type"].startswith("AWS::ApiGatewayV2::")]
    body = apis["RosterApi"]["Properties"]["Body"]
    methods = [
        (path, method, operation)
        for path, operations in body["paths"].items()
        for method, operation in operations.items()
    ]
    assert len(methods) >= 12
    for path, method, operation in methods:
        assert method != "options" or operation["security"], f"unauthenticated preflight on {path}"
        assert operation["security"] == [{"AWS_IAM": []}], f"{method} {path}"
        assert "x-amazon-apigateway-api-key-source" not in body
    assert body["components"]["securitySchemes"]["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    permissions = {k: r for k, r in cfn["Resources"].items() if r["Type"] == "AWS::Lambda::Permission"}
    for name, permission in permissions.items():
        props = permission["Properties"]
        assert "SourceArn" in props, f"{name}: any {props['Principal']} resource could invoke"
        source = _arn_template(cfn, props["SourceArn"])
        if props["Principal"] == "apigateway.amazonaws.com":
            assert "${RosterApi}" in source and "${AWS::AccountId}" in source, f"{name}: {source}"


# ---------------------------------------------------------------- deployed ---


def test_deployed_queues_are_encrypted(aws_stack: dict[str, str], aws_clients: Callable[[str], Any]) -> None:
    sqs = aws_clients("sqs")
    urls = [v for k, v in aws_stack.items() if k.endswith("QueueUrl")]
    assert len(urls) >= 7
    for url in urls:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes.get("SqsManagedSseEnabled") == "true" or "KmsMasterKeyId" in attributes, url
