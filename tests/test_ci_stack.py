"""Callsaver-CI: the GitHub OIDC provider and the roles the workflows assume, synthesized with the cdk-nag gate on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from callsaver_infra.app.ci_config import CiConfig, load_ci_config
from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.constructs.github_oidc import GITHUB_OIDC_THUMBPRINTS
from callsaver_infra.app.names import CI_STACK, CiNames, CiOutputs, EnvNames
from tests.helpers import (
    CI_FIXTURE,
    SEED_AGENT_KEYS,
    SEED_BACKEND_KEYS,
    Synthesized,
    cfn_lint,
    mask_asset_hashes,
    role_of,
    synth_ci,
)

SUB = "token.actions.githubusercontent.com:sub"
AUD = "token.actions.githubusercontent.com:aud"


@pytest.fixture(scope="module")
def ci(environments: dict[str, EnvironmentConfig]) -> CiConfig:
    return load_ci_config(CI_FIXTURE, environments)


@pytest.fixture(scope="module")
def ci_synth(
    ci: CiConfig, environments: dict[str, EnvironmentConfig], tmp_path_factory: pytest.TempPathFactory
) -> Synthesized:
    # Its own synth, not the shared session fixture: the environment tests keep their exact stack set.
    return synth_ci(ci, environments, tmp_path_factory.mktemp("ci.out"))


@pytest.fixture(scope="module")
def template(ci_synth: Synthesized) -> dict[str, Any]:
    return ci_synth.template_json(CI_STACK)


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in role.get("Policies", []) for s in policy["PolicyDocument"]["Statement"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _trust(role: dict[str, Any]) -> dict[str, Any]:
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    return dict(statement)


def test_the_provider_is_the_native_resource_for_github(template: dict[str, Any]) -> None:
    (provider,) = _resources(template, "AWS::IAM::OIDCProvider").values()
    props = provider["Properties"]
    assert props["Url"] == "https://token.actions.githubusercontent.com"
    assert props["ClientIdList"] == ["sts.amazonaws.com"]
    assert (
        props["ThumbprintList"]
        == list(GITHUB_OIDC_THUMBPRINTS)
        == [
            "6938fd4d98bab03faadb97b34396831e3780aea1",
            "1c58a3a8518e8759bf075b76b750d4f2df264fcd",
        ]
    )
    # One provider per account, possibly shared: the stack never deletes it.
    assert provider["DeletionPolicy"] == "Retain"


def test_no_lambda_custom_resource_and_no_long_lived_keys(template: dict[str, Any]) -> None:
    types = {r["Type"] for r in template["Resources"].values()}
    assert types == {"AWS::IAM::OIDCProvider", "AWS::IAM::Role"}
    assert not any(t.startswith(("Custom::", "AWS::Lambda::", "AWS::CloudFormation::CustomResource")) for t in types)
    assert "AWS::IAM::User" not in types and "AWS::IAM::AccessKey" not in types


def test_every_role_trusts_only_github_tokens_for_sts_with_exact_subjects(
    template: dict[str, Any], ci: CiConfig
) -> None:
    roles = _resources(template, "AWS::IAM::Role")
    assert len(roles) == 1 + len(ci.deploy_environments)
    for role in roles.values():
        trust = _trust(role["Properties"])
        assert trust["Effect"] == "Allow"
        assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert trust["Principal"] == {"Federated": {"Ref": next(iter(_resources(template, "AWS::IAM::OIDCProvider")))}}
        # StringEquals only: no StringLike, so no wildcard can widen the subject.
        assert set(trust["Condition"]) == {"StringEquals"}
        assert trust["Condition"]["StringEquals"][AUD] == "sts.amazonaws.com"
        for subject in trust["Condition"]["StringEquals"][SUB]:
            assert subject.startswith(f"repo:{ci.repository}:") and "*" not in subject and "?" not in subject


def test_trust_subjects_per_role(template: dict[str, Any]) -> None:
    repo = "repo:example-org/callsaver-infra"
    subjects = {
        name: _trust(role_of(template, name))["Condition"]["StringEquals"][SUB]
        for name in (CiNames.DIFF_ROLE, CiNames.deploy_role("staging"), CiNames.deploy_role("production"))
    }
    assert subjects == {
        # Pull requests, and the main branch's production plan (what the approver reviews).
        "callsaver-ci-diff": [f"{repo}:pull_request", f"{repo}:ref:refs/heads/main"],
        # Staging deploys on every push to main; production only from jobs in the approval-gated environment.
        "callsaver-ci-deploy-staging": [f"{repo}:ref:refs/heads/main"],
        "callsaver-ci-deploy-production": [f"{repo}:environment:production"],
    }


def test_no_role_has_managed_policies_or_wildcard_actions(template: dict[str, Any]) -> None:
    for role in _resources(template, "AWS::IAM::Role").values():
        props = role["Properties"]
        assert "ManagedPolicyArns" not in props  # no AdministratorAccess, no ReadOnlyAccess
        assert "PermissionsBoundary" not in props
        for statement in _statements(props):
            assert statement["Effect"] == "Allow"
            assert all("*" not in action for action in _as_list(statement["Action"])), statement
    assert "AdministratorAccess" not in json.dumps(template)


def test_the_diff_role_reads_deployed_templates_and_the_bootstrap_version_only(template: dict[str, Any]) -> None:
    account, region = "836347236108", "us-west-1"
    statements = _statements(role_of(template, CiNames.DIFF_ROLE))
    stacks = [
        f"arn:aws:cloudformation:{region}:{account}:stack/Callsaver-{kind}-{env}/*"
        for kind in ("Agent", "IAM", "Monitoring", "Secrets", "Storage")
        for env in ("staging", "production")
    ]
    read = [s for s in statements if s["Sid"] == "ReadDeployedTemplates"]
    assert {a for s in read for a in _as_list(s["Action"])} == {
        "cloudformation:DescribeStacks",
        "cloudformation:GetTemplate",
    }
    assert sorted(r for s in read for r in _as_list(s["Resource"])) == sorted(stacks)
    version = [s for s in statements if s["Sid"] == "ReadBootstrapVersion"]
    # Each environment's own bootstrap (config's bootstrap.qualifier): cstaging, cprod.
    assert [(s["Action"], sorted(_as_list(s["Resource"]))) for s in version] == [
        (
            "ssm:GetParameter",
            [f"arn:aws:ssm:{region}:{account}:parameter/cdk-bootstrap/{q}/version" for q in ("cprod", "cstaging")],
        )
    ]
    assert {s["Sid"] for s in statements} == {"ReadDeployedTemplates", "ReadBootstrapVersion"}
    # No role to assume: neither the lookup role (ReadOnlyAccess) nor any other.
    assert "sts:AssumeRole" not in json.dumps(statements)


@pytest.mark.parametrize("env_name", ["staging", "production"])
def test_each_deploy_role_is_scoped_to_its_environment(template: dict[str, Any], env_name: str) -> None:
    role = role_of(template, CiNames.deploy_role(env_name))
    statements = {s["Sid"]: s for s in _statements(role)}
    account, region = "836347236108", "us-west-1"
    assert statements["AssumeCdkDeployRoles"]["Action"] == "sts:AssumeRole"
    # Only the roles of the environment's own bootstrap (tests/test_bootstrap.py evaluates what that denies).
    q = {"staging": "cstaging", "production": "cprod"}[env_name]
    assert statements["AssumeCdkDeployRoles"]["Resource"] == [
        f"arn:aws:iam::{account}:role/cdk-{q}-deploy-role-{account}-{region}",
        f"arn:aws:iam::{account}:role/cdk-{q}-file-publishing-role-{account}-{region}",
    ]
    secrets = f"arn:aws:secretsmanager:{region}:{account}:secret:callsaver/{env_name}"
    assert statements["ReadHookSecrets"]["Action"] == "secretsmanager:GetSecretValue"
    # make deploy's secrets check reads all eleven (a placeholder is told by its value); the hook the key pairs.
    assert sorted(statements["ReadHookSecrets"]["Resource"]) == sorted(
        [f"{secrets}/backend/{key}-??????" for key in SEED_BACKEND_KEYS]
        + [f"{secrets}/agent/{key}-??????" for key in SEED_AGENT_KEYS]
        + [f"{secrets}/egress/s3-access-key-??????"]
    )
    assert statements["PushReceipt"]["Action"] == ["ssm:GetParameter", "ssm:PutParameter"]
    assert (
        statements["PushReceipt"]["Resource"]
        == f"arn:aws:ssm:{region}:{account}:parameter/callsaver/{env_name}/livekit/egress-push-receipt"
    )
    assert statements["VerifyHealthcheckRecording"]["Action"] == "s3:GetObject"
    assert (
        statements["VerifyHealthcheckRecording"]["Resource"]
        == f"arn:aws:s3:::callsaver-sessions-{env_name}/_healthcheck/*"
    )
    # The pre-deploy image check: exactly DescribeImages, on exactly the agent's repository in this account.
    assert statements["DescribeAgentImages"]["Action"] == "ecr:DescribeImages"
    assert statements["DescribeAgentImages"]["Resource"] == f"arn:aws:ecr:{region}:{account}:repository/callsaver-agent"
    assert set(statements) == {
        "AssumeCdkDeployRoles",
        "DescribeAgentImages",
        "ReadHookSecrets",
        "PushReceipt",
        "VerifyHealthcheckRecording",
    }
    other = "production" if env_name == "staging" else "staging"
    assert other not in json.dumps(role["Policies"])


def test_bootstrap_role_arns_are_the_ones_the_cli_assumes(template: dict[str, Any], synthesized: Synthesized) -> None:
    """The ARNs granted here must equal what the environments' cloud assembly tells `cdk deploy` to use (the diff
    role assumes none: `cdk diff` falls back to its own credentials when the lookup role cannot be assumed)."""
    manifest = json.loads((synthesized.outdir / "manifest.json").read_text())
    used: set[str] = set()
    for env in ("staging", "production"):
        for stack in (EnvNames(env).storage_stack, EnvNames(env).agent_stack):
            props = manifest["artifacts"][stack]["properties"]
            used.add(props["assumeRoleArn"])
            assets = json.loads((synthesized.outdir / f"{stack}.assets.json").read_text())
            used |= {d["assumeRoleArn"] for f in assets["files"].values() for d in f["destinations"].values()}
    used = {arn.replace("${AWS::Partition}", "aws") for arn in used}
    granted = {
        arn
        for role in _resources(template, "AWS::IAM::Role").values()
        for s in _statements(role["Properties"])
        if s["Action"] == "sts:AssumeRole"
        for arn in _as_list(s["Resource"])
    }
    assert granted == used


def test_outputs_name_the_repository_variables(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert (
        set(outputs)
        == {
            CiOutputs.PROVIDER_ARN,
            CiOutputs.DIFF_ROLE_ARN,
            CiOutputs.deploy_role_arn("staging"),
            CiOutputs.deploy_role_arn("production"),
        }
        == {"GitHubOidcProviderArn", "DiffRoleArn", "DeployRoleArnStaging", "DeployRoleArnProduction"}
    )
    assert "AWS_DIFF_ROLE_ARN" in outputs["DiffRoleArn"]["Description"]
    assert "AWS_DEPLOY_ROLE_ARN_STAGING" in outputs["DeployRoleArnStaging"]["Description"]
    assert "AWS_DEPLOY_ROLE_ARN_PRODUCTION" in outputs["DeployRoleArnProduction"]["Description"]


def test_stack_is_termination_protected(ci_synth: Synthesized) -> None:
    assert ci_synth.artifact(CI_STACK).termination_protection is True


def test_an_existing_provider_is_reused_not_created(
    ci: CiConfig, environments: dict[str, EnvironmentConfig], tmp_path: Path
) -> None:
    reused = synth_ci(ci.model_copy(update={"create_oidc_provider": False}), environments, tmp_path)
    template = reused.template_json(CI_STACK)
    assert _resources(template, "AWS::IAM::OIDCProvider") == {}
    trust = _trust(role_of(template, CiNames.DIFF_ROLE))
    assert trust["Principal"]["Federated"] == (
        "arn:aws:iam::836347236108:oidc-provider/token.actions.githubusercontent.com"
    )


def test_cdk_nag_passes_with_reasoned_acknowledgements(ci_synth: Synthesized) -> None:
    reports = json.loads((ci_synth.outdir / "validation-report.json").read_text())["pluginReports"]
    assert [(r["pluginName"], r["conclusion"], r["violations"]) for r in reports] == [
        ("AwsSolutions", "success", []),
        ("NIST.800.53.R5", "success", []),
    ]
    found = set()
    for suppressed in (s for report in reports for s in report["suppressedViolations"]):
        assert len(suppressed["reason"]) >= 80, f"{suppressed['ruleName']}: reason too thin for a reviewer"
        for construct in suppressed["violatingConstructs"]:
            found.add((suppressed["ruleName"], construct["constructPath"]))
    deploy_roles = {
        (
            f"AwsSolutions-IAM5[Resource::arn:aws:s3:::callsaver-sessions-{env}/_healthcheck/*]",
            f"Callsaver-CI/GitHubOidc/DeployRole{env.capitalize()}/Resource",
        )
        for env in ("staging", "production")
    }
    # Each stack ARN ends in the random stack id.
    diff_role = {
        (
            f"AwsSolutions-IAM5[Resource::arn:aws:cloudformation:us-west-1:836347236108:stack/{stack}/*]",
            "Callsaver-CI/GitHubOidc/DiffRole/Resource",
        )
        for env in ("staging", "production")
        for stack in EnvNames(env).stacks
    }
    inline = {
        ("NIST.800.53.R5-IAMNoInlinePolicy", f"Callsaver-CI/GitHubOidc/{role}/Resource")
        for role in ("DiffRole", "DeployRoleStaging", "DeployRoleProduction")
    }
    assert found == deploy_roles | diff_role | inline


def test_cfn_lint_finds_no_errors_or_warnings(ci_synth: Synthesized) -> None:
    text = Path(ci_synth.artifact(CI_STACK).template_full_path).read_text()
    matches = cfn_lint(text, "us-west-1")
    assert [f"{m.rule.id} {m.message}" for m in matches if m.rule.id[0] in "EW"] == []


def test_template_matches_snapshot(template: dict[str, Any], snapshot: SnapshotAssertion) -> None:
    assert template == snapshot.use_extension(JSONSnapshotExtension)(matcher=mask_asset_hashes)
