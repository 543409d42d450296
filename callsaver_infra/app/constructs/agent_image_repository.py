"""AgentImageRepository: the ECR repository of the agent image, pushed to by exactly one identity."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from constructs import Construct

from callsaver_infra.app.constructs.github_oidc import GITHUB_OIDC_AUDIENCE, GITHUB_OIDC_HOST
from callsaver_infra.app.nag import NIST, acknowledge
from callsaver_infra.app.regions import partition

# What `docker push` (and buildx, crane) call on a repository: check and upload layers, then put the manifest.
# BatchGetImage/GetDownloadUrlForLayer are pull actions, granted to the pusher too because pushes of multi-arch
# images and cache-from builds read existing manifests and layers.
PUSH_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
)
# Untagged images are the leftovers of a push that re-tagged nothing (immutable tags): gone after a day.
UNTAGGED_EXPIRY_DAYS = 1


class AgentImageRepository(Construct):
    """Immutable tags, scan on push, AES-256 encryption, a lifecycle, RETAIN; `pusher` is the only identity with
    push rights (a given role ARN through the repository policy, or a role this construct creates for a GitHub
    OIDC subject)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repository_name: str,
        keep_tagged_images: int,
        account: str,
        region: str,
        push_role_arn: str | None,
        push_github_subject: str | None,
        push_role_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.repository = ecr.Repository(
            self,
            "Repository",
            repository_name=repository_name,
            # A tag names one image for good: the tag in config/<env>.toml always deploys the same image.
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            image_scan_on_push=True,
            encryption=ecr.RepositoryEncryption.AES_256,
            # The running agent's image lives here: no `cdk destroy` or stack replacement may delete it.
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    rule_priority=1,
                    description=f"Expire untagged images after {UNTAGGED_EXPIRY_DAYS} day",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_age=Duration.days(UNTAGGED_EXPIRY_DAYS),
                ),
                ecr.LifecycleRule(
                    rule_priority=2,
                    description=f"Keep the {keep_tagged_images} most recent tagged images",
                    tag_status=ecr.TagStatus.TAGGED,
                    tag_pattern_list=["*"],
                    max_image_count=keep_tagged_images,
                ),
            ],
        )
        # CDK leaves the AES-256 default out of the template; written out, the encryption is pinned and visible.
        # (EncryptionConfiguration is create-only: `cdk import` must find the existing repository on AES-256.)
        cfn_repository = self.repository.node.default_child
        assert isinstance(cfn_repository, ecr.CfnRepository)
        cfn_repository.encryption_configuration = ecr.CfnRepository.EncryptionConfigurationProperty(
            encryption_type="AES256"
        )
        self.push_role: iam.Role | None = None
        if push_role_arn is not None:
            # A role of the agent repository's CI (possibly in another account): the repository policy is what
            # lets it push; its own account must also allow the actions in the role's identity policy.
            self.pusher_arn = push_role_arn
            self.repository.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="PushFromAgentCi",
                    principals=[iam.ArnPrincipal(push_role_arn)],
                    actions=list(PUSH_ACTIONS),
                )
            )
        else:
            assert push_github_subject is not None
            provider_arn = f"arn:{partition(region)}:iam::{account}:oidc-provider/{GITHUB_OIDC_HOST}"
            self.push_role = iam.Role(
                self,
                "PushRole",
                role_name=push_role_name,
                description=f"GitHub Actions: push agent images to {repository_name} ({push_github_subject})",
                assumed_by=iam.WebIdentityPrincipal(
                    provider_arn,
                    conditions={
                        "StringEquals": {
                            f"{GITHUB_OIDC_HOST}:aud": GITHUB_OIDC_AUDIENCE,
                            f"{GITHUB_OIDC_HOST}:sub": push_github_subject,
                        }
                    },
                ),
                inline_policies={
                    "PushAgentImages": iam.PolicyDocument(
                        statements=[
                            iam.PolicyStatement(
                                sid="PushAgentImages",
                                actions=list(PUSH_ACTIONS),
                                resources=[self.repository.repository_arn],
                            ),
                            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
                        ]
                    )
                },
            )
            self.pusher_arn = self.push_role.role_arn
            acknowledge(
                self.push_role,
                "IAM5",
                'ecr:GetAuthorizationToken has no resource-level permissions (AWS requires Resource "*"); it only '
                "issues a registry login token, and what the token may push is limited to the agent's repository.",
                finding="Resource::*",
            )
            acknowledge(
                self.push_role,
                "IAMNoInlinePolicy",
                "The push role's only rights are written into the role itself: created, reviewed and deleted with "
                "it, never attachable to another identity; they name the agent repository (plus the registry login, "
                "which has no resource).",
                pack=NIST,
            )
