"""A bootstrap per environment (issue 12, "Staging cannot touch production"): qualifiers in config and synth, the
generated bootstrap template, and an evaluation of the real policies showing staging's deploy path denied on
production's resources and allowed on staging's (tests/iam_policy_eval.py: a strict offline evaluator)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from callsaver_infra.app import bootstrap
from callsaver_infra.app.ci_config import CiConfig, load_ci_config
from callsaver_infra.app.config import ConfigError, EnvironmentConfig, load_environments
from callsaver_infra.app.names import CI_STACK, CiNames, EnvNames
from callsaver_infra.ops import bootstrap as bootstrap_command
from callsaver_infra.ops import cli
from tests.helpers import CI_FIXTURE, ROOT, Synthesized, cfn_lint, role_of, synth_ci
from tests.iam_policy_eval import Request, allowed, decide, resolve

CLI_TEMPLATE = ROOT / bootstrap.CLI_TEMPLATE
ACCOUNT, REGION = "836347236108", "us-west-1"


# --- config -------------------------------------------------------------------------------------------------------


def _configs(tmp_path: Path, **qualifiers: str | None) -> Path:
    """Copies of the committed environments with bootstrap.qualifier replaced (None: the section removed)."""
    for path in (ROOT / "config").glob("*.toml"):
        text = path.read_text()
        head, sep, _ = text.partition("\n[bootstrap]")
        if path.stem in qualifiers:
            q = qualifiers[path.stem]
            text = head + (f'\n[bootstrap]\nqualifier = "{q}"\n' if q is not None else "\n")
        (tmp_path / path.name).write_text(text)
    return tmp_path


def test_committed_environments_have_their_own_qualifiers(environments: dict[str, EnvironmentConfig]) -> None:
    assert {e: c.bootstrap.qualifier for e, c in environments.items()} == {
        "local": "clocal",
        "production": "cprod",
        "staging": "cstaging",
    }


@pytest.mark.parametrize("qualifier", ["", "Cstaging", "c_staging", "c-staging", "cstaging123"])
def test_a_qualifier_must_fit_cdk_and_a_bucket_name(tmp_path: Path, qualifier: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_environments(_configs(tmp_path, staging=qualifier))
    message = str(e.value)
    assert "staging.toml" in message and "bootstrap.qualifier" in message
    assert "1-10 lowercase letters and digits" in message


@pytest.mark.parametrize(
    ("staging", "production", "shown"),
    [
        ("cshared", "cshared", "= 'cshared' in both"),
        (None, None, "unset in both (CDK's default 'hnb659fds')"),
    ],
)
def test_two_environments_of_one_account_and_region_need_their_own_qualifier(
    tmp_path: Path, staging: str | None, production: str | None, shown: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_environments(_configs(tmp_path, staging=staging, production=production))
    message = str(e.value)
    assert (
        f"{tmp_path / 'production.toml'} and {tmp_path / 'staging.toml'}: key 'bootstrap.qualifier' {shown}" in message
    )
    assert "one set of CDK bootstrap roles" in message and "change or delete the other's stacks" in message
    assert "callsaver-infra bootstrap --env staging" in message


def test_a_copied_environment_is_told_to_take_its_own_qualifier(tmp_path: Path) -> None:
    _configs(tmp_path)
    text = (tmp_path / "staging.toml").read_text().replace("-staging", "-qa")
    (tmp_path / "qa.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_environments(tmp_path)
    assert f'qualifier = "cqa" under [bootstrap] in {tmp_path / "qa.toml"}' in str(e.value)
    assert "callsaver-infra bootstrap --env qa" in str(e.value)


def test_one_environment_on_the_default_bootstrap_is_allowed(tmp_path: Path) -> None:
    envs = load_environments(_configs(tmp_path, staging=None))
    assert envs["staging"].bootstrap.qualifier is None and envs["production"].bootstrap.qualifier == "cprod"
    with pytest.raises(ConfigError, match="'bootstrap.qualifier' is not set"):
        bootstrap.qualifier_of(envs["staging"])


# --- synth --------------------------------------------------------------------------------------------------------


def test_each_environments_stacks_deploy_through_its_own_bootstrap(
    synthesized: Synthesized, environments: dict[str, EnvironmentConfig]
) -> None:
    for name, config in environments.items():
        q = config.bootstrap.qualifier
        for stack in EnvNames(name).stacks:
            artifact = synthesized.artifact(stack)
            assert artifact.assume_role_arn == (
                f"arn:${{AWS::Partition}}:iam::{config.account}:role/cdk-{q}-deploy-role-{config.account}-{config.region}"
            )
            template = synthesized.template_json(stack)
            assert template["Parameters"]["BootstrapVersion"]["Default"] == f"/cdk-bootstrap/{q}/version"
            boundary = bootstrap.permissions_boundary_arn(config)
            for resource in template["Resources"].values():
                if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::User"):
                    assert resource["Properties"].get("PermissionsBoundary") == boundary, (stack, resource)


# --- the generated template ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_template() -> dict[str, Any]:
    return bootstrap.load_cli_template(CLI_TEMPLATE)


@pytest.fixture(scope="module")
def templates(environments: dict[str, EnvironmentConfig], cli_template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: bootstrap.bootstrap_template(c, cli_template) for name, c in environments.items()}


def test_the_template_is_the_clis_with_only_the_documented_changes(
    templates: dict[str, dict[str, Any]], cli_template: dict[str, Any]
) -> None:
    t = templates["staging"]
    assert set(t["Resources"]) == set(cli_template["Resources"])
    assert t["Outputs"] == cli_template["Outputs"]  # the CLI reads BootstrapVersion from here
    changed = {k for k in t["Resources"] if t["Resources"][k] != cli_template["Resources"][k]}
    assert changed == {"CloudFormationExecutionRole", "CdkBoostrapPermissionsBoundaryPolicy", "DeploymentActionRole"}
    assert t["Parameters"]["Qualifier"]["Default"] == "cstaging"
    assert "AdministratorAccess" not in json.dumps(t)
    assert "Condition" not in t["Resources"]["CdkBoostrapPermissionsBoundaryPolicy"]


def test_the_template_lints_as_clean_as_the_clis(
    templates: dict[str, dict[str, Any]], cli_template: dict[str, Any]
) -> None:
    def findings(template: dict[str, Any]) -> set[str]:
        matches = cfn_lint(json.dumps(template), REGION)
        return {m.rule.id for m in matches if m.rule.id[0] in "EW"}

    # The CLI's own template has W2001 (unused parameter) and W3045 (legacy AccessControl); nothing more here.
    assert findings(templates["staging"]) <= findings(cli_template) == {"W2001", "W3045"}


def test_bootstrap_command_dry_run_prints_the_template_and_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)

    def no_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("--dry-run must run nothing")

    monkeypatch.setattr(bootstrap_command.subprocess, "run", no_run)
    assert cli.main(["bootstrap", "--env", "production", "--dry-run", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    template = tmp_path / "bootstrap-production.template.json"
    assert out[0] == f"template: {template}"
    assert shlex.split(out[1].removeprefix("command: ")) == [
        "cdk",
        "bootstrap",
        f"aws://{ACCOUNT}/{REGION}",
        "--template",
        str(template),
        "--qualifier",
        "cprod",
        "--toolkit-stack-name",
        "CDKToolkit-production",
        "--termination-protection",
        "true",
    ]
    assert json.loads(template.read_text())["Parameters"]["Qualifier"]["Default"] == "cprod"


def test_the_bootstrap_template_is_written_without_aws_cdk_lib(tmp_path: Path) -> None:
    """Partitions come from the pinned regions table: `callsaver-infra bootstrap` (and the rehearsal's bootstrap
    step) loads neither aws_cdk nor jsii, so no Node starts. A fresh process, so this session's imports cannot
    hide one."""
    probe = (
        "import json, sys; from callsaver_infra.ops import cli; "
        "code = cli.main(['bootstrap', '--env', 'production', '--dry-run', '--out-dir', sys.argv[1]]); "
        "print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] in ('aws_cdk', 'jsii'))]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [0, []]
    policy = json.loads((tmp_path / "bootstrap-production.template.json").read_text())
    assert "arn:aws:iam::" in json.dumps(policy)  # the template, with its partition-qualified ARNs, was written


# --- policy evaluation --------------------------------------------------------------------------------------------


def _refs(config: EnvironmentConfig) -> dict[str, str]:
    q = config.bootstrap.qualifier
    a, r = config.account, config.region
    return {
        "AWS::Partition": "aws",
        "AWS::AccountId": a,
        "AWS::Region": r,
        "Qualifier": str(q),
        "CloudFormationExecutionRole.Arn": f"arn:aws:iam::{a}:role/cdk-{q}-cfn-exec-role-{a}-{r}",
        "StagingBucket.Arn": f"arn:aws:s3:::cdk-{q}-assets-{a}-{r}",
        "CdkBootstrapVersion": f"/cdk-bootstrap/{q}/version",
    }


# The CLI's bootstrap without --trust, custom boundaries or custom keys.
CONDITIONS = {
    "HasTrustedAccounts": False,
    "ShouldDenyExternalId": True,
    "ShouldApplyPermissionsBoundaryToAllRoles": False,
    "PermissionsBoundarySet": False,
    "CreateNewKey": False,
}


def _role_policies(template: dict[str, Any], logical_id: str, config: EnvironmentConfig) -> list[dict[str, Any]]:
    props = resolve(template["Resources"][logical_id]["Properties"], _refs(config), CONDITIONS)
    return [p["PolicyDocument"] for p in props.get("Policies", [])]


@pytest.fixture(scope="module")
def staging_deploy(templates: dict[str, dict[str, Any]], environments: dict[str, EnvironmentConfig]) -> list[Any]:
    """The staging bootstrap deploy role's inline policy. Its one managed policy, AWSCloudFormationReadOnlyAccess,
    only describes and reads (not evaluated here)."""
    return _role_policies(templates["staging"], "DeploymentActionRole", environments["staging"])


@pytest.fixture(scope="module")
def staging_exec(templates: dict[str, dict[str, Any]], environments: dict[str, EnvironmentConfig]) -> list[Any]:
    policies = _role_policies(templates["staging"], "CloudFormationExecutionRole", environments["staging"])
    props = templates["staging"]["Resources"]["CloudFormationExecutionRole"]["Properties"]
    assert "ManagedPolicyArns" not in props
    return policies


@pytest.fixture(scope="module")
def staging_boundary(templates: dict[str, dict[str, Any]], environments: dict[str, EnvironmentConfig]) -> Any:
    props = templates["staging"]["Resources"]["CdkBoostrapPermissionsBoundaryPolicy"]["Properties"]
    return resolve(props["PolicyDocument"], _refs(environments["staging"]), CONDITIONS)


@pytest.fixture(scope="module")
def ci_template(environments: dict[str, EnvironmentConfig], tmp_path_factory: pytest.TempPathFactory) -> Any:
    ci: CiConfig = load_ci_config(CI_FIXTURE, environments)
    return synth_ci(ci, environments, tmp_path_factory.mktemp("ci.out")).template_json(CI_STACK)


def _stack(env: str, kind: str = "Storage") -> str:
    return (
        f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/Callsaver-{kind}-{env}/0a1b2c3d-0000-0000-0000-000000000000"
    )


def _bootstrap_role(q: str, role: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/cdk-{q}-{role}-role-{ACCOUNT}-{REGION}"


def test_stagings_ci_deploy_role_assumes_only_stagings_bootstrap_roles(ci_template: Any) -> None:
    policies = [p["PolicyDocument"] for p in role_of(ci_template, CiNames.deploy_role("staging"))["Policies"]]
    for role in ("deploy", "file-publishing"):
        assert decide(policies, Request("sts:AssumeRole", _bootstrap_role("cstaging", role))) == "Allow"
        assert decide(policies, Request("sts:AssumeRole", _bootstrap_role("cprod", role))) == "ImplicitDeny"
        assert decide(policies, Request("sts:AssumeRole", _bootstrap_role("hnb659fds", role))) == "ImplicitDeny"
    for role in ("cfn-exec", "lookup", "image-publishing"):
        assert decide(policies, Request("sts:AssumeRole", _bootstrap_role("cprod", role))) == "ImplicitDeny"
    production = [p["PolicyDocument"] for p in role_of(ci_template, CiNames.deploy_role("production"))["Policies"]]
    assert decide(production, Request("sts:AssumeRole", _bootstrap_role("cprod", "deploy"))) == "Allow"
    assert decide(production, Request("sts:AssumeRole", _bootstrap_role("cstaging", "deploy"))) == "ImplicitDeny"


def test_the_diff_role_reads_each_environments_bootstrap_version(ci_template: Any) -> None:
    policies = [p["PolicyDocument"] for p in role_of(ci_template, CiNames.DIFF_ROLE)["Policies"]]
    for q in ("cstaging", "cprod"):
        param = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/cdk-bootstrap/{q}/version"
        assert decide(policies, Request("ssm:GetParameter", param)) == "Allow"
    default = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/cdk-bootstrap/hnb659fds/version"
    assert decide(policies, Request("ssm:GetParameter", default)) == "ImplicitDeny"


STACK_ACTIONS = (
    "cloudformation:CreateChangeSet",
    "cloudformation:ExecuteChangeSet",
    "cloudformation:DeleteChangeSet",
    "cloudformation:CreateStack",
    "cloudformation:UpdateStack",
    "cloudformation:DeleteStack",
    "cloudformation:UpdateTerminationProtection",
    "cloudformation:RollbackStack",
    "cloudformation:ContinueUpdateRollback",
)


@pytest.mark.parametrize("action", STACK_ACTIONS)
@pytest.mark.parametrize("kind", ["Storage", "IAM", "Secrets", "Agent", "Monitoring"])
def test_stagings_bootstrap_deploy_role_changes_only_stagings_stacks(
    staging_deploy: list[Any], action: str, kind: str
) -> None:
    assert decide(staging_deploy, Request(action, _stack("staging", kind))) == "Allow"
    assert decide(staging_deploy, Request(action, _stack("production", kind))) == "ImplicitDeny"
    assert (
        decide(
            staging_deploy, Request(action, f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/CDKToolkit-production/x")
        )
        == "ImplicitDeny"
    )
    assert (
        decide(staging_deploy, Request(action, f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/Callsaver-CI/x"))
        == "ImplicitDeny"
    )


def test_stagings_bootstrap_deploy_role_passes_only_its_own_execution_role(staging_deploy: list[Any]) -> None:
    assert decide(staging_deploy, Request("iam:PassRole", _bootstrap_role("cstaging", "cfn-exec"))) == "Allow"
    assert decide(staging_deploy, Request("iam:PassRole", _bootstrap_role("cprod", "cfn-exec"))) == "ImplicitDeny"
    assert decide(staging_deploy, Request("iam:PassRole", _bootstrap_role("hnb659fds", "cfn-exec"))) == "ImplicitDeny"


def _env_resources(env: str) -> dict[str, tuple[str, str, dict[str, str]]]:
    """Probes of one environment's resources: name -> (action, resource ARN, request context)."""
    a, r = ACCOUNT, REGION
    tag = {"aws:ResourceTag/environment": env}
    return {
        "bucket": ("s3:DeleteBucket", f"arn:aws:s3:::callsaver-sessions-{env}", {}),
        "bucket policy": ("s3:PutBucketPolicy", f"arn:aws:s3:::callsaver-sessions-{env}", {}),
        "recording": ("s3:DeleteObject", f"arn:aws:s3:::callsaver-sessions-{env}/room/2026.ogg", {}),
        "audit log bucket": ("s3:DeleteBucket", f"arn:aws:s3:::callsaver-recording-reads-{env}-{a}", {}),
        "secret": (
            "secretsmanager:PutSecretValue",
            f"arn:aws:secretsmanager:{r}:{a}:secret:callsaver/{env}/agent/OPENAI_API_KEY-AbCdEf",
            {},
        ),
        "secret policy": (
            "secretsmanager:PutResourcePolicy",
            f"arn:aws:secretsmanager:{r}:{a}:secret:callsaver/{env}/backend/LIVEKIT_API_KEY-AbCdEf",
            {},
        ),
        "execution role": ("iam:DeleteRole", f"arn:aws:iam::{a}:role/callsaver-agent-execution-{env}", {}),
        "reader role trust": (
            "iam:UpdateAssumeRolePolicy",
            f"arn:aws:iam::{a}:role/callsaver-recording-reader-{env}",
            {},
        ),
        "task role": (
            "iam:PassRole",
            f"arn:aws:iam::{a}:role/Callsaver-Agent-{env}-AgentServiceTaskDefinitionTa-AbC",
            {},
        ),
        "egress user key": ("iam:CreateAccessKey", f"arn:aws:iam::{a}:user/callsaver-livekit-egress-{env}", {}),
        "reader policy": ("iam:CreatePolicyVersion", f"arn:aws:iam::{a}:policy/callsaver-recording-reader-{env}", {}),
        "session key": (
            "kms:ScheduleKeyDeletion",
            f"arn:aws:kms:{r}:{a}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            tag,
        ),
        "key policy": ("kms:PutKeyPolicy", f"arn:aws:kms:{r}:{a}:key/1234abcd-12ab-34cd-56ef-1234567890ab", tag),
        "key alias": ("kms:UpdateAlias", f"arn:aws:kms:{r}:{a}:alias/callsaver/{env}/sessions", {}),
        "log group": ("logs:DeleteLogGroup", f"arn:aws:logs:{r}:{a}:log-group:/callsaver/{env}/agent", {}),
        "cluster": ("ecs:DeleteCluster", f"arn:aws:ecs:{r}:{a}:cluster/callsaver-{env}", {}),
        "service": ("ecs:UpdateService", f"arn:aws:ecs:{r}:{a}:service/callsaver-{env}/callsaver-agent-{env}", {}),
        "topic": ("sns:DeleteTopic", f"arn:aws:sns:{r}:{a}:callsaver-alerts-{env}", {}),
        "alarm": ("cloudwatch:DeleteAlarms", f"arn:aws:cloudwatch:{r}:{a}:alarm:callsaver-{env}-agent-down", {}),
        "dashboard": ("cloudwatch:PutDashboard", f"arn:aws:cloudwatch::{a}:dashboard/Callsaver-{env}", {}),
        "rule": ("events:DeleteRule", f"arn:aws:events:{r}:{a}:rule/callsaver-{env}-agent-deploy-failed", {}),
        "trail": ("cloudtrail:StopLogging", f"arn:aws:cloudtrail:{r}:{a}:trail/callsaver-recording-reads-{env}", {}),
        "vpc": ("ec2:DeleteVpc", f"arn:aws:ec2:{r}:{a}:vpc/vpc-0abc", tag),
        "security group": ("ec2:AuthorizeSecurityGroupIngress", f"arn:aws:ec2:{r}:{a}:security-group/sg-0abc", tag),
        "route table": ("ec2:CreateRoute", f"arn:aws:ec2:{r}:{a}:route-table/rtb-0abc", tag),
    }


@pytest.mark.parametrize("name", sorted(_env_resources("staging")))
def test_stagings_execution_role_is_denied_on_productions_resources(
    staging_exec: list[Any], staging_boundary: Any, name: str
) -> None:
    action, arn, context = _env_resources("staging")[name]
    assert decide(staging_exec, Request(action, arn, context)) == "Allow", "staging's own resource"
    action, arn, context = _env_resources("production")[name]
    assert decide(staging_exec, Request(action, arn, context)) == "ImplicitDeny", "production's resource"
    # And nothing staging's stacks create (roles and users carry the boundary) can reach it either.
    assert decide([staging_boundary], Request(action, arn, context)) != "Allow"


def test_creating_in_productions_network_or_tagging_as_production_is_denied(staging_exec: list[Any]) -> None:
    a, r = ACCOUNT, REGION
    staging_tag = {"aws:RequestTag/environment": "staging"}
    # CreateSubnet is authorized for the new subnet and for the VPC it goes into: the subnet may be tagged staging,
    # the VPC must be staging's.
    subnet = Request("ec2:CreateSubnet", f"arn:aws:ec2:{r}:{a}:subnet/*", staging_tag)
    assert decide(staging_exec, subnet) == "Allow"
    for env, expected in (("staging", "Allow"), ("production", "ImplicitDeny")):
        vpc = Request(
            "ec2:CreateSubnet", f"arn:aws:ec2:{r}:{a}:vpc/vpc-0abc", {**staging_tag, "aws:ResourceTag/environment": env}
        )
        assert decide(staging_exec, vpc) == expected, env
    untagged = Request("ec2:CreateVpc", f"arn:aws:ec2:{r}:{a}:vpc/*", {})
    assert decide(staging_exec, untagged) == "ImplicitDeny"
    as_production = Request("kms:CreateKey", "*", {"aws:RequestTag/environment": "production"})
    assert decide(staging_exec, as_production) == "ImplicitDeny"
    assert decide(staging_exec, Request("kms:CreateKey", "*", staging_tag)) == "Allow"
    # Re-tagging a production resource as staging, outside a create, is denied.
    retag = Request(
        "ec2:CreateTags",
        f"arn:aws:ec2:{r}:{a}:vpc/vpc-0abc",
        {**staging_tag, "aws:ResourceTag/environment": "production"},
    )
    assert decide(staging_exec, retag) == "ImplicitDeny"
    retag_key = Request(
        "kms:TagResource", f"arn:aws:kms:{r}:{a}:key/k", {**staging_tag, "aws:ResourceTag/environment": "production"}
    )
    assert decide(staging_exec, retag_key) == "ImplicitDeny"


def test_staging_creates_roles_and_users_only_with_its_boundary(
    staging_exec: list[Any], staging_boundary: Any, environments: dict[str, EnvironmentConfig]
) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/callsaver-agent-execution-staging"
    own = {"iam:PermissionsBoundary": bootstrap.permissions_boundary_arn(environments["staging"])}
    prod = {"iam:PermissionsBoundary": bootstrap.permissions_boundary_arn(environments["production"])}
    for action in ("iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy"):
        assert decide(staging_exec, Request(action, role, own)) == "Allow"
        assert decide(staging_exec, Request(action, role, {})) == "ImplicitDeny"
        assert decide(staging_exec, Request(action, role, prod)) == "ImplicitDeny"
    for action in ("iam:DeleteRolePermissionsBoundary", "iam:DeleteUserPermissionsBoundary"):
        assert decide(staging_exec, Request(action, role)) == "ImplicitDeny"
    # A role under the boundary cannot shed it, whatever its own policies say.
    user = f"arn:aws:iam::{ACCOUNT}:user/callsaver-livekit-egress-staging"
    assert decide([staging_boundary], Request("iam:DeleteRolePermissionsBoundary", role)) == "Deny"
    assert decide([staging_boundary], Request("iam:DeleteUserPermissionsBoundary", user)) == "Deny"
    # The boundary itself (and the bootstrap's own roles) are out of reach.
    boundary = bootstrap.permissions_boundary_arn(environments["staging"])
    assert decide(staging_exec, Request("iam:CreatePolicyVersion", boundary)) == "ImplicitDeny"
    assert (
        decide(staging_exec, Request("iam:PutRolePolicy", _bootstrap_role("cstaging", "deploy"), own)) == "ImplicitDeny"
    )


# Per resource type of the stacks: one action CloudFormation takes to create it, on the staging instance.
def _create_probes(env: str) -> dict[str, Request]:
    a, r = ACCOUNT, REGION
    tag, new = {"aws:ResourceTag/environment": env}, {"aws:RequestTag/environment": env}
    qualifier = {"staging": "cstaging", "production": "cprod"}[env]
    boundary = {"iam:PermissionsBoundary": f"arn:aws:iam::{a}:policy/cdk-{qualifier}-permissions-boundary-{a}-{r}"}
    return {
        "AWS::ApplicationAutoScaling::ScalableTarget": Request("application-autoscaling:RegisterScalableTarget", "*"),
        "AWS::ApplicationAutoScaling::ScalingPolicy": Request("application-autoscaling:PutScalingPolicy", "*"),
        "AWS::CloudTrail::Trail": Request(
            "cloudtrail:CreateTrail", f"arn:aws:cloudtrail:{r}:{a}:trail/callsaver-recording-reads-{env}"
        ),
        "AWS::CloudWatch::Alarm": Request(
            "cloudwatch:PutMetricAlarm", f"arn:aws:cloudwatch:{r}:{a}:alarm:callsaver-{env}-uploads-failing"
        ),
        "AWS::CloudWatch::Dashboard": Request(
            "cloudwatch:PutDashboard", f"arn:aws:cloudwatch::{a}:dashboard/Callsaver-{env}"
        ),
        "AWS::EC2::InternetGateway": Request(
            "ec2:CreateInternetGateway", f"arn:aws:ec2:{r}:{a}:internet-gateway/*", new
        ),
        "AWS::EC2::Route": Request("ec2:CreateRoute", f"arn:aws:ec2:{r}:{a}:route-table/rtb-1", tag),
        "AWS::EC2::RouteTable": Request("ec2:CreateRouteTable", f"arn:aws:ec2:{r}:{a}:route-table/*", new),
        "AWS::EC2::SecurityGroup": Request("ec2:CreateSecurityGroup", f"arn:aws:ec2:{r}:{a}:security-group/*", new),
        "AWS::EC2::Subnet": Request("ec2:CreateSubnet", f"arn:aws:ec2:{r}:{a}:subnet/*", new),
        "AWS::EC2::SubnetRouteTableAssociation": Request(
            "ec2:AssociateRouteTable", f"arn:aws:ec2:{r}:{a}:subnet/subnet-1", tag
        ),
        "AWS::EC2::VPC": Request("ec2:CreateVpc", f"arn:aws:ec2:{r}:{a}:vpc/*", new),
        "AWS::EC2::VPCGatewayAttachment": Request(
            "ec2:AttachInternetGateway", f"arn:aws:ec2:{r}:{a}:internet-gateway/igw-1", tag
        ),
        "AWS::ECS::Cluster": Request("ecs:CreateCluster", f"arn:aws:ecs:{r}:{a}:cluster/callsaver-{env}"),
        "AWS::ECS::Service": Request(
            "ecs:CreateService", f"arn:aws:ecs:{r}:{a}:service/callsaver-{env}/callsaver-agent-{env}"
        ),
        "AWS::ECS::TaskDefinition": Request("ecs:RegisterTaskDefinition", "*"),
        "AWS::Events::Rule": Request(
            "events:PutRule", f"arn:aws:events:{r}:{a}:rule/callsaver-{env}-agent-deploy-failed"
        ),
        "AWS::IAM::AccessKey": Request("iam:CreateAccessKey", f"arn:aws:iam::{a}:user/callsaver-livekit-egress-{env}"),
        "AWS::IAM::ManagedPolicy": Request(
            "iam:CreatePolicy", f"arn:aws:iam::{a}:policy/callsaver-recording-reader-{env}"
        ),
        "AWS::IAM::Policy": Request(
            "iam:PutRolePolicy", f"arn:aws:iam::{a}:role/callsaver-agent-execution-{env}", boundary
        ),
        "AWS::IAM::Role": Request(
            "iam:CreateRole", f"arn:aws:iam::{a}:role/callsaver-recording-reader-{env}", boundary
        ),
        "AWS::IAM::User": Request("iam:CreateUser", f"arn:aws:iam::{a}:user/callsaver-livekit-egress-{env}", boundary),
        "AWS::KMS::Alias": Request("kms:CreateAlias", f"arn:aws:kms:{r}:{a}:alias/callsaver-alerts-{env}"),
        "AWS::KMS::Key": Request("kms:CreateKey", "*", new),
        "AWS::Logs::LogGroup": Request("logs:CreateLogGroup", f"arn:aws:logs:{r}:{a}:log-group:/callsaver/{env}/agent"),
        "AWS::S3::Bucket": Request("s3:CreateBucket", f"arn:aws:s3:::callsaver-sessions-{env}"),
        "AWS::S3::BucketPolicy": Request("s3:PutBucketPolicy", f"arn:aws:s3:::callsaver-recording-reads-{env}-{a}"),
        "AWS::SNS::Topic": Request("sns:CreateTopic", f"arn:aws:sns:{r}:{a}:callsaver-alerts-{env}"),
        "AWS::SNS::TopicPolicy": Request("sns:SetTopicAttributes", f"arn:aws:sns:{r}:{a}:callsaver-alerts-{env}"),
        "AWS::SecretsManager::ResourcePolicy": Request(
            "secretsmanager:PutResourcePolicy",
            f"arn:aws:secretsmanager:{r}:{a}:secret:callsaver/{env}/egress/s3-access-key-AbCdEf",
        ),
        "AWS::SecretsManager::Secret": Request(
            "secretsmanager:CreateSecret",
            f"arn:aws:secretsmanager:{r}:{a}:secret:callsaver/{env}/agent/GOOGLE_API_KEY-AbCdEf",
        ),
    }


# Types whose creating action AWS authorizes on no resource: nothing environment-specific to deny.
UNSCOPED_TYPES = {
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::ECS::TaskDefinition",
}


def test_every_resource_type_of_the_stacks_is_covered(synthesized: Synthesized) -> None:
    types = {
        resource["Type"]
        for stack in synthesized.stack_names()
        for resource in synthesized.template_json(stack)["Resources"].values()
    }
    missing = types - set(bootstrap.COVERED_RESOURCE_TYPES)
    assert not missing, f"add these to bootstrap.COVERED_RESOURCE_TYPES and the execution policy: {sorted(missing)}"
    assert set(_create_probes("staging")) == set(bootstrap.COVERED_RESOURCE_TYPES)


@pytest.mark.parametrize("kind", bootstrap.COVERED_RESOURCE_TYPES)
def test_the_execution_role_creates_each_type_for_its_environment_only(staging_exec: list[Any], kind: str) -> None:
    assert decide(staging_exec, _create_probes("staging")[kind]) == "Allow"
    if kind not in UNSCOPED_TYPES:
        assert decide(staging_exec, _create_probes("production")[kind]) == "ImplicitDeny"


def test_the_app_identities_still_work_under_the_boundary(staging_boundary: Any) -> None:
    a, r = ACCOUNT, REGION
    can: list[Callable[[], Request]] = [
        lambda: Request("s3:PutObject", "arn:aws:s3:::callsaver-sessions-staging/room/x.ogg"),
        lambda: Request(
            "kms:GenerateDataKey", f"arn:aws:kms:{r}:{a}:key/k", {"aws:ResourceTag/environment": "staging"}
        ),
        lambda: Request(
            "secretsmanager:GetSecretValue",
            f"arn:aws:secretsmanager:{r}:{a}:secret:callsaver/staging/agent/OPENAI_API_KEY-AbCdEf",
        ),
        lambda: Request("logs:PutLogEvents", f"arn:aws:logs:{r}:{a}:log-group:/callsaver/staging/agent:log-stream:x"),
        lambda: Request("ecr:BatchGetImage", f"arn:aws:ecr:{r}:{a}:repository/callsaver-agent"),
        lambda: Request("ecs:UpdateTaskProtection", f"arn:aws:ecs:{r}:{a}:task/callsaver-staging/0123"),
    ]
    for request in can:
        assert allowed(
            [{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}], request(), staging_boundary
        )
    assert not allowed(
        [{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}],
        Request("iam:CreateRole", f"arn:aws:iam::{a}:role/callsaver-x-staging"),
        staging_boundary,
    )


def test_default_qualifier_is_aws_cdk_libs() -> None:
    """Config knows CDK's default qualifier without importing aws-cdk-lib (no Node for operator commands)."""
    from aws_cdk import DefaultStackSynthesizer

    from callsaver_infra.app.names import CDK_DEFAULT_QUALIFIER

    assert CDK_DEFAULT_QUALIFIER == DefaultStackSynthesizer.DEFAULT_QUALIFIER
