"""Rules of Callsaver-Storage-{env}, asserted in every environment."""

from __future__ import annotations

from aws_cdk.assertions import Capture, Match

from callsaver_infra.config import EnvironmentConfig
from callsaver_infra.names import EnvNames, StorageOutputs
from tests.conftest import Synthesized


def _bucket_id(synthesized: Synthesized, env: EnvironmentConfig) -> str:
    buckets = synthesized.template(EnvNames(env.name).storage_stack).find_resources("AWS::S3::Bucket")
    assert len(buckets) == 1, f"expected exactly one bucket, found {sorted(buckets)}"
    return next(iter(buckets))


def test_stack_targets_the_configured_account_and_region(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    artifact = synthesized.artifact(EnvNames(env.name).storage_stack)
    assert (artifact.environment.account, artifact.environment.region) == (env.account, env.region)


def test_bucket_is_named_from_config(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    assert env.storage.bucket_name == f"callsaver-sessions-{env.name}"
    template = synthesized.template(EnvNames(env.name).storage_stack)
    template.has_resource_properties("AWS::S3::Bucket", {"BucketName": env.storage.bucket_name})


def test_recordings_expire_and_incomplete_uploads_are_aborted(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    rules = Capture()
    template = synthesized.template(EnvNames(env.name).storage_stack)
    template.has_resource_properties("AWS::S3::Bucket", {"LifecycleConfiguration": {"Rules": rules}})
    assert rules.as_array() == [
        {
            "Id": "ExpireRecordings",
            "Status": "Enabled",
            "ExpirationInDays": env.storage.expiration_days,
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
    ]


def test_seed_environments_keep_recordings_30_days(environments: dict[str, EnvironmentConfig]) -> None:
    assert {name: environments[name].storage.expiration_days for name in ("local", "production", "staging")} == {
        "local": 30,
        "production": 30,
        "staging": 30,
    }


def test_bucket_is_private_encrypted_and_owner_enforced(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).storage_stack)
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        },
    )


def test_bucket_policy_denies_requests_without_tls(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).storage_stack)
    bucket_id = _bucket_id(synthesized, env)
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Effect": "Deny",
                            "Principal": {"AWS": "*"},
                            "Action": "s3:*",
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            "Resource": Match.any_value(),
                        }
                    ]
                )
            },
        },
    )


def test_cdk_lookup_roles_cannot_read_recordings(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    """CI's pull-request diff role may assume the CDK lookup role, whose ReadOnlyAccess includes s3:GetObject."""
    template = synthesized.template(EnvNames(env.name).storage_stack)
    bucket_id = _bucket_id(synthesized, env)
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Sid": "DenyRecordingReadsByCdkLookupRoles",
                            "Effect": "Deny",
                            "Principal": {"AWS": "*"},
                            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
                            "Condition": {
                                "ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{env.account}:role/cdk-*-lookup-role-*"}
                            },
                        }
                    ]
                )
            }
        },
    )


def test_bucket_survives_stack_deletion_and_replacement(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).storage_stack)
    template.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"})


def test_bucket_policy_is_retained_with_the_bucket(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    # A destroyed stack keeps the recordings; it must keep the TLS-only and lookup-role denies guarding them too.
    template = synthesized.template(EnvNames(env.name).storage_stack)
    policies = template.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 1
    assert [(p.get("DeletionPolicy"), p.get("UpdateReplacePolicy")) for p in policies.values()] == [
        ("Retain", "Retain")
    ]


def test_termination_protection_follows_config(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    names = EnvNames(env.name)
    for stack in (names.storage_stack, names.iam_stack, names.secrets_stack, names.agent_stack):
        assert synthesized.artifact(stack).termination_protection is env.termination_protection


def test_production_stacks_are_termination_protected(environments: dict[str, EnvironmentConfig]) -> None:
    assert environments["production"].termination_protection is True


def test_no_lambda_backed_custom_resources(synthesized: Synthesized) -> None:
    """Custom resources run Lambda code that a local endpoint cannot rehearse; none may creep in."""
    for name in synthesized.stack_names():
        types = {r["Type"] for r in synthesized.template_json(name)["Resources"].values()}
        offending = {t for t in types if t.startswith("Custom::") or t.startswith("AWS::Lambda::")}
        offending |= types & {"AWS::CloudFormation::CustomResource"}
        assert not offending, f"{name} has {sorted(offending)}"


def test_outputs_publish_bucket_name_arn_and_region(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).storage_stack)
    bucket_id = _bucket_id(synthesized, env)
    template.has_output(StorageOutputs.BUCKET_NAME, {"Value": {"Ref": bucket_id}})
    template.has_output(StorageOutputs.BUCKET_ARN, {"Value": {"Fn::GetAtt": [bucket_id, "Arn"]}})
    template.has_output(StorageOutputs.BUCKET_REGION, {"Value": env.region})
    outputs = synthesized.template_json(EnvNames(env.name).storage_stack)["Outputs"]
    assert set(outputs) == {
        StorageOutputs.BUCKET_NAME,
        StorageOutputs.BUCKET_ARN,
        StorageOutputs.BUCKET_REGION,
    }
    assert not any("Export" in o for o in outputs.values()), "outputs must not be exports (they lock stacks)"
