"""GitHubOidcRoles: the roles GitHub Actions workflows assume through OIDC, so CI holds no long-lived AWS keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import DefaultStackSynthesizer, RemovalPolicy
from aws_cdk import aws_iam as iam
from constructs import Construct

from callsaver_infra.app.nag import NIST, acknowledge
from callsaver_infra.app.names import pascal_case
from callsaver_infra.app.regions import partition

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
GITHUB_OIDC_URL = f"https://{GITHUB_OIDC_HOST}"
# The audience aws-actions/configure-aws-credentials requests its token for.
GITHUB_OIDC_AUDIENCE = "sts.amazonaws.com"
# GitHub's published intermediate-CA thumbprints. IAM verifies GitHub's tokens against its own trusted CAs and ignores
# these, but the resource wants a list and keeping GitHub's values documents what a reviewer would compare against.
GITHUB_OIDC_THUMBPRINTS = (
    "6938fd4d98bab03faadb97b34396831e3780aea1",
    "1c58a3a8518e8759bf075b76b750d4f2df264fcd",
)


@dataclass(frozen=True)
class DeployTarget:
    """One environment's deploy role: who may assume it and exactly what the deploy and its post-deploy hook touch."""

    env: str
    role_name: str
    account: str
    region: str
    trusted_subject: str
    bucket_name: str
    healthcheck_prefix: str
    hook_secret_names: tuple[str, ...]
    stack_names: tuple[str, ...]
    receipt_parameter: str  # the SSM parameter push-egress records its pushes in
    image_repository: str
    qualifier: str = DefaultStackSynthesizer.DEFAULT_QUALIFIER  # of the CDK bootstrap the environment deploys through


def bootstrap_role_arn(
    template: str, *, account: str, region: str, qualifier: str = DefaultStackSynthesizer.DEFAULT_QUALIFIER
) -> str:
    """A CDK bootstrap role's ARN, filled in from the default synthesizer's own template, e.g.
    arn:aws:iam::<account>:role/cdk-hnb659fds-lookup-role-<account>-<region>. Using the synthesizer's templates keeps
    these ARNs identical to the ones `cdk deploy` and `cdk diff` assume (they are written into the cloud assembly)."""
    return (
        template.replace("${AWS::Partition}", partition(region))
        .replace("${AWS::AccountId}", account)
        .replace("${AWS::Region}", region)
        .replace("${Qualifier}", qualifier)
    )


def lookup_role_arn(*, account: str, region: str) -> str:
    """The CDK bootstrap lookup role (AWS ReadOnlyAccess minus KMS decryption): `cdk diff` reads templates with it."""
    return bootstrap_role_arn(DefaultStackSynthesizer.DEFAULT_LOOKUP_ROLE_ARN, account=account, region=region)


def deploy_role_arns(
    *, account: str, region: str, qualifier: str = DefaultStackSynthesizer.DEFAULT_QUALIFIER
) -> tuple[str, str]:
    """The CDK bootstrap deploy role and file-publishing role `cdk deploy` assumes (no image assets: no image role),
    of the bootstrap with this qualifier: an environment with its own bootstrap reaches only its own roles."""
    return (
        bootstrap_role_arn(
            DefaultStackSynthesizer.DEFAULT_DEPLOY_ROLE_ARN, account=account, region=region, qualifier=qualifier
        ),
        bootstrap_role_arn(
            DefaultStackSynthesizer.DEFAULT_FILE_ASSET_PUBLISHING_ROLE_ARN,
            account=account,
            region=region,
            qualifier=qualifier,
        ),
    )


def bootstrap_version_parameter_arn(
    *, account: str, region: str, qualifier: str = DefaultStackSynthesizer.DEFAULT_QUALIFIER
) -> str:
    """The SSM parameter holding the CDK bootstrap version, which the CLI reads before a template diff."""
    return f"arn:{partition(region)}:ssm:{region}:{account}:parameter/cdk-bootstrap/{qualifier}/version"


@dataclass(frozen=True)
class DeployedStack:
    """A stack `cdk diff` compares against: its name, where it is deployed and the bootstrap it deploys through."""

    name: str
    account: str
    region: str
    qualifier: str = DefaultStackSynthesizer.DEFAULT_QUALIFIER


def diff_statements(stacks: Sequence[DeployedStack]) -> list[dict[str, Any]]:
    """What `cdk diff --method=template` needs and nothing else: read the deployed templates of the given stacks
    and the bootstrap version. As IAM JSON, so the rehearsal's probe grants exactly what the diff role has."""
    stack_arns = sorted(
        {f"arn:{partition(s.region)}:cloudformation:{s.region}:{s.account}:stack/{s.name}/*" for s in stacks}
    )
    versions = sorted(
        {bootstrap_version_parameter_arn(account=s.account, region=s.region, qualifier=s.qualifier) for s in stacks}
    )
    return [
        {
            "Sid": "ReadDeployedTemplates",
            "Effect": "Allow",
            "Action": ["cloudformation:DescribeStacks", "cloudformation:GetTemplate"],
            "Resource": stack_arns,
        },
        {"Sid": "ReadBootstrapVersion", "Effect": "Allow", "Action": "ssm:GetParameter", "Resource": versions},
    ]


class GitHubOidcRoles(Construct):
    """The account's GitHub OIDC provider, a read-only diff role, and one deploy role per environment.

    Each role trusts only tokens for sts.amazonaws.com whose subject is one of the given repository subjects.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        account: str,
        region: str,
        create_provider: bool,
        diff_role_name: str,
        diff_subjects: Sequence[str],
        targets: Sequence[DeployTarget],
    ) -> None:
        super().__init__(scope, construct_id)
        if create_provider:
            # OidcProviderNative is the AWS::IAM::OIDCProvider resource itself; iam.OpenIdConnectProvider would
            # create it through a Lambda-backed custom resource, which this app never uses.
            native = iam.OidcProviderNative(
                self,
                "Provider",
                url=GITHUB_OIDC_URL,
                client_ids=[GITHUB_OIDC_AUDIENCE],
                thumbprints=list(GITHUB_OIDC_THUMBPRINTS),
                # One provider per URL per account, possibly trusted by other roles: never delete it with the stack.
                removal_policy=RemovalPolicy.RETAIN,
            )
            self.provider: iam.IOidcProvider = native
        else:
            self.provider = iam.OidcProviderNative.from_oidc_provider_arn(
                self, "Provider", f"arn:{partition(region)}:iam::{account}:oidc-provider/{GITHUB_OIDC_HOST}"
            )

        # Pull requests run unreviewed code with this role: it reads the deployed templates of the environments'
        # stacks and the bootstrap version, nothing else. No CDK lookup role (ReadOnlyAccess: every bucket listing,
        # every log group), no change sets (they need the deploy role, which can change the stacks).
        deployed = [DeployedStack(name, t.account, t.region, t.qualifier) for t in targets for name in t.stack_names]
        statements = [iam.PolicyStatement.from_json(statement) for statement in diff_statements(deployed)]
        self.diff_role = iam.Role(
            self,
            "DiffRole",
            role_name=diff_role_name,
            description="GitHub Actions: cdk diff --method=template of pull requests (reads deployed templates only)",
            assumed_by=self._principal(diff_subjects),
            inline_policies={"ReadDeployedTemplates": iam.PolicyDocument(statements=statements)},
        )
        for statement in statements:
            for resource in statement.resources:
                if resource.endswith("/*"):
                    acknowledge(
                        self.diff_role,
                        "IAM5",
                        "A stack ARN ends in the stack's random id, assigned at creation, so each of the "
                        "environments' stacks is named exactly and only its id is a wildcard; the actions only read "
                        "the stack's description and template.",
                        finding=f"Resource::{resource}",
                    )

        self.deploy_roles: Mapping[str, iam.Role] = {target.env: self._deploy_role(target) for target in targets}
        for role in (self.diff_role, *self.deploy_roles.values()):
            acknowledge(
                role,
                "IAMNoInlinePolicy",
                "Each CI role's rights are written into the role itself, so they are reviewed, created and deleted "
                "with it and can never be attached to another identity; every statement names its resources.",
                pack=NIST,
            )

    def _principal(self, subjects: Sequence[str]) -> iam.WebIdentityPrincipal:
        return iam.WebIdentityPrincipal(
            self.provider.oidc_provider_arn,
            conditions={
                "StringEquals": {
                    f"{GITHUB_OIDC_HOST}:aud": GITHUB_OIDC_AUDIENCE,
                    f"{GITHUB_OIDC_HOST}:sub": list(subjects),
                }
            },
        )

    def _deploy_role(self, target: DeployTarget) -> iam.Role:
        arn_partition = partition(target.region)
        secrets_prefix = f"arn:{arn_partition}:secretsmanager:{target.region}:{target.account}:secret:"
        healthcheck_objects = f"arn:{arn_partition}:s3:::{target.bucket_name}/{target.healthcheck_prefix}*"
        env_id = pascal_case(target.env)
        role = iam.Role(
            self,
            f"DeployRole{env_id}",
            role_name=target.role_name,
            description=f"GitHub Actions: cdk deploy of {target.env} and its post-deploy hook (push-egress)",
            assumed_by=self._principal([target.trusted_subject]),
            inline_policies={
                "CdkDeploy": iam.PolicyDocument(
                    statements=[
                        # Everything CloudFormation does runs as the bootstrap roles; this role only assumes them,
                        # those of its environment's own bootstrap (qualifier), which deploy no other environment.
                        iam.PolicyStatement(
                            sid="AssumeCdkDeployRoles",
                            actions=["sts:AssumeRole"],
                            resources=list(
                                deploy_role_arns(
                                    account=target.account, region=target.region, qualifier=target.qualifier
                                )
                            ),
                        )
                    ]
                ),
                # The pre-deploy check (callsaver-infra check-image) looks the agent image up by tag.
                "PreDeployImageCheck": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            sid="DescribeAgentImages",
                            actions=["ecr:DescribeImages"],
                            resources=[
                                f"arn:{arn_partition}:ecr:{target.region}:{target.account}:repository/"
                                f"{target.image_repository}"
                            ],
                        )
                    ]
                ),
                "PostDeployHook": iam.PolicyDocument(
                    statements=[
                        # make deploy checks that every secret is set (the value tells a placeholder), push-egress
                        # reads the LiveKit key pair and the egress key. Secret ARNs end in "-" and 6 random
                        # characters: "-??????" matches exactly those names.
                        iam.PolicyStatement(
                            sid="ReadHookSecrets",
                            actions=["secretsmanager:GetSecretValue"],
                            resources=[f"{secrets_prefix}{name}-??????" for name in target.hook_secret_names],
                        ),
                        # push-egress records which key it wrote into each rule (LiveKit may mask the key id).
                        iam.PolicyStatement(
                            sid="PushReceipt",
                            actions=["ssm:GetParameter", "ssm:PutParameter"],
                            resources=[
                                f"arn:{arn_partition}:ssm:{target.region}:{target.account}:parameter"
                                f"{target.receipt_parameter}"
                            ],
                        ),
                        # push-egress --verify checks its test recording with HeadObject, which needs s3:GetObject.
                        iam.PolicyStatement(
                            sid="VerifyHealthcheckRecording",
                            actions=["s3:GetObject"],
                            resources=[healthcheck_objects],
                        ),
                    ]
                ),
            },
        )
        acknowledge(
            role,
            "IAM5",
            "push-egress --verify names its test recording at run time (_healthcheck/<time>.ogg), so the read grant "
            "covers the healthcheck prefix of this environment's bucket only, never the recordings of calls.",
            finding=f"Resource::{healthcheck_objects}",
        )
        return role
