"""Callsaver-Registry: the agent image's ECR repository, synthesized with the cdk-nag gate on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.constructs.agent_image_repository import PUSH_ACTIONS
from callsaver_infra.app.nag import enable_policy_checks
from callsaver_infra.app.names import REGISTRY_STACK, EnvNames, RegistryOutputs
from callsaver_infra.app.registry_config import REGISTRY_CONFIG_FILE, RegistryConfig, load_registry_config
from callsaver_infra.app.stacks.registry import add_registry_stack
from tests.helpers import CONFIG_DIR, ENV_NAMES, Synthesized, cfn_lint, mask_asset_hashes, new_app

AGENT_CI_ROLE = "arn:aws:iam::210987654321:role/callsaver-agent-ci"


def _synth(registry: RegistryConfig, outdir: Path) -> Synthesized:
    app = new_app(outdir)
    add_registry_stack(app, registry)
    enable_policy_checks(app)
    return Synthesized(assembly=app.synth(), outdir=outdir)


@pytest.fixture(scope="module")
def registry(environments: dict[str, EnvironmentConfig]) -> RegistryConfig:
    return load_registry_config(CONFIG_DIR / REGISTRY_CONFIG_FILE, environments)


@pytest.fixture(scope="module")
def registry_synth(registry: RegistryConfig, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return _synth(registry, tmp_path_factory.mktemp("registry.out"))


@pytest.fixture(scope="module")
def template(registry_synth: Synthesized) -> dict[str, Any]:
    return registry_synth.template_json(REGISTRY_STACK)


@pytest.fixture(scope="module")
def by_role_arn(registry: RegistryConfig, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The registry when the agent's CI already has a role: pushes are granted by the repository policy."""
    config = registry.model_copy(update={"push_github_subject": None, "push_role_arn": AGENT_CI_ROLE})
    return _synth(config, tmp_path_factory.mktemp("registry-arn.out")).template_json(REGISTRY_STACK)


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _repository(template: dict[str, Any]) -> dict[str, Any]:
    (repository,) = _resources(template, "AWS::ECR::Repository").values()
    return repository


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(document["Statement"])


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_committed_registry_config(registry: RegistryConfig) -> None:
    assert (registry.account, registry.region) == ("836347236108", "us-west-1")
    assert registry.repository_name == "callsaver-agent"
    assert registry.push_role_arn is None
    assert registry.push_github_subject == "repo:callsaver/callsaver-agent:ref:refs/heads/main"


def test_repository_is_immutable_scanned_encrypted_and_retained(
    template: dict[str, Any], registry: RegistryConfig
) -> None:
    repository = _repository(template)
    props = repository["Properties"]
    assert props["RepositoryName"] == "callsaver-agent"
    assert props["ImageTagMutability"] == "IMMUTABLE"
    assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert props["EncryptionConfiguration"] == {"EncryptionType": "AES256"}
    # The running agent's image lives here: never deleted with the stack, nor on a replacement.
    assert repository["DeletionPolicy"] == "Retain" and repository["UpdateReplacePolicy"] == "Retain"
    assert "EmptyOnDelete" not in props


def test_lifecycle_expires_untagged_after_a_day_and_keeps_the_most_recent_tagged(
    template: dict[str, Any], registry: RegistryConfig
) -> None:
    policy = json.loads(_repository(template)["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])
    selections = [(r["rulePriority"], r["selection"], r["action"]) for r in policy["rules"]]
    assert selections == [
        (
            1,
            {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 1, "countUnit": "days"},
            {"type": "expire"},
        ),
        (
            2,
            {
                "tagStatus": "tagged",
                "tagPatternList": ["*"],
                "countType": "imageCountMoreThan",
                "countNumber": registry.keep_tagged_images,
            },
            {"type": "expire"},
        ),
    ]
    assert registry.keep_tagged_images == 50


def test_a_github_subject_gets_one_push_role_trusting_exactly_that_subject(
    template: dict[str, Any], registry: RegistryConfig
) -> None:
    (role,) = _resources(template, "AWS::IAM::Role").values()
    props = role["Properties"]
    assert props["RoleName"] == "callsaver-agent-image-push"
    (trust,) = _statements(props["AssumeRolePolicyDocument"])
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Principal"] == {
        "Federated": "arn:aws:iam::836347236108:oidc-provider/token.actions.githubusercontent.com"
    }
    assert trust["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": registry.push_github_subject,
        }
    }
    (policy,) = props["Policies"]
    statements = {s["Sid"]: s for s in _statements(policy["PolicyDocument"])}
    repository_id = next(iter(_resources(template, "AWS::ECR::Repository")))
    assert statements["PushAgentImages"]["Action"] == sorted(PUSH_ACTIONS)
    assert statements["PushAgentImages"]["Resource"] == {"Fn::GetAtt": [repository_id, "Arn"]}
    assert statements["EcrLogin"] == {
        "Sid": "EcrLogin",
        "Action": "ecr:GetAuthorizationToken",
        "Effect": "Allow",
        "Resource": "*",
    }
    assert set(statements) == {"PushAgentImages", "EcrLogin"}
    # No repository policy: the role's own policy is the only grant.
    assert "RepositoryPolicyText" not in _repository(template)["Properties"]
    assert RegistryOutputs.PUSH_ROLE_ARN in template["Outputs"]


def test_a_role_arn_is_the_only_principal_of_the_repository_policy(by_role_arn: dict[str, Any]) -> None:
    assert _resources(by_role_arn, "AWS::IAM::Role") == {}
    policy = _repository(by_role_arn)["Properties"]["RepositoryPolicyText"]
    (statement,) = _statements(policy)
    assert statement == {
        "Sid": "PushFromAgentCi",
        "Effect": "Allow",
        "Principal": {"AWS": AGENT_CI_ROLE},
        "Action": sorted(PUSH_ACTIONS),
    }
    assert RegistryOutputs.PUSH_ROLE_ARN not in by_role_arn["Outputs"]


def test_push_actions_are_exactly_what_a_push_needs() -> None:
    assert sorted(PUSH_ACTIONS) == [
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:CompleteLayerUpload",
        "ecr:GetDownloadUrlForLayer",
        "ecr:InitiateLayerUpload",
        "ecr:PutImage",
        "ecr:UploadLayerPart",
    ]


@pytest.mark.parametrize("env_name", ENV_NAMES)
def test_execution_roles_may_only_pull_the_agent_image(synthesized: Synthesized, env_name: str) -> None:
    """The agent's execution role reads images and nothing else in ECR: no push, no delete, no policy change."""
    template = synthesized.template_json(EnvNames(env_name).agent_stack)
    ecr_statements = [
        s
        for policy in _resources(template, "AWS::IAM::Policy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(a.startswith("ecr:") for a in _as_list(s["Action"]))
    ]
    actions = sorted(a for s in ecr_statements for a in _as_list(s["Action"]))
    assert actions == [
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetAuthorizationToken",
        "ecr:GetDownloadUrlForLayer",
    ]
    pulls = [s for s in ecr_statements if "ecr:BatchGetImage" in _as_list(s["Action"])]
    assert "repository/callsaver-agent" in json.dumps([s["Resource"] for s in pulls])


def test_outputs(template: dict[str, Any]) -> None:
    assert set(template["Outputs"]) == {"AgentRepositoryName", "AgentRepositoryUri", "AgentImagePushRoleArn"}


def test_stack_is_termination_protected(registry_synth: Synthesized) -> None:
    artifact = registry_synth.artifact(REGISTRY_STACK)
    assert artifact.termination_protection is True
    assert (artifact.environment.account, artifact.environment.region) == ("836347236108", "us-west-1")


def test_no_lambda_custom_resource(template: dict[str, Any], by_role_arn: dict[str, Any]) -> None:
    for t in (template, by_role_arn):
        types = {r["Type"] for r in t["Resources"].values()}
        assert types <= {"AWS::ECR::Repository", "AWS::IAM::Role"}


@pytest.mark.parametrize("variant", ["github_subject", "role_arn"])
def test_cfn_lint_finds_no_errors_or_warnings(
    template: dict[str, Any], by_role_arn: dict[str, Any], variant: str
) -> None:
    text = json.dumps(template if variant == "github_subject" else by_role_arn)
    matches = cfn_lint(text, "us-west-1")
    assert [f"{m.rule.id} {m.message}" for m in matches if m.rule.id[0] in "EW"] == []


def test_template_matches_snapshot(template: dict[str, Any], snapshot: SnapshotAssertion) -> None:
    assert template == snapshot.use_extension(JSONSnapshotExtension)(matcher=mask_asset_hashes)
