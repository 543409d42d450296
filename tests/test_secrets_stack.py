"""Rules of Callsaver-Secrets-{env}: one retained secret per key, config values from config, no real secret."""

from __future__ import annotations

from aws_cdk.assertions import Match

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EnvNames
from callsaver_infra.app.secret_catalog import PLACEHOLDER
from tests.helpers import SEED_AGENT_KEYS, SEED_BACKEND_KEYS, Synthesized

BACKEND, AGENT = SEED_BACKEND_KEYS, SEED_AGENT_KEYS


def _secrets(synthesized: Synthesized, env: EnvironmentConfig) -> dict[str, dict[str, object]]:
    resources = synthesized.template_json(EnvNames(env.name).secrets_stack)["Resources"]
    return {r["Properties"]["Name"]: r for r in resources.values() if r["Type"] == "AWS::SecretsManager::Secret"}


def test_placeholder_text_never_changes() -> None:
    """CloudFormation rewrites a secret when its template value changes: a new placeholder would wipe real keys."""
    assert PLACEHOLDER == "CALLSAVER-PLACEHOLDER: not set yet; set it with `callsaver-infra secrets set`"


def test_exactly_the_seed_namespaces_and_keys(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    expected = {f"callsaver/{env.name}/backend/{k}" for k in BACKEND} | {
        f"callsaver/{env.name}/agent/{k}" for k in AGENT
    }
    assert set(_secrets(synthesized, env)) == expected


def test_config_values_come_from_config(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    secrets = _secrets(synthesized, env)
    props = {name: r["Properties"] for name, r in secrets.items()}
    assert props[f"callsaver/{env.name}/backend/LIVEKIT_URL"]["SecretString"] == env.livekit.url  # type: ignore[index]
    bucket = props[f"callsaver/{env.name}/backend/SESSION_S3_BUCKET"]["SecretString"]  # type: ignore[index]
    assert bucket == env.storage.bucket_name == f"callsaver-sessions-{env.name}"


def test_real_secrets_are_created_with_the_placeholder_only(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    secrets = _secrets(synthesized, env)
    operator_owned = [n for n in secrets if not n.endswith(("/LIVEKIT_URL", "/SESSION_S3_BUCKET"))]
    assert len(operator_owned) == 9
    for name in operator_owned:
        props = secrets[name]["Properties"]
        assert props["SecretString"] == PLACEHOLDER, name  # type: ignore[index]
        assert "GenerateSecretString" not in props, name  # type: ignore[operator]


def test_every_secret_is_retained(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    for name, resource in _secrets(synthesized, env).items():
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain"), name


def _readers(env: EnvironmentConfig) -> list[str]:
    roles = [f"callsaver-agent-execution-{env.name}", f"callsaver-ci-deploy-{env.name}"]
    arns = [f"arn:aws:iam::{env.account}:role/{r}" for r in roles]
    return arns + ([env.security.break_glass_role_arn] if env.security.break_glass_role_arn else [])


def _deny_reads_except(readers: list[str]) -> dict[str, object]:
    return {
        "Statement": [
            {
                "Sid": "DenyReadsExceptNamedRoles",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
                "Condition": {"ArnNotLike": {"aws:PrincipalArn": readers}},
            }
        ],
        "Version": "2012-10-17",
    }


def test_secrets_stack_grants_nothing(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    template = synthesized.template(EnvNames(env.name).secrets_stack)
    template.resource_count_is("AWS::IAM::Policy", 0)
    template.has_resource_properties("AWS::SecretsManager::Secret", {"Description": Match.string_like_regexp(env.name)})


def test_every_secret_is_readable_only_by_the_agent_the_deploy_hook_and_break_glass(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    template = synthesized.template(EnvNames(env.name).secrets_stack)
    policies = template.find_resources("AWS::SecretsManager::ResourcePolicy")
    covered = {p["Properties"]["SecretId"]["Ref"] for p in policies.values()}
    assert covered == set(template.find_resources("AWS::SecretsManager::Secret"))
    for policy in policies.values():
        assert policy["Properties"]["ResourcePolicy"] == _deny_reads_except(_readers(env))


def test_egress_key_secret_is_readable_only_by_the_agent_the_deploy_hook_and_break_glass(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    template = synthesized.template(EnvNames(env.name).iam_stack)
    secret_id = next(iter(template.find_resources("AWS::SecretsManager::Secret")))
    template.has_resource_properties(
        "AWS::SecretsManager::ResourcePolicy",
        {"SecretId": {"Ref": secret_id}, "ResourcePolicy": _deny_reads_except(_readers(env))},
    )


def test_agent_execution_role_has_the_name_the_secret_policies_allow(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    template = synthesized.template(EnvNames(env.name).agent_stack)
    role = template.find_resources(
        "AWS::IAM::Role", {"Properties": {"RoleName": f"callsaver-agent-execution-{env.name}"}}
    )
    assert len(role) == 1
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition", {"ExecutionRoleArn": {"Fn::GetAtt": [next(iter(role)), "Arn"]}}
    )
