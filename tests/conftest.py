"""Shared fixtures: the committed environments, synthesized once per test session with the cdk-nag gate on."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, cx_api
from aws_cdk.assertions import Template

from callsaver_infra.app.config import EnvironmentConfig, load_environments
from callsaver_infra.app.environment import add_environment, cli_context
from callsaver_infra.app.nag import enable_policy_checks

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


def new_app(outdir: Path) -> App:
    """An App configured like the CLI configures app.py's."""
    return App(context=cdk_json_context(), outdir=str(outdir), analytics_reporting=False)


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
    app = new_app(outdir)
    for config in configs:
        add_environment(app, config)
    enable_policy_checks(app)
    return Synthesized(assembly=app.synth(), outdir=outdir)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's server on 127.0.0.1 (a local AWS endpoint: real AWS is unreachable here), fresh for each test module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def environments() -> dict[str, EnvironmentConfig]:
    return load_environments(CONFIG_DIR)


@pytest.fixture(scope="session")
def synthesized(
    environments: dict[str, EnvironmentConfig], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Synthesized]:
    yield synthesize(list(environments.values()), tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(params=ENV_NAMES)
def env(request: pytest.FixtureRequest, environments: dict[str, EnvironmentConfig]) -> EnvironmentConfig:
    """Each committed environment in turn."""
    config: EnvironmentConfig = environments[request.param]
    return config


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


@pytest.fixture
def operator_aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> OperatorAws:
    """A fresh moto account (reset), reached by the CLI through AWS_ENDPOINT_URL with fake operator credentials;
    LiveKit retries back off in milliseconds. Services report their desired tasks as running (moto/ecs/models.py)."""
    from callsaver_infra.ops import push_egress as egress_hook

    region = "us-west-1"
    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "operator-fake-key-id",
        "AWS_SECRET_ACCESS_KEY": "operator-fake-secret",
        "AWS_DEFAULT_REGION": region,
        "MOTO_ECS_SERVICE_RUNNING": "1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(egress_hook, "DEFAULT_RETRY", egress_hook.RetryPolicy(attempts=3, backoff_seconds=0.01))
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    clients = OperatorAws(moto_endpoint, None, None, None, None, region)
    clients.s3, clients.secrets = clients.client("s3"), clients.client("secretsmanager")
    clients.cloudformation, clients.ecs = clients.client("cloudformation"), clients.client("ecs")
    return clients


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
