"""The local deploy rehearsal end to end: the pinned CDK CLI deploys all four stacks into moto's server plus our
extension on 127.0.0.1 (real AWS is unreachable from here), the hook pushes to the local LiveKit server on
127.0.0.1 that speaks LiveKit's Twirp protocol, and every step is checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callsaver_infra.app.config import load_environments
from callsaver_infra.dev.rehearsal.runner import Background, Rehearsal, StepFailed, check_rehearsable
from tests.helpers import CONFIG_DIR, ROOT

STEPS = (
    "start local endpoints",
    "bootstrap",
    "deploy registry",
    "image check refuses",
    "push agent image",
    "image check passes",
    "deploy base stacks",
    "check storage",
    "check egress identity",
    "check secrets",
    "first deploy stops",
    "set operator secrets",
    "deploy",
    "check agent",
    "check agent image",
    "check monitoring",
    "alarm reaches topic",
    "rollback reaches topic",
    "post-deploy hook",
    "inbound call recorded",
    "status",
    "access probes",
    "teardown",
)


@pytest.fixture(scope="module")
def rehearsal_run() -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.pathsep.join([str(ROOT / "node_modules" / ".bin"), str(Path(sys.executable).parent), os.defpath]),
        "HOME": os.environ.get("HOME", "/tmp"),
        # Real credentials in the caller's environment must not matter (and are dropped by the rehearsal).
        "AWS_ACCESS_KEY_ID": "should-not-be-used",
        "AWS_SECRET_ACCESS_KEY": "should-not-be-used",
    }
    return subprocess.run(
        [sys.executable, "-m", "callsaver_infra.dev.rehearsal"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_rehearsal_passes_every_step(rehearsal_run: subprocess.CompletedProcess[str]) -> None:
    out = rehearsal_run.stdout
    assert rehearsal_run.returncode == 0, out + rehearsal_run.stderr
    for step in STEPS:
        assert re.search(rf"^  ok\s+{re.escape(step)}\s+\d+\.\d s  ", out, re.MULTILINE), (
            f"step {step!r} not reported ok:\n{out}"
        )
    assert "Stacks: Callsaver-Storage-local, Callsaver-IAM-local, Callsaver-Secrets-local, Callsaver-Agent-local" in out
    assert re.search(r"^Rehearsal passed in \d+\.\d s\.$", out, re.MULTILINE)


def test_rehearsal_refuses_the_deploy_without_the_image_then_deploys_it(
    rehearsal_run: subprocess.CompletedProcess[str],
) -> None:
    out = rehearsal_run.stdout
    sha = "0123456789ab"
    assert re.search(rf"^  ok\s+image check refuses .*refused before deploy \(exit 1\): {sha}\.\.\. missing; "
                     r"tags there: v0\.9\.0$", out, re.MULTILINE), out  # fmt: skip
    assert re.search(rf"^  ok\s+image check passes .*callsaver-agent:{sha}\w+ exists", out, re.MULTILINE), out
    lines = out.splitlines()
    steps = ("image check refuses", "push agent image", "image check passes", "deploy base stacks")
    order = [next(i for i, ln in enumerate(lines) if re.match(rf"  ok\s+{step}\s+\d+\.\d s  ", ln)) for step in steps]
    assert order == sorted(order)


def test_status_runs_as_the_break_glass_role_with_every_line_ok(
    rehearsal_run: subprocess.CompletedProcess[str],
) -> None:
    """status reads secret values, which the secrets' resource policies allow only to the break-glass role among
    operators (docs/security.md)."""
    assert re.search(r"^  ok\s+status\s+\d+\.\d s  as the break-glass role: all \d+ checks ok$", rehearsal_run.stdout,
                     re.MULTILINE), rehearsal_run.stdout  # fmt: skip


def test_rehearsal_lists_what_it_does_not_emulate(rehearsal_run: subprocess.CompletedProcess[str]) -> None:
    line = next(ln for ln in rehearsal_run.stdout.splitlines() if ln.startswith("Not emulated"))
    # The cluster's Container Insights setting is applied only by AWS; the access key's Serial is emulated
    # (it replaces the key, which the lifecycle rehearsal's rotation needs).
    assert "AWS::ECS::Cluster.ClusterSettings" in line and "AWS::IAM::AccessKey" not in line
    assert "AWS::S3::Bucket.LifecycleConfiguration" not in line


def test_rehearsal_output_holds_no_key_or_secret(rehearsal_run: subprocess.CompletedProcess[str]) -> None:
    text = rehearsal_run.stdout + rehearsal_run.stderr
    assert not re.search(r"AKIA[0-9A-Z]{16}", text), "a full access key id was printed"
    assert "secretAccessKey" not in text and "should-not-be-used" not in text


def test_a_failing_step_stops_the_rehearsal_and_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_environments(CONFIG_DIR)["local"]
    lines: list[str] = []
    rehearsal = Rehearsal(config, ROOT, out=lines.append)

    def broken_bootstrap() -> str:
        raise StepFailed("cdk bootstrap exited 1: simulated")

    monkeypatch.setattr(rehearsal, "_bootstrap", broken_bootstrap)
    assert rehearsal.run() == 1
    assert any(re.match(r"  FAILED bootstrap\s+\d+\.\d s  cdk bootstrap exited 1: simulated", ln) for ln in lines)
    assert "Rehearsal failed at step 'bootstrap'." in lines
    assert [r.name for r in rehearsal.results] == ["start local endpoints", "bootstrap"]


def test_real_accounts_cannot_be_rehearsed() -> None:
    staging = load_environments(CONFIG_DIR)["staging"]
    with pytest.raises(StepFailed, match="uses account 836347236108; only an environment on the local endpoint"):
        check_rehearsable(staging)


def test_a_command_started_ahead_of_its_step_hands_the_step_its_result_or_its_error() -> None:
    """secrets status and push-egress run beside read-only checks; their steps get what they returned or raised."""
    assert Background(lambda: "exit 0").result() == "exit 0"

    def fails() -> str:
        raise StepFailed("push-egress exited 2")

    with pytest.raises(StepFailed, match="push-egress exited 2"):
        Background(fails).result()
