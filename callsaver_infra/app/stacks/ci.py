"""Callsaver-CI: the GitHub OIDC provider and the roles the workflows assume (account-level, deployed once)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Environment, Stack, Tags
from constructs import Construct

from callsaver_infra.app.ci_config import CI_CONFIG_FILE, CiConfig, require_real_repository
from callsaver_infra.app.config import EnvironmentConfig, effective_qualifier
from callsaver_infra.app.constructs.github_oidc import DeployTarget, GitHubOidcRoles
from callsaver_infra.app.names import CI_STACK, HEALTHCHECK_PREFIX, CiNames, CiOutputs, EnvNames
from callsaver_infra.app.secret_catalog import SECRETS


def deploy_target(ci: CiConfig, config: EnvironmentConfig) -> DeployTarget:
    """What env's deploy role may do: assume its CDK bootstrap roles, check the agent image and run the post-deploy
    hook, nothing more."""
    names = EnvNames(config.name)
    return DeployTarget(
        env=config.name,
        role_name=CiNames.deploy_role(config.name),
        account=config.account,
        region=config.region,
        trusted_subject=ci.deploy_subject(config.name),
        bucket_name=config.storage.bucket_name,
        healthcheck_prefix=HEALTHCHECK_PREFIX,
        # `make deploy` reads every secret (`secrets status`) to stop before the agent while one is a placeholder;
        # push-egress reads the LiveKit key pair and the egress key.
        hook_secret_names=(*(names.secret(spec.ref) for spec in SECRETS), names.egress_credentials_secret),
        receipt_parameter=names.egress_push_receipt,
        image_repository=config.agent.image_repository,
        stack_names=names.stacks,
        qualifier=effective_qualifier(config),
    )


class CiStack(Stack):
    """Holds GitHubOidcRoles and publishes the role ARNs the repository's variables must hold."""

    def __init__(
        self, scope: Construct, *, ci: CiConfig, environments: Mapping[str, EnvironmentConfig], **kwargs: Any
    ) -> None:
        super().__init__(scope, CI_STACK, **kwargs)
        self.roles = GitHubOidcRoles(
            self,
            "GitHubOidc",
            account=ci.account,
            region=ci.region,
            create_provider=ci.create_oidc_provider,
            diff_role_name=CiNames.DIFF_ROLE,
            # Pull requests show their diff; the main branch's deploy workflow shows production's diff to the
            # approver before the approval.
            diff_subjects=[ci.pull_request_subject, ci.main_branch_subject],
            targets=[deploy_target(ci, environments[env]) for env in ci.deploy_environments],
        )
        CfnOutput(
            self,
            CiOutputs.PROVIDER_ARN,
            value=self.roles.provider.oidc_provider_arn,
            description="The account's GitHub OIDC provider",
        )
        CfnOutput(
            self,
            CiOutputs.DIFF_ROLE_ARN,
            value=self.roles.diff_role.role_arn,
            description=f"Repository variable {CiOutputs.DIFF_ROLE_VARIABLE}: cdk diff of pull requests",
        )
        for env, role in self.roles.deploy_roles.items():
            CfnOutput(
                self,
                CiOutputs.deploy_role_arn(env),
                value=role.role_arn,
                description=f"Repository variable {CiOutputs.deploy_role_variable(env)}: deploy of {env}",
            )


def add_ci_stack(app: Construct, ci: CiConfig, environments: Mapping[str, EnvironmentConfig]) -> CiStack:
    """Add the CI stack to app, with explicit account/region (synth looks nothing up) and termination protection:
    deleting it would cut every workflow off from AWS. Raises ConfigError while the repository is the placeholder."""
    require_real_repository(Path("config") / CI_CONFIG_FILE, ci)
    stack = CiStack(
        app,
        stack_name=CI_STACK,  # the same name at the top level and inside app.py's `ci` Stage
        ci=ci,
        environments=environments,
        env=Environment(account=ci.account, region=ci.region),
        termination_protection=True,
        description=f"CallSaver CI: GitHub OIDC roles of {ci.repository}",
    )
    Tags.of(stack).add("project", "callsaver")
    Tags.of(stack).add("environment", "ci")
    return stack
