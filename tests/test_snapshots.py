"""One JSON snapshot per stack per environment: a pull request's diff shows exactly what CloudFormation changes.

Update after a reviewed change with `make snapshot-update` (pytest --snapshot-update).
"""

from __future__ import annotations

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from callsaver_infra.app.names import EnvNames
from tests.helpers import ENV_NAMES, Synthesized, mask_asset_hashes


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("env_name", ENV_NAMES)
@pytest.mark.parametrize("stack", ["storage_stack", "iam_stack", "secrets_stack", "agent_stack", "monitoring_stack"])
def test_template_matches_snapshot(
    synthesized: Synthesized, snapshot_json: SnapshotAssertion, env_name: str, stack: str
) -> None:
    template = synthesized.template_json(getattr(EnvNames(env_name), stack))
    assert template == snapshot_json(matcher=mask_asset_hashes)
