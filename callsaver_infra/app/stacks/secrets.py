"""Callsaver-Secrets-{env}: the backend and agent secret namespaces."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Stack
from constructs import Construct

from callsaver_infra.app.config import SecurityConfig
from callsaver_infra.app.constructs.secret_namespace import SecretNamespace
from callsaver_infra.app.names import CiNames, EnvNames, iam_arn


def secret_readers(names: EnvNames, *, account: str, region: str, security: SecurityConfig) -> list[str]:
    """Role ARNs that may read env's secrets: the agent's execution role (ECS injects the secrets at task start),
    the CI deploy role (`make deploy` checks every secret for placeholders before the agent, the post-deploy hook
    reads the LiveKit key pair and the egress key) and the break-glass role.
    Names, not references: the roles live in other stacks and no export may lock the stacks together."""

    def role(name: str) -> str:
        return iam_arn(region=region, account=account, kind="role", name=name)

    readers = [role(names.agent_execution_role), role(CiNames.deploy_role(names.env))]
    if security.break_glass_role_arn:
        readers.append(security.break_glass_role_arn)
    return readers


class SecretsStack(Stack):
    """Holds callsaver/{env}/backend/ and callsaver/{env}/agent/ as two SecretNamespaces."""

    def __init__(
        self,
        scope: Construct,
        *,
        names: EnvNames,
        config_values: Mapping[str, str],
        readers: Sequence[str],
        **kwargs: Any,
    ) -> None:
        """config_values: the config-owned secrets' values by key (secret_catalog's from_config)."""
        super().__init__(scope, names.secrets_stack, **kwargs)
        self.backend, self.agent = (
            SecretNamespace(
                self, construct_id, names=names, namespace=namespace, config_values=config_values, readers=readers
            )
            for construct_id, namespace in (("BackendSecrets", "backend"), ("AgentSecrets", "agent"))
        )
