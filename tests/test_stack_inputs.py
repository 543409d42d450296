"""Stacks take the config sections and names they use, like the constructs beneath them, never the whole
EnvironmentConfig."""

from __future__ import annotations

import inspect
import typing

import pytest

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EnvNames
from callsaver_infra.app.stacks.agent import AgentStack
from callsaver_infra.app.stacks.iam import IamStack
from callsaver_infra.app.stacks.monitoring import MonitoringStack
from callsaver_infra.app.stacks.secrets import SecretsStack
from callsaver_infra.app.stacks.storage import StorageStack


@pytest.mark.parametrize("stack", [StorageStack, IamStack, SecretsStack, AgentStack, MonitoringStack])
def test_environment_stacks_take_sections_not_the_whole_config(stack: type) -> None:
    hints = typing.get_type_hints(stack.__init__)
    parameters = [p for p in inspect.signature(stack.__init__).parameters if p not in ("self", "scope", "kwargs")]
    assert "config" not in parameters
    assert EnvironmentConfig not in hints.values()
    assert hints["names"] is EnvNames
    # Every input is keyword-only and typed.
    assert all(p in hints for p in parameters)
