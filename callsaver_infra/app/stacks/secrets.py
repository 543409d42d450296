"""Callsaver-Secrets-{env}: the backend and agent secret namespaces."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.constructs.secret_namespace import SecretNamespace
from callsaver_infra.app.names import CiNames, EnvNames, iam_arn


def secret_readers(config: EnvironmentConfig) -> list[str]:
    """Role ARNs that may read env's secrets: the agent's execution role (ECS injects the secrets at task start),
    the CI deploy role (`make deploy` checks every secret for placeholders before the agent, the post-deploy hook
    reads the LiveKit key pair and the egress key) and the break-glass role.
    Names, not references: the roles live in other stacks and no export may lock the stacks together."""

    def role(name: str) -> str:
        return iam_arn(region=config.region, account=config.account, kind="role", name=name)

    names = EnvNames(config.name)
    readers = [role(names.agent_execution_role), role(CiNames.deploy_role(config.name))]
    if config.security.break_glass_role_arn:
        readers.append(config.security.break_glass_role_arn)
    return readers


class SecretsStack(Stack):
    """Holds callsaver/{env}/backend/ and callsaver/{env}/agent/ as two SecretNamespaces."""

    def __init__(self, scope: Construct, *, config: EnvironmentConfig, **kwargs: Any) -> None:
        super().__init__(scope, EnvNames(config.name).secrets_stack, **kwargs)
        readers = secret_readers(config)
        self.backend = SecretNamespace(self, "BackendSecrets", config=config, namespace="backend", readers=readers)
        self.agent = SecretNamespace(self, "AgentSecrets", config=config, namespace="agent", readers=readers)
