"""A CDK bootstrap per environment, so one environment's deploy path cannot change another's stacks or resources.

The template is the pinned CDK CLI's own bootstrap template (node_modules/aws-cdk), patched here: the
CloudFormation execution role gets a policy allowing only this environment's resources (by name, and by the
`environment` tag where AWS generates the name) instead of AdministratorAccess; every IAM role or user it creates must
carry this environment's permissions boundary; and the deploy role's CloudFormation actions name only this
environment's stacks. `callsaver-infra bootstrap --env E` writes it and runs (or, with --dry-run, prints) the
`cdk bootstrap` that deploys it as the toolkit stack CDKToolkit-E.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from callsaver_infra.app.config import ConfigError, EnvironmentConfig
from callsaver_infra.app.names import EnvNames
from callsaver_infra.app.regions import partition

# Where `npm ci` puts the pinned CLI's template; the CLI's `cdk bootstrap` deploys this same file by default.
CLI_TEMPLATE = Path("node_modules/aws-cdk/lib/api/bootstrap/bootstrap-template.yaml")
ENVIRONMENT_TAG = "environment"

# Resource types the environment's stacks may hold: each maps to what the execution policy grants for it (tests
# fail when a synthesized template holds a type missing here, so a new kind of resource is a deliberate change).
COVERED_RESOURCE_TYPES = (
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::CloudTrail::Trail",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::Dashboard",
    "AWS::EC2::InternetGateway",
    "AWS::EC2::Route",
    "AWS::EC2::RouteTable",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::Subnet",
    "AWS::EC2::SubnetRouteTableAssociation",
    "AWS::EC2::VPC",
    "AWS::EC2::VPCGatewayAttachment",
    "AWS::ECS::Cluster",
    "AWS::ECS::Service",
    "AWS::ECS::TaskDefinition",
    "AWS::Events::Rule",
    "AWS::IAM::AccessKey",
    "AWS::IAM::ManagedPolicy",
    "AWS::IAM::Policy",
    "AWS::IAM::Role",
    "AWS::IAM::User",
    "AWS::KMS::Alias",
    "AWS::KMS::Key",
    "AWS::Logs::LogGroup",
    "AWS::S3::Bucket",
    "AWS::S3::BucketPolicy",
    "AWS::SNS::Topic",
    "AWS::SNS::TopicPolicy",
    "AWS::SecretsManager::ResourcePolicy",
    "AWS::SecretsManager::Secret",
)

# EC2 resources the Agent stack's VPC creates, with the action creating each: allowed only when the request tags
# the new resource with this environment (tag on create), so every later action can require that tag.
EC2_CREATED = {
    "vpc": "ec2:CreateVpc",
    "subnet": "ec2:CreateSubnet",
    "route-table": "ec2:CreateRouteTable",
    "internet-gateway": "ec2:CreateInternetGateway",
    "security-group": "ec2:CreateSecurityGroup",
}
# Service-linked roles the stacks' services create on first use in an account.
SERVICE_LINKED_ROLES = ("ecs.amazonaws.com", "ecs.application-autoscaling.amazonaws.com")


def qualifier_of(config: EnvironmentConfig) -> str:
    """The environment's own bootstrap qualifier; ConfigError when it has none (it uses the account's default)."""
    if config.bootstrap.qualifier is None:
        raise ConfigError(
            f"config/{config.name}.toml: key 'bootstrap.qualifier' is not set, so {config.name} deploys through the "
            'account\'s default CDK bootstrap; add [bootstrap] qualifier = "<1-10 of a-z 0-9>" to give it its own'
        )
    return config.bootstrap.qualifier


def toolkit_stack_name(config: EnvironmentConfig) -> str:
    """The environment's bootstrap stack: CDKToolkit-staging."""
    return f"CDKToolkit-{config.name}"


def permissions_boundary_name(config: EnvironmentConfig) -> str:
    """The managed policy every IAM role and user of the environment carries as its permissions boundary (the name
    CDK's own template gives its example boundary)."""
    return f"cdk-{qualifier_of(config)}-permissions-boundary-{config.account}-{config.region}"


def permissions_boundary_arn(config: EnvironmentConfig) -> str:
    return f"arn:{partition(config.region)}:iam::{config.account}:policy/{permissions_boundary_name(config)}"


def bootstrap_role_name(config: EnvironmentConfig, role: str) -> str:
    """A bootstrap role's name as the template names it: role is deploy, file-publishing, cfn-exec, lookup, ..."""
    return f"cdk-{qualifier_of(config)}-{role}-role-{config.account}-{config.region}"


class _Arns:
    """The ARNs of one environment's resources, from config and names.py (what the stacks name them)."""

    def __init__(self, config: EnvironmentConfig) -> None:
        self.config = config
        self.names = EnvNames(config.name)
        self.p = partition(config.region)
        self.r = config.region
        self.a = config.account

    def arn(self, service: str, resource: str, *, region: bool = True) -> str:
        return f"arn:{self.p}:{service}:{self.r if region else ''}:{self.a}:{resource}"

    def stacks(self) -> list[str]:
        return [self.arn("cloudformation", f"stack/{name}/*") for name in self.names.stacks]

    def buckets(self) -> list[str]:
        names = (self.config.storage.bucket_name, f"{self.names.recording_reads_trail}-{self.a}")
        return [f"arn:{self.p}:s3:::{n}{suffix}" for n in names for suffix in ("", "/*")]

    def roles(self) -> list[str]:
        # Named roles, and the ones CloudFormation names <stack name>-<logical id>-<random> (e.g. the task role).
        named = (self.names.agent_execution_role, self.names.recording_reader)
        generated = [f"{stack}-*" for stack in self.names.stacks]
        return [f"arn:{self.p}:iam::{self.a}:role/{n}" for n in (*named, *generated)]

    def users(self) -> list[str]:
        return [f"arn:{self.p}:iam::{self.a}:user/{self.names.egress_user}"]

    def managed_policies(self) -> list[str]:
        return [f"arn:{self.p}:iam::{self.a}:policy/{self.names.recording_reader}"]


def environment_statements(config: EnvironmentConfig) -> list[dict[str, Any]]:
    """Every action on this environment's resources, named exactly or tagged environment=<env>; nothing on IAM
    (which needs the permissions-boundary conditions of execution_policy). Shared by the execution role and the
    permissions boundary, so the environment's identities can never reach further than its deploys."""
    x = _Arns(config)
    n = x.names
    env = config.name
    tagged = {"StringEquals": {f"aws:ResourceTag/{ENVIRONMENT_TAG}": env}}
    return [
        {"Sid": "SessionBuckets", "Effect": "Allow", "Action": "s3:*", "Resource": x.buckets()},
        {
            "Sid": "Secrets",
            "Effect": "Allow",
            "Action": "secretsmanager:*",
            "Resource": x.arn("secretsmanager", f"secret:callsaver/{env}/*"),
        },
        {
            "Sid": "LogGroup",
            "Effect": "Allow",
            "Action": "logs:*",
            "Resource": [
                x.arn("logs", f"log-group:{n.agent_log_group}"),
                x.arn("logs", f"log-group:{n.agent_log_group}:*"),
            ],
        },
        {
            "Sid": "AgentService",
            "Effect": "Allow",
            "Action": "ecs:*",
            "Resource": [
                x.arn("ecs", f"cluster/{n.agent_cluster}"),
                x.arn("ecs", f"service/{n.agent_cluster}/*"),
                x.arn("ecs", f"task/{n.agent_cluster}/*"),
            ],
        },
        {"Sid": "AlertTopic", "Effect": "Allow", "Action": "sns:*", "Resource": x.arn("sns", n.alert_topic)},
        {
            "Sid": "Alarms",
            "Effect": "Allow",
            "Action": "cloudwatch:*",
            "Resource": [
                *(x.arn("cloudwatch", f"alarm:{alarm}") for alarm in n.alarms),
                x.arn("cloudwatch", f"dashboard/{n.dashboard}", region=False),
            ],
        },
        {
            "Sid": "DeployFailureRule",
            "Effect": "Allow",
            "Action": "events:*",
            "Resource": x.arn("events", f"rule/{n.deploy_failed_rule}"),
        },
        {
            "Sid": "ReadAuditTrail",
            "Effect": "Allow",
            "Action": "cloudtrail:*",
            "Resource": x.arn("cloudtrail", f"trail/{n.recording_reads_trail}"),
        },
        # KMS key ids are random: the environment's keys are the ones tagged with it.
        {
            "Sid": "TaggedKeys",
            "Effect": "Allow",
            "Action": "kms:*",
            "Resource": x.arn("kms", "key/*"),
            "Condition": tagged,
        },
        {
            "Sid": "KeyAliases",
            "Effect": "Allow",
            "Action": ["kms:CreateAlias", "kms:DeleteAlias", "kms:UpdateAlias"],
            "Resource": [x.arn("kms", n.session_key_alias), x.arn("kms", n.alert_key_alias)],
        },
        # VPC parts have random ids too: any action on the ones tagged with this environment.
        {"Sid": "TaggedNetwork", "Effect": "Allow", "Action": "ec2:*", "Resource": "*", "Condition": tagged},
    ]


def execution_policy(config: EnvironmentConfig) -> dict[str, Any]:
    """The CloudFormation execution role's policy: this environment's resources only, not AdministratorAccess."""
    x = _Arns(config)
    env = config.name
    boundary = {"StringEquals": {"iam:PermissionsBoundary": permissions_boundary_arn(config)}}
    request_tagged = {"StringEquals": {f"aws:RequestTag/{ENVIRONMENT_TAG}": env}}
    statements = [
        *environment_statements(config),
        # Creating a key or a VPC part names no existing resource: allowed when the request tags it with this
        # environment, which every later action on it then requires (TaggedKeys, TaggedNetwork).
        {
            "Sid": "CreateTaggedKeys",
            "Effect": "Allow",
            "Action": "kms:CreateKey",
            "Resource": "*",
            "Condition": request_tagged,
        },
        *(
            {
                "Sid": f"Create{kind.title().replace('-', '')}Tagged",
                "Effect": "Allow",
                "Action": action,
                "Resource": f"arn:{x.p}:ec2:{x.r}:{x.a}:{kind}/*",
                "Condition": request_tagged,
            }
            for kind, action in EC2_CREATED.items()
        ),
        {
            "Sid": "TagOnCreate",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"ec2:CreateAction": sorted(EC2_CREATED.values()), **request_tagged["StringEquals"]}
            },
        },
        # A security group's rules are resources of their own, created with the (tagged) group they belong to.
        {
            "Sid": "SecurityGroupRules",
            "Effect": "Allow",
            "Action": ["ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupEgress"],
            "Resource": f"arn:{x.p}:ec2:{x.r}:{x.a}:security-group-rule/*",
        },
        # IAM: this environment's roles, users and policies by name, each role and user only with the
        # environment's permissions boundary, so nothing the stacks create can act beyond the environment.
        {
            "Sid": "RolesAndUsersWithBoundary",
            "Effect": "Allow",
            "Action": [
                "iam:CreateRole",
                "iam:CreateUser",
                "iam:PutRolePolicy",
                "iam:PutUserPolicy",
                "iam:AttachRolePolicy",
                "iam:AttachUserPolicy",
                "iam:DetachRolePolicy",
                "iam:DetachUserPolicy",
                "iam:DeleteRolePolicy",
                "iam:DeleteUserPolicy",
                "iam:PutRolePermissionsBoundary",
                "iam:PutUserPermissionsBoundary",
            ],
            "Resource": [*x.roles(), *x.users()],
            "Condition": boundary,
        },  # fmt: skip
        {
            "Sid": "RolesAndUsers",
            "Effect": "Allow",
            "Action": [
                "iam:GetRole",
                "iam:GetRolePolicy",
                "iam:ListRolePolicies",
                "iam:ListAttachedRolePolicies",
                "iam:DeleteRole",
                "iam:TagRole",
                "iam:UntagRole",
                "iam:UpdateRole",
                "iam:UpdateRoleDescription",
                "iam:UpdateAssumeRolePolicy",
                "iam:PassRole",
                "iam:GetUser",
                "iam:GetUserPolicy",
                "iam:ListUserPolicies",
                "iam:ListAttachedUserPolicies",
                "iam:DeleteUser",
                "iam:TagUser",
                "iam:UntagUser",
                "iam:CreateAccessKey",
                "iam:DeleteAccessKey",
                "iam:UpdateAccessKey",
                "iam:ListAccessKeys",
            ],
            "Resource": [*x.roles(), *x.users()],
        },  # fmt: skip
        {
            "Sid": "ManagedPolicies",
            "Effect": "Allow",
            "Action": [
                "iam:CreatePolicy",
                "iam:CreatePolicyVersion",
                "iam:DeletePolicy",
                "iam:DeletePolicyVersion",
                "iam:GetPolicy",
                "iam:GetPolicyVersion",
                "iam:ListPolicyVersions",
                "iam:TagPolicy",
                "iam:UntagPolicy",
            ],
            "Resource": x.managed_policies(),
        },  # fmt: skip
        {
            "Sid": "ServiceLinkedRoles",
            "Effect": "Allow",
            "Action": "iam:CreateServiceLinkedRole",
            "Resource": "*",
            "Condition": {"StringEquals": {"iam:AWSServiceName": list(SERVICE_LINKED_ROLES)}},
        },
        # Actions AWS authorizes on no resource (task definitions and scalable targets get random ids). A task
        # definition only runs inside a service of this environment's cluster; Application Auto Scaling
        # registers a target only for a caller that may ecs:UpdateService it (AgentService).
        {
            "Sid": "NoResourceLevelActions",
            "Effect": "Allow",
            "Action": [
                "ecs:RegisterTaskDefinition",
                "ecs:DeregisterTaskDefinition",
                "ecs:DescribeTaskDefinition",
                "application-autoscaling:*",
                "ec2:Describe*",
                "logs:DescribeLogGroups",
                "kms:ListAliases",
                "kms:ListKeys",
                "cloudwatch:DescribeAlarms",
                "events:DescribeRule",
                "sns:ListTopics",
                "secretsmanager:ListSecrets",
                "cloudtrail:DescribeTrails",
                "sts:GetCallerIdentity",
            ],
            "Resource": "*",
        },  # fmt: skip
        {
            "Sid": "TagTaskDefinitions",
            "Effect": "Allow",
            "Action": "ecs:TagResource",
            "Resource": x.arn("ecs", "task-definition/*"),
        },
        {
            "Sid": "ReadBootstrapVersion",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter", "ssm:GetParameters"],
            "Resource": x.arn("ssm", f"parameter/cdk-bootstrap/{qualifier_of(config)}/version"),
        },
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def boundary_policy(config: EnvironmentConfig) -> dict[str, Any]:
    """The permissions boundary of the environment's roles and users: this environment's resources, pulling the
    agent image, nothing on IAM; and, as in CDK's example boundary, it can be neither edited nor removed."""
    x = _Arns(config)
    boundary = permissions_boundary_arn(config)
    return {
        "Version": "2012-10-17",
        "Statement": [
            *environment_statements(config),
            {
                "Sid": "PullAgentImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:GetAuthorizationToken",
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                ],
                "Resource": "*",
            },
            {"Sid": "WhoAmI", "Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"},
            {
                "Sid": "DenyPermBoundaryIAMPolicyAlteration",
                "Effect": "Deny",
                "Action": [
                    "iam:CreatePolicyVersion",
                    "iam:DeletePolicy",
                    "iam:DeletePolicyVersion",
                    "iam:SetDefaultPolicyVersion",
                ],
                "Resource": boundary,
            },
            {
                "Sid": "DenyRemovalOfPermBoundaryFromAnyUserOrRole",
                "Effect": "Deny",
                "Action": ["iam:DeleteUserPermissionsBoundary", "iam:DeleteRolePermissionsBoundary"],
                "Resource": [f"arn:{x.p}:iam::{x.a}:role/*", f"arn:{x.p}:iam::{x.a}:user/*"],
            },
        ],
    }


def deploy_stack_resources(config: EnvironmentConfig) -> list[str]:
    """The stacks the bootstrap deploy role may create, change or delete: the environment's own."""
    return _Arns(config).stacks()


def load_cli_template(path: Path = CLI_TEMPLATE) -> dict[str, Any]:
    """The pinned CDK CLI's bootstrap template (YAML, long-form intrinsics only)."""
    import yaml  # type: ignore[import-untyped]

    try:
        template: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run `make setup` (installs the pinned CDK CLI) first") from None
    return template


def bootstrap_template(config: EnvironmentConfig, cli_template: dict[str, Any]) -> dict[str, Any]:
    """The CLI's template for this environment: scoped execution role, boundary, deploy role on its stacks only."""
    template = copy.deepcopy(cli_template)
    resources = template["Resources"]
    qualifier = qualifier_of(config)
    template["Description"] = (
        f"CDK bootstrap of CallSaver's {config.name} environment (qualifier {qualifier}): deploys only its stacks "
        "and resources. Generated by `callsaver-infra bootstrap` from the CDK CLI's template."
    )
    template["Parameters"]["Qualifier"]["Default"] = qualifier
    template["Parameters"]["Qualifier"]["AllowedPattern"] = qualifier  # another qualifier would mismatch the policies

    execution = resources["CloudFormationExecutionRole"]["Properties"]
    if "AdministratorAccess" not in json.dumps(execution["ManagedPolicyArns"]):
        raise ConfigError(f"{CLI_TEMPLATE}: CloudFormationExecutionRole no longer defaults to AdministratorAccess; "
                          "review callsaver_infra/bootstrap.py against the new CLI template")  # fmt: skip
    del execution["ManagedPolicyArns"]
    # Only the managed policies and the example boundary used these; cfn-lint flags unused conditions.
    for unused in ("HasCloudFormationExecutionPolicies", "ShouldCreatePermissionsBoundary"):
        del template["Conditions"][unused]
    execution["Policies"] = [
        {"PolicyName": f"callsaver-{config.name}-only", "PolicyDocument": execution_policy(config)}
    ]

    boundary = resources["CdkBoostrapPermissionsBoundaryPolicy"]
    del boundary["Condition"]  # always created: every role and user of the environment carries it
    boundary["Properties"]["PolicyDocument"] = boundary_policy(config)
    boundary["Properties"]["Description"] = f"Permissions boundary of CallSaver {config.name}'s roles and users"

    deploy_policy = resources["DeploymentActionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    statements = {s.get("Sid"): s for s in deploy_policy["Statement"]}
    stacks = deploy_stack_resources(config)
    statements["DeployPermissions"]["Resource"] = stacks
    cli = statements["CliPermissions"]
    cli["Action"] = [a for a in cli["Action"] if a != "sts:GetCallerIdentity"]
    cli["Resource"] = stacks
    deploy_policy["Statement"] = [s for s in deploy_policy["Statement"] if s.get("Sid") != "Refactor"]
    deploy_policy["Statement"].append(
        {"Sid": "WhoAmI", "Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}
    )
    return template
