"""Rules of Callsaver-Storage-{env}, asserted in every environment."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Capture, Match

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EnvNames, StorageOutputs
from tests.helpers import Synthesized


def _bucket_id(synthesized: Synthesized, env: EnvironmentConfig) -> str:
    buckets = synthesized.template(EnvNames(env.name).storage_stack).find_resources(
        "AWS::S3::Bucket", {"Properties": {"BucketName": env.storage.bucket_name}}
    )
    assert len(buckets) == 1, f"expected exactly one session bucket, found {sorted(buckets)}"
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
    template.has_resource_properties(
        "AWS::S3::Bucket", {"BucketName": env.storage.bucket_name, "LifecycleConfiguration": {"Rules": rules}}
    )
    assert rules.as_array() == [
        {
            "Id": "ExpireRecordings",
            "Status": "Enabled",
            "ExpirationInDays": env.storage.expiration_days,
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
        },
        {"Id": "RemoveExpiredDeleteMarkers", "Status": "Enabled", "ExpiredObjectDeleteMarker": True},
    ]


def test_seed_environments_keep_recordings_30_days(environments: dict[str, EnvironmentConfig]) -> None:
    assert {name: environments[name].storage.expiration_days for name in ("local", "production", "staging")} == {
        "local": 30,
        "production": 30,
        "staging": 30,
    }


def _key_id(synthesized: Synthesized, env: EnvironmentConfig) -> str:
    keys = synthesized.template(EnvNames(env.name).storage_stack).find_resources("AWS::KMS::Key")
    assert len(keys) == 1, f"expected exactly one key, found {sorted(keys)}"
    return next(iter(keys))


def _role_arn(env: EnvironmentConfig, name: str) -> str:
    return f"arn:aws:iam::{env.account}:role/{name}"


def _bucket_statement(synthesized: Synthesized, env: EnvironmentConfig, sid: str) -> dict[str, Any]:
    policies = synthesized.template(EnvNames(env.name).storage_stack).find_resources(
        "AWS::S3::BucketPolicy", {"Properties": {"Bucket": {"Ref": _bucket_id(synthesized, env)}}}
    )
    assert len(policies) == 1
    statements = next(iter(policies.values()))["Properties"]["PolicyDocument"]["Statement"]
    found = [s for s in statements if s.get("Sid") == sid]
    assert len(found) == 1, f"expected one statement {sid}, found {len(found)}"
    statement: dict[str, Any] = found[0]
    return statement


def test_bucket_is_private_and_owner_enforced(synthesized: Synthesized, env: EnvironmentConfig) -> None:
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
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        },
    )


def test_bucket_encrypts_with_its_own_key_and_a_bucket_key(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).storage_stack)
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": {"Fn::GetAtt": [_key_id(synthesized, env), "Arn"]},
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            }
        },
    )


def test_key_rotates_survives_the_stack_and_has_the_environments_alias(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    template = synthesized.template(EnvNames(env.name).storage_stack)
    template.has_resource(
        "AWS::KMS::Key",
        {
            "Properties": Match.object_like({"EnableKeyRotation": True}),
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )
    template.has_resource_properties(
        "AWS::KMS::Alias",
        {
            "AliasName": f"alias/callsaver/{env.name}/sessions",
            "TargetKeyId": {"Fn::GetAtt": [_key_id(synthesized, env), "Arn"]},
        },
    )


def test_keys_are_per_environment(synthesized: Synthesized, environments: dict[str, EnvironmentConfig]) -> None:
    aliases = set()
    for env in environments.values():
        found = synthesized.template(EnvNames(env.name).storage_stack).find_resources("AWS::KMS::Alias")
        aliases |= {a["Properties"]["AliasName"] for a in found.values()}
    assert len(aliases) == len(environments)


def test_bucket_is_versioned(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).storage_stack)
    template.has_resource_properties("AWS::S3::Bucket", {"VersioningConfiguration": {"Status": "Enabled"}})


def test_reader_policy_reads_objects_and_decrypts_with_the_key_only(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    template = synthesized.template(EnvNames(env.name).storage_stack)
    bucket_id, key_id = _bucket_id(synthesized, env), _key_id(synthesized, env)
    template.has_resource_properties(
        "AWS::IAM::ManagedPolicy",
        {
            "ManagedPolicyName": f"callsaver-recording-reader-{env.name}",
            "PolicyDocument": {
                "Statement": [
                    {
                        "Sid": "ReadRecordings",
                        "Effect": "Allow",
                        "Action": "s3:GetObject",
                        "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
                    },
                    {
                        "Sid": "DecryptRecordings",
                        "Effect": "Allow",
                        "Action": "kms:Decrypt",
                        "Resource": {"Fn::GetAtt": [key_id, "Arn"]},
                        "Condition": {"StringEquals": {"kms:ViaService": f"s3.{env.region}.amazonaws.com"}},
                    },
                ],
                "Version": "2012-10-17",
            },
        },
    )
    policy_id = next(iter(template.find_resources("AWS::IAM::ManagedPolicy")))
    template.has_resource_properties(
        "AWS::IAM::Role",
        {"RoleName": f"callsaver-recording-reader-{env.name}", "ManagedPolicyArns": [{"Ref": policy_id}]},
    )


def test_bucket_policy_denies_reads_to_everyone_but_the_readers(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    statement = _bucket_statement(synthesized, env, "DenyRecordingReadsExceptReaders")
    roles = synthesized.template(EnvNames(env.name).storage_stack).find_resources(
        "AWS::IAM::Role", {"Properties": {"RoleName": f"callsaver-recording-reader-{env.name}"}}
    )
    assert len(roles) == 1
    break_glass = [env.security.break_glass_role_arn] if env.security.break_glass_role_arn else []
    assert statement["Effect"] == "Deny" and statement["Principal"] == {"AWS": "*"}
    assert statement["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert statement["Condition"] == {
        "ArnNotLike": {
            "aws:PrincipalArn": [
                # By name, not GetAtt: the retained policy must stand alone in adopt-retained's import template.
                _role_arn(env, f"callsaver-recording-reader-{env.name}"),
                _role_arn(env, f"callsaver-ci-deploy-{env.name}"),
                *break_glass,
            ]
        }
    }


def test_local_environment_configures_a_break_glass_role(environments: dict[str, EnvironmentConfig]) -> None:
    """The deny tests must see a break-glass role in at least one environment."""
    local = environments["local"]
    assert local.security.break_glass_role_arn == _role_arn(local, "callsaver-break-glass")


def test_deploy_role_reads_only_healthcheck_objects(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    statement = _bucket_statement(synthesized, env, "DenyHealthcheckReaderOutsideHealthcheck")
    bucket_id = _bucket_id(synthesized, env)
    assert statement["Effect"] == "Deny"
    assert statement["NotResource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/_healthcheck/*"]]}
    assert statement["Condition"] == {
        "ArnLike": {"aws:PrincipalArn": _role_arn(env, f"callsaver-ci-deploy-{env.name}")}
    }


def test_customer_provided_key_uploads_are_denied(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    statement = _bucket_statement(synthesized, env, "DenyCustomerProvidedKeys")
    assert (statement["Effect"], statement["Action"]) == ("Deny", "s3:PutObject")
    assert statement["Condition"] == {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}}


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


def test_cdk_lookup_roles_cannot_list_or_read_recordings(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    """The CDK lookup role carries ReadOnlyAccess (s3:List*, s3:GetObject) and may be assumed from CI."""
    statement = _bucket_statement(synthesized, env, "DenyCdkLookupRoles")
    bucket_id = _bucket_id(synthesized, env)
    assert (statement["Effect"], statement["Principal"]) == ("Deny", {"AWS": "*"})
    assert statement["Action"] == ["s3:GetObject*", "s3:List*"]
    assert statement["Resource"] == [
        {"Fn::GetAtt": [bucket_id, "Arn"]},
        {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
    ]
    assert statement["Condition"] == {
        "ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{env.account}:role/cdk-*-lookup-role-*"}
    }


def test_bucket_survives_stack_deletion_and_replacement(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).storage_stack)
    template.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"})


def test_bucket_policy_is_retained_with_the_bucket(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    # A destroyed stack keeps the recordings; it must keep the TLS-only and lookup-role denies guarding them too.
    template = synthesized.template(EnvNames(env.name).storage_stack)
    policies = template.find_resources("AWS::S3::BucketPolicy")
    # The recording bucket's policy; the read-audit log bucket's policy goes with its trail.
    guarded = {p["Properties"]["Bucket"]["Ref"]: p for p in policies.values()}
    (session,) = [k for k in guarded if k.startswith("SessionBucket")]
    assert (guarded[session].get("DeletionPolicy"), guarded[session].get("UpdateReplacePolicy")) == ("Retain", "Retain")


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
    template.has_output(StorageOutputs.KEY_ARN, {"Value": {"Fn::GetAtt": [_key_id(synthesized, env), "Arn"]}})
    template.has_output(StorageOutputs.READER_ROLE_ARN, {"Value": {"Fn::GetAtt": [Match.any_value(), "Arn"]}})
    template.has_output(StorageOutputs.READER_POLICY_ARN, {"Value": {"Ref": Match.any_value()}})
    assert set(outputs) == {
        StorageOutputs.BUCKET_NAME,
        StorageOutputs.BUCKET_ARN,
        StorageOutputs.BUCKET_REGION,
        StorageOutputs.KEY_ARN,
        StorageOutputs.READER_ROLE_ARN,
        StorageOutputs.READER_POLICY_ARN,
        StorageOutputs.READS_LOG_BUCKET,
    }
    assert not any("Export" in o for o in outputs.values()), "outputs must not be exports (they lock stacks)"


def test_every_read_of_a_recording_is_logged_by_a_data_event_trail(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    """S3 data events, not KMS Decrypt events: with bucket keys, KMS events name the bucket, not the recording."""
    template = synthesized.template(EnvNames(env.name).storage_stack)
    bucket_id = _bucket_id(synthesized, env)
    template.has_resource_properties(
        "AWS::CloudTrail::Trail",
        {
            "TrailName": f"callsaver-recording-reads-{env.name}",
            "EnableLogFileValidation": True,
            "IsMultiRegionTrail": False,
            "EventSelectors": [
                {
                    "DataResources": [
                        {
                            "Type": "AWS::S3::Object",
                            "Values": [{"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/"]]}],
                        }
                    ],
                    "IncludeManagementEvents": False,
                    "ReadWriteType": "ReadOnly",
                }
            ],
        },
    )
    log_buckets = [r for r in template.find_resources("AWS::S3::Bucket") if r != bucket_id]
    assert len(log_buckets) == 1
    template.has_resource(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {"LifecycleConfiguration": {"Rules": [Match.object_like({"ExpirationInDays": 365})]}}
            ),
        },
    )
    template.has_output(StorageOutputs.READS_LOG_BUCKET, {"Value": {"Ref": log_buckets[0]}})
