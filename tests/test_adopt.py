"""adopt-retained: after a destroy, the retained bucket, its policy, the secrets and the log group block a plain
redeploy; importing them brings the stacks back with every value intact. Against CloudFormation on moto's server on
127.0.0.1 with the project's extension (real AWS is unreachable here), with the real synthesized `local` templates."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EnvNames
from callsaver_infra.dev.rehearsal import moto_ext  # noqa: F401  # registers the extension before the server starts
from callsaver_infra.ops.adopt import AdoptError, adopt
from tests.helpers import Synthesized

OPERATOR_VALUE = "fake-openai-key-for-adopt-test"


@pytest.fixture(scope="module")
def assembly(synthesized: Synthesized) -> Path:
    """The run's synth of every environment (only read here): local's templates are at its top level, as
    `cdk synth -c env=local` writes them."""
    return synthesized.outdir


def test_destroyed_environment_comes_back_by_import_without_losing_a_value(
    moto_endpoint: str, assembly: Path, environments: dict[str, EnvironmentConfig]
) -> None:
    config = environments["local"]
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

    def aws(service: str) -> Any:
        return boto3.client(service, region_name=config.region, endpoint_url=moto_endpoint, **creds)

    aws("ssm").put_parameter(Name=f"/cdk-bootstrap/{config.bootstrap.qualifier}/version", Value="30", Type="String")
    names = EnvNames("local")
    cfn = aws("cloudformation")
    templates = {s: (assembly / f"{s}.template.json").read_text() for s in (names.storage_stack, names.secrets_stack)}
    for stack, body in templates.items():
        cfn.create_stack(StackName=stack, TemplateBody=body)
    aws("secretsmanager").put_secret_value(SecretId=names.secret("agent/OPENAI_API_KEY"), SecretString=OPERATOR_VALUE)
    aws("s3").put_object(Bucket=config.storage.bucket_name, Key="call_1/recording.ogg", Body=b"fake audio")
    for stack in templates:
        cfn.delete_stack(StackName=stack)

    # The problem: a plain redeploy fails on the retained names.
    cfn.create_stack(StackName=names.storage_stack, TemplateBody=templates[names.storage_stack])
    failed = cfn.describe_stacks(StackName=names.storage_stack)["Stacks"][0]
    assert failed["StackStatus"] == "ROLLBACK_COMPLETE"
    with pytest.raises(AdoptError, match="is ROLLBACK_COMPLETE .* delete it first"):
        adopt(config, assembly, aws, out=lambda line: None)
    cfn.delete_stack(StackName=names.storage_stack)

    lines: list[str] = []
    plans = adopt(config, assembly, aws, dry_run=True, out=lines.append)
    # Storage: the recording bucket and its policy, the recordings' key and its alias, the read-audit log bucket.
    assert [(p.stack, len(p.resources)) for p in plans] == [(names.storage_stack, 5), (names.secrets_stack, 11)]
    assert sorted(r["ResourceType"] for r in plans[0].resources) == [
        "AWS::KMS::Alias", "AWS::KMS::Key", "AWS::S3::Bucket", "AWS::S3::Bucket", "AWS::S3::BucketPolicy"
    ]  # fmt: skip
    assert all(line.startswith("dry run: would create") for line in lines)
    assert cfn.list_stacks(StackStatusFilter=["IMPORT_COMPLETE"])["StackSummaries"] == []

    adopt(config, assembly, aws, out=lines.append)
    for stack, body in templates.items():
        assert cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"] == "IMPORT_COMPLETE"
        # The next deploy is an ordinary update of the imported stack.
        cfn.update_stack(
            StackName=stack,
            TemplateBody=body,
            Parameters=[{"ParameterKey": "BootstrapVersion", "UsePreviousValue": True}],
        )
        assert cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"] == "UPDATE_COMPLETE"
    value = aws("secretsmanager").get_secret_value(SecretId=names.secret("agent/OPENAI_API_KEY"))["SecretString"]
    assert value == OPERATOR_VALUE
    assert aws("s3").get_object(Bucket=config.storage.bucket_name, Key="call_1/recording.ogg")["Body"].read()
    policy = json.loads(aws("s3").get_bucket_policy(Bucket=config.storage.bucket_name)["Policy"])
    assert any(s.get("Sid") == "DenyCdkLookupRoles" for s in policy["Statement"])
    assert any(s.get("Sid") == "DenyRecordingReadsExceptReaders" for s in policy["Statement"])
    outputs = cfn.describe_stacks(StackName=names.storage_stack)["Stacks"][0]["Outputs"]
    assert {o["OutputKey"] for o in outputs} >= {"SessionBucketName"}
    # Nothing left to adopt: a second run says so and changes nothing.
    again: list[str] = []
    assert adopt(config, assembly, aws, out=again.append) == []
    assert again == ["local: nothing to adopt (no stack is missing while its retained resources exist)"]
