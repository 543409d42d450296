"""Helpers shared by the test modules (fixtures live in conftest.py): paths, in-process synth, the offline CDK CLI,
config-file writers, the snapshot matcher.

Where a remote service cannot be reached from here (real AWS, LiveKit Cloud), the tests run against local servers on
127.0.0.1 that speak its wire protocol: AWS is moto's server (plus callsaver_infra/dev/rehearsal/moto_ext.py), LiveKit
is callsaver_infra/dev/livekit_local.py's LocalLiveKitServer, driven by the real livekit-api client.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, cx_api
from aws_cdk.assertions import Template

from callsaver_infra.app.cdk_context import cli_context
from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.environment import add_environment
from callsaver_infra.app.nag import enable_policy_checks
from callsaver_infra.app.validation_memo import PROJECT_MEMO_DIR, enable_memoized_validation

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "config"
# config/ci/github.toml with a real-looking repository: the committed file's placeholder refuses to synthesize.
CI_FIXTURE = ROOT / "tests" / "fixtures" / "github.toml"
# The secret keys of each namespace, as the seed document lists them (written out here, not read from the code).
SEED_BACKEND_KEYS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "SESSION_S3_BUCKET")
SEED_AGENT_KEYS = (
    "LIVEKIT_OUTBOUND_TRUNK_ID",
    "OPENAI_API_KEY",
    "DEEPGRAM_API_KEY",
    "CARTESIA_API_KEY",
    "ANTHROPIC_API_KEY",
    "ASSEMBLYAI_API_KEY",
    "GOOGLE_API_KEY",
)
# Parametrize over the files themselves, so a new config/<env>.toml is tested without touching the tests.
ENV_NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def cdk_json_context() -> dict[str, Any]:
    """The context the CDK CLI passes to app.py (cdk.json's feature flags and its own defaults), so in-process
    synth writes the same bytes as `cdk synth`."""
    return cli_context(ROOT)


def new_app(outdir: Path, *, builtin_validation: bool = True) -> App:
    """An App configured like the CLI configures app.py's (builtin_validation False: check_as_app_py validates)."""
    return App(
        context=cdk_json_context(),
        outdir=str(outdir),
        analytics_reporting=False,
        builtin_cloud_formation_validation=builtin_validation,
    )


def check_as_app_py(app: App) -> None:
    """Register the checks app.py registers on an app from new_app(builtin_validation=False) that holds its stacks:
    the built-in CloudFormation validation through app.py's memo, in its directory (so the in-process synths share
    the CLI's entries; tests/test_validation_memo.py proves its report is the built-in's), and the cdk-nag gate."""
    enable_memoized_validation(app, ROOT / PROJECT_MEMO_DIR, enable_policy_checks)


@dataclass
class Synthesized:
    """A synthesized cloud assembly, with cached per-stack templates."""

    assembly: cx_api.CloudAssembly
    outdir: Path
    _templates: dict[str, Template] = field(default_factory=dict)

    def artifact(self, stack_name: str) -> cx_api.CloudFormationStackArtifact:
        return self.assembly.get_stack_by_name(stack_name)

    def template_json(self, stack_name: str) -> dict[str, Any]:
        template: dict[str, Any] = self.artifact(stack_name).template
        return template

    def template(self, stack_name: str) -> Template:
        if stack_name not in self._templates:
            self._templates[stack_name] = Template.from_json(self.template_json(stack_name))
        return self._templates[stack_name]

    def stack_names(self) -> list[str]:
        return sorted(s.stack_name for s in self.assembly.stacks)


def synthesize(configs: list[EnvironmentConfig], outdir: Path) -> Synthesized:
    """Build and synthesize the given environments exactly as app.py does."""
    app = new_app(outdir, builtin_validation=False)
    for config in configs:
        add_environment(app, config)
    check_as_app_py(app)
    return Synthesized(assembly=app.synth(), outdir=outdir)


@dataclass
class OperatorAws:
    """boto3 clients on moto's server, as the operator (the CLI under test finds the same server through
    AWS_ENDPOINT_URL)."""

    endpoint: str
    s3: Any
    secrets: Any
    cloudformation: Any
    ecs: Any
    region: str = "us-west-1"

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint)


def hang_up(livekit: Any, room: str, egress_id: str, api_key: str, api_secret: str) -> None:
    """End a call on the local LiveKit stand-in once its recording runs: deleting the room through the API ends the
    recording, which then uploads. (A call shorter than egress's start leaves nothing, as on LiveKit.)"""
    from livekit import api

    deadline = time.monotonic() + 5
    while livekit.egresses[egress_id].status != api.EgressStatus.EGRESS_ACTIVE and time.monotonic() < deadline:
        time.sleep(0.02)

    async def delete() -> None:
        async with api.LiveKitAPI(livekit.url, api_key, api_secret) as lkapi:
            await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))

    asyncio.run(delete())


# For probe scripts run in a fresh process: run(argv, stdin) calls the CLI's main() with its output swallowed and
# returns the exit code (argparse's --help and usage errors exit through SystemExit).
CLI_RUN = """
import contextlib, io, sys
from callsaver_infra.ops import cli

def run(argv, stdin=""):
    sys.stdin = io.StringIO(stdin)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return cli.main(argv)
        except SystemExit as e:
            return e.code
"""

CDK = ROOT / "node_modules" / ".bin" / "cdk"


def offline_env() -> dict[str, str]:
    """No AWS credentials or config, and every HTTP(S) request sent to a closed local port: synth must not care."""
    path = os.pathsep.join([str(ROOT / "node_modules" / ".bin"), str(ROOT / ".venv" / "bin"), os.defpath])
    return {
        "PATH": path,
        "HOME": os.environ.get("HOME", "/tmp"),
        "CDK_DISABLE_VERSION_CHECK": "1",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }


def cdk(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The pinned CDK CLI on the repository, offline (env: more variables for it and app.py)."""
    if not CDK.exists():
        pytest.fail(f"{CDK} is missing: run `make setup` (npm ci) first")
    return subprocess.run(
        [str(CDK), *args],
        cwd=ROOT,
        env={**offline_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def app_py(outdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python app.py` in a fresh process, without the CLI (no CDK_CONTEXT_JSON), offline, writing to outdir."""
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "app.py"],
        cwd=ROOT,
        env={**offline_env(), "CDK_OUTDIR": str(outdir), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def memo_entries(memo_dir: Path) -> list[str]:
    """The validation memo's entries in memo_dir (callsaver_infra/app/validation_memo.py), by relative path."""
    return sorted(str(p.relative_to(memo_dir)) for p in memo_dir.glob("*/*.json"))


def synth_outputs(outdir: Path) -> dict[str, str]:
    """Every template and the validation report of an assembly, by path relative to it. The report's stack traces
    name the jsii kernel's temporary directory, which differs from run to run."""
    files = [*outdir.rglob("*.template.json"), *outdir.glob("validation-report.json")]
    return {str(f.relative_to(outdir)): re.sub(r"jsii-kernel-\w+", "jsii-kernel-*", f.read_text()) for f in files}


@dataclass(frozen=True)
class CliSynth:
    """A finished `cdk synth` or `python app.py` (the exit code, stdout and stderr) and the assembly it wrote; memo:
    its validation memo's directory, memo_after: the entries it held when the synth had finished."""

    result: subprocess.CompletedProcess[str]
    outdir: Path
    memo: Path | None = None
    memo_after: tuple[str, ...] = ()


# Asset hashes change with unrelated inputs (CDK version, bundling); they are not reviewable content.
_ASSET_HASH = re.compile(r"\b[0-9a-f]{64}\b")


def mask_asset_hashes(data: Any, path: Any) -> Any:
    """A syrupy matcher: asset hashes masked."""
    if isinstance(data, str) and _ASSET_HASH.search(data):
        return _ASSET_HASH.sub("<asset-hash>", data)
    return data


STAGING = CONFIG_DIR / "staging.toml"


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Write data as TOML (the config shape is two levels deep: top-level keys and [sections])."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return str(v)

    lines = [f"{k} = {fmt(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {fmt(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def staging_with(tmp_path: Path, file_stem: str = "staging", **changes: Any) -> Path:
    """staging.toml with dotted-key changes applied; a value of None deletes the key."""
    data = tomllib.loads(STAGING.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for p in parents:
            node = node[p]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    return write_toml(tmp_path / f"{file_stem}.toml", data)


def synth_ci(ci: Any, environments: dict[str, EnvironmentConfig], outdir: Path) -> Synthesized:
    """The CI stack alone, synthesized and checked as app.py does."""
    from callsaver_infra.app.stacks.ci import add_ci_stack

    app = new_app(outdir, builtin_validation=False)
    add_ci_stack(app, ci, environments)
    check_as_app_py(app)
    return Synthesized(assembly=app.synth(), outdir=outdir)


@functools.cache
def _cfn_lint_runner(region: str) -> Any:
    from cfnlint.config import ConfigMixIn
    from cfnlint.runner import Runner

    return Runner(ConfigMixIn(regions=[region]))


def cfn_lint(text: str, region: str) -> list[Any]:
    """cfn-lint's matches for one template, as `cfnlint.api.lint(text, regions=[region])` finds them, with the rules
    loaded once per process and region (as the cfn-lint CLI lints many templates with one rule set)."""
    from cfnlint.decode.decode import decode_str

    template, errors = decode_str(text)
    if errors:
        return list(errors)
    if template is None:
        return []
    return list(_cfn_lint_runner(region).validate_template(template))


def role_of(template: dict[str, Any], name: str) -> dict[str, Any]:
    """The properties of the one IAM role named name in template."""
    roles = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    (role,) = [r for r in roles if r["RoleName"] == name]
    return dict(role)
