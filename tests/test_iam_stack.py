"""Rules of Callsaver-IAM-{env}: least privilege for LiveKit egress, and its key never in a template."""

from __future__ import annotations

import json
import re

from aws_cdk.assertions import Capture, Match

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EGRESS_POLICY_NAME, EnvNames, IamOutputs
from tests.helpers import Synthesized


def _only(resources: dict[str, dict[str, object]], kind: str) -> tuple[str, dict[str, object]]:
    assert len(resources) == 1, f"expected exactly one {kind}, found {sorted(resources)}"
    return next(iter(resources.items()))


def test_egress_user_is_named_per_environment(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).iam_stack)
    template.resource_count_is("AWS::IAM::User", 1)
    template.has_resource_properties("AWS::IAM::User", {"UserName": f"callsaver-livekit-egress-{env.name}"})
    user = template.find_resources("AWS::IAM::User")
    _, props = _only(user, "user")
    assert "ManagedPolicyArns" not in props["Properties"], "the egress user must carry no managed policy"  # type: ignore[operator]


def test_policy_allows_exactly_put_and_abort_on_objects_and_the_sessions_key_via_s3(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    template = synthesized.template(EnvNames(env.name).iam_stack)
    template.resource_count_is("AWS::IAM::Policy", 1)
    user_id, _ = _only(template.find_resources("AWS::IAM::User"), "user")
    statements = Capture()
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyName": EGRESS_POLICY_NAME,
            "Users": [{"Ref": user_id}],
            "PolicyDocument": {"Statement": statements, "Version": "2012-10-17"},
        },
    )
    assert statements.as_array() == [
        {
            "Sid": "WriteRecordings",
            "Effect": "Allow",
            "Action": ["s3:AbortMultipartUpload", "s3:PutObject"],
            "Resource": f"arn:aws:s3:::callsaver-sessions-{env.name}/*",
        },
        {
            "Sid": "EncryptRecordings",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": f"arn:aws:kms:{env.region}:{env.account}:key/*",
            "Condition": {
                "ForAnyValue:StringEquals": {"kms:ResourceAliases": f"alias/callsaver/{env.name}/sessions"},
                "StringEquals": {"kms:ViaService": f"s3.{env.region}.amazonaws.com"},
            },
        },
    ]


def test_no_identity_policy_names_another_bucket_or_a_wildcard_bucket(synthesized: Synthesized) -> None:
    for name in synthesized.stack_names():
        if "-IAM-" not in name:
            continue
        env_name = name.rsplit("-IAM-", 1)[1]
        text = json.dumps(synthesized.template_json(name))
        buckets = set(re.findall(r"arn:aws:s3:::([^/\"]*)", text))
        assert buckets == {f"callsaver-sessions-{env_name}"}, f"{name} names buckets {sorted(buckets)}"
        for action in ("s3:ListBucket", "s3:PutObjectAcl", "s3:GetObject", "s3:DeleteObject", "s3:*"):
            assert f'"{action}"' not in text, f"{name} grants {action}"


def test_access_key_serial_comes_from_config(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).iam_stack)
    user_id, _ = _only(template.find_resources("AWS::IAM::User"), "user")
    template.has_resource_properties(
        "AWS::IAM::AccessKey", {"Serial": env.egress_writer.access_key_serial, "UserName": {"Ref": user_id}}
    )


def test_secret_access_key_goes_only_into_the_credentials_secret(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    template = synthesized.template(EnvNames(env.name).iam_stack)
    key_id, _ = _only(template.find_resources("AWS::IAM::AccessKey"), "access key")
    secret_string = Capture()
    template.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {"Name": f"callsaver/{env.name}/egress/s3-access-key", "SecretString": secret_string},
    )
    assert secret_string.as_object() == {
        "Fn::Join": [
            "",
            [
                '{"accessKeyId":"',
                {"Ref": key_id},
                '","secretAccessKey":"',
                {"Fn::GetAtt": [key_id, "SecretAccessKey"]},
                '"}',
            ],
        ]
    }
    raw = synthesized.template_json(EnvNames(env.name).iam_stack)
    uses = json.dumps(raw).count('"SecretAccessKey"')
    assert uses == 1, f"SecretAccessKey is referenced {uses} times; only the credentials secret may use it"


def test_outputs_publish_user_key_id_and_secret_arn(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).iam_stack)
    user_id, _ = _only(template.find_resources("AWS::IAM::User"), "user")
    key_id, _ = _only(template.find_resources("AWS::IAM::AccessKey"), "access key")
    secret_id, _ = _only(template.find_resources("AWS::SecretsManager::Secret"), "secret")
    template.has_output(IamOutputs.USER_NAME, {"Value": {"Ref": user_id}})
    template.has_output(IamOutputs.ACCESS_KEY_ID, {"Value": {"Ref": key_id}})
    template.has_output(IamOutputs.CREDENTIALS_SECRET_ARN, {"Value": {"Ref": secret_id}})
    outputs = synthesized.template_json(EnvNames(env.name).iam_stack)["Outputs"]
    assert set(outputs) == {IamOutputs.USER_NAME, IamOutputs.ACCESS_KEY_ID, IamOutputs.CREDENTIALS_SECRET_ARN}
    assert not any("Export" in o for o in outputs.values())


def test_iam_stack_imports_nothing_from_the_storage_stack(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    text = json.dumps(synthesized.template_json(EnvNames(env.name).iam_stack))
    assert "Fn::ImportValue" not in text
    template = synthesized.template(EnvNames(env.name).iam_stack)
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": [
                    Match.object_like({"Resource": Match.string_like_regexp("^arn:aws:s3")}),
                    Match.object_like({"Resource": Match.string_like_regexp("^arn:aws:kms")}),
                ]
            }
        },
    )


def test_a_replaced_access_key_is_kept_for_the_rotation(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    # Bumping the serial must not delete the key LiveKit still holds; rotate-egress-key deletes it later.
    keys = synthesized.template(EnvNames(env.name).iam_stack).find_resources("AWS::IAM::AccessKey")
    assert [(k.get("UpdateReplacePolicy"), k.get("DeletionPolicy")) for k in keys.values()] == [("Retain", "Delete")]
