"""Callsaver-Registry: the agent image's ECR repository (account-level, deployed once per account and region)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Environment, Stack, Tags
from constructs import Construct

from callsaver_infra.app.constructs.agent_image_repository import AgentImageRepository
from callsaver_infra.app.names import REGISTRY_PUSH_ROLE, REGISTRY_STACK, RegistryOutputs
from callsaver_infra.app.registry_config import RegistryConfig


class RegistryStack(Stack):
    """Holds AgentImageRepository and publishes the repository's name and URI (and the push role, if created)."""

    def __init__(self, scope: Construct, *, registry: RegistryConfig, **kwargs: Any) -> None:
        super().__init__(scope, REGISTRY_STACK, **kwargs)
        self.agent_images = AgentImageRepository(
            self,
            "AgentImages",
            repository_name=registry.repository_name,
            keep_tagged_images=registry.keep_tagged_images,
            account=registry.account,
            region=registry.region,
            push_role_arn=registry.push_role_arn,
            push_github_subject=registry.push_github_subject,
            push_role_name=REGISTRY_PUSH_ROLE,
        )
        repository = self.agent_images.repository
        CfnOutput(self, RegistryOutputs.REPOSITORY_NAME, value=repository.repository_name, description="Agent images")
        CfnOutput(
            self,
            RegistryOutputs.REPOSITORY_URI,
            value=repository.repository_uri,
            description="Where the agent repository's CI pushes images (docker push <uri>:<tag>)",
        )
        if self.agent_images.push_role is not None:
            CfnOutput(
                self,
                RegistryOutputs.PUSH_ROLE_ARN,
                value=self.agent_images.push_role.role_arn,
                description="The role the agent repository's CI assumes (GitHub OIDC) to push images",
            )


def add_registry_stack(app: Construct, registry: RegistryConfig) -> RegistryStack:
    """Add the registry stack to app, with explicit account/region (synth looks nothing up) and termination
    protection: deleting it would strand every environment's image."""
    stack = RegistryStack(
        app,
        stack_name=REGISTRY_STACK,  # the same name at the top level and inside app.py's `registry` Stage
        registry=registry,
        env=Environment(account=registry.account, region=registry.region),
        termination_protection=True,
        description=f"CallSaver registry: the agent image repository {registry.repository_name}",
    )
    Tags.of(stack).add("project", "callsaver")
    Tags.of(stack).add("environment", "registry")
    return stack
