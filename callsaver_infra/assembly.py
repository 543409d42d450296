"""Builds the stacks of each environment into an app: the one composition used by app.py, tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Environment, Stack, Tags

from callsaver_infra.config import EnvironmentConfig
from callsaver_infra.stacks.iam import IamStack
from callsaver_infra.stacks.storage import StorageStack


@dataclass(frozen=True)
class EnvironmentStacks:
    """The stacks of one environment."""

    storage: StorageStack
    iam: IamStack

    def all(self) -> tuple[Stack, ...]:
        return (self.storage, self.iam)


def add_environment(app: App, config: EnvironmentConfig) -> EnvironmentStacks:
    """Add one environment's stacks to app, with explicit account/region so synth never looks anything up."""
    common = {
        "env": Environment(account=config.account, region=config.region),
        "termination_protection": config.termination_protection,
    }
    storage = StorageStack(
        app, config=config, description=f"CallSaver {config.name}: session-recording bucket", **common
    )
    iam = IamStack(app, config=config, description=f"CallSaver {config.name}: LiveKit egress identity", **common)
    # No cross-stack reference links them (the bucket ARN comes from config), but deploy the bucket first.
    iam.add_stack_dependency(storage, "the egress policy names the session bucket")
    stacks = EnvironmentStacks(storage=storage, iam=iam)
    for stack in stacks.all():
        Tags.of(stack).add("project", "callsaver")
        Tags.of(stack).add("environment", config.name)
    return stacks
