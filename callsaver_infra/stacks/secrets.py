"""Callsaver-Secrets-{env}: the backend and agent secret namespaces."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct

from callsaver_infra.config import EnvironmentConfig
from callsaver_infra.constructs.secret_namespace import SecretNamespace
from callsaver_infra.names import EnvNames


class SecretsStack(Stack):
    """Holds callsaver/{env}/backend/ and callsaver/{env}/agent/ as two SecretNamespaces."""

    def __init__(self, scope: Construct, *, config: EnvironmentConfig, **kwargs: Any) -> None:
        super().__init__(scope, EnvNames(config.name).secrets_stack, **kwargs)
        self.backend = SecretNamespace(self, "BackendSecrets", config=config, namespace="backend")
        self.agent = SecretNamespace(self, "AgentSecrets", config=config, namespace="agent")
