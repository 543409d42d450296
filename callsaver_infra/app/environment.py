"""Builds the stacks of each environment into an app: the one composition used by app.py, tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import DefaultStackSynthesizer, Environment, Stack, Tags, aws_iam
from constructs import Construct

from callsaver_infra.app import bootstrap
from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EnvNames
from callsaver_infra.app.secret_catalog import SECRETS
from callsaver_infra.app.stacks.agent import AgentStack
from callsaver_infra.app.stacks.iam import IamStack
from callsaver_infra.app.stacks.monitoring import MonitoringStack
from callsaver_infra.app.stacks.secrets import SecretsStack, secret_readers
from callsaver_infra.app.stacks.storage import StorageStack


@dataclass(frozen=True)
class EnvironmentStacks:
    """The stacks of one environment."""

    storage: StorageStack
    iam: IamStack
    secrets: SecretsStack
    agent: AgentStack
    monitoring: MonitoringStack

    def all(self) -> tuple[Stack, ...]:
        return (self.storage, self.iam, self.secrets, self.agent, self.monitoring)


def add_environment(scope: Construct, config: EnvironmentConfig) -> EnvironmentStacks:
    """Add one environment's stacks to scope (the app, or the environment's Stage), with explicit account/region so
    synth never looks anything up. Stack names are explicit, so they are the same at the top level and in a Stage.
    Each stack gets the config sections and names it uses, never the whole EnvironmentConfig."""
    app = scope
    names = EnvNames(config.name)
    common: dict[str, Any] = {
        "env": Environment(account=config.account, region=config.region),
        "termination_protection": config.termination_protection,
    }
    readers = secret_readers(names, account=config.account, region=config.region, security=config.security)
    if config.bootstrap.qualifier:
        # The environment's own bootstrap (callsaver-infra bootstrap): its roles deploy only this environment.
        common["synthesizer"] = DefaultStackSynthesizer(qualifier=config.bootstrap.qualifier)
    storage = StorageStack(
        app,
        names=names,
        storage=config.storage,
        recording=config.call_recording,
        security=config.security,
        stack_name=names.storage_stack,
        description=f"CallSaver {config.name}: session-recording bucket",
        **common,
    )
    iam = IamStack(
        app,
        names=names,
        storage=config.storage,
        egress_writer=config.egress_writer,
        credentials_readers=readers,
        stack_name=names.iam_stack,
        description=f"CallSaver {config.name}: LiveKit egress identity",
        **common,
    )
    # No cross-stack reference links the stacks (names come from config), but order the deploys.
    iam.add_stack_dependency(storage, "the egress policy names the session bucket")
    secrets = SecretsStack(
        app,
        names=names,
        config_values={spec.key: spec.from_config(config) for spec in SECRETS if spec.from_config is not None},
        readers=readers,
        stack_name=names.secrets_stack,
        description=f"CallSaver {config.name}: backend and agent secrets",
        **common,
    )
    agent = AgentStack(
        app,
        names=names,
        agent=config.agent,
        network=config.network,
        livekit=config.livekit,
        storage=config.storage,
        recording=config.call_recording,
        stack_name=names.agent_stack,
        description=f"CallSaver {config.name}: LiveKit agent on Fargate",
        **common,
    )
    # Tasks read their secrets at start: the secrets must exist first.
    agent.add_stack_dependency(secrets, "the agent's tasks read its secrets at start")
    agent.add_stack_dependency(iam, "the agent's tasks read the egress key pair to record outbound calls")
    # Its own stack: alarms, topic and dashboard change far more often than the bucket or the service, and a
    # monitoring change must never risk an update of either; it names what it watches, so it deploys last.
    monitoring = MonitoringStack(
        app,
        names=names,
        monitoring=config.monitoring,
        agent=config.agent,
        storage=config.storage,
        recording=config.call_recording,
        stack_name=names.monitoring_stack,
        description=f"CallSaver {config.name}: alarms, alert topic and dashboard",
        **common,
    )
    monitoring.add_stack_dependency(storage, "the upload alarms read the session bucket's request metrics")
    monitoring.add_stack_dependency(agent, "the agent alarms and the deploy rule name the agent's service")
    stacks = EnvironmentStacks(storage=storage, iam=iam, secrets=secrets, agent=agent, monitoring=monitoring)
    for stack in stacks.all():
        tags = Tags.of(stack)
        tags.add("project", "callsaver")
        # The environment's bootstrap allows actions on keys and VPC parts by this tag: never rename it.
        tags.add(bootstrap.ENVIRONMENT_TAG, config.name)
        if config.bootstrap.qualifier:
            # Its execution role creates roles and users only with the environment's permissions boundary.
            boundary = aws_iam.ManagedPolicy.from_managed_policy_name(
                stack, "PermissionsBoundary", bootstrap.permissions_boundary_name(config)
            )
            aws_iam.PermissionsBoundary.of(stack).apply(boundary)
    return stacks
