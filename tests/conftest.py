"""Shared fixtures: the committed environments, synthesized once per test session with the cdk-nag gate on; moto's
server; operator clients on it. Helpers that are not fixtures are in tests/helpers.py."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aws_cdk import cx_api

from callsaver_infra.app.config import EnvironmentConfig, load_environments
from tests.helpers import (
    CONFIG_DIR,
    ENV_NAMES,
    CliSynth,
    OperatorAws,
    Synthesized,
    app_py,
    cdk,
    memo_entries,
    synthesize,
)

# The suite runs on two pytest-xdist workers (addopts in pyproject.toml: --dist loadfile --no-loadscope-reorder).
# Each module is one unit of work (its module-scoped fixtures run once), and the modules that wait on long
# subprocesses (the two rehearsals, the CDK CLI's synths) are handed out first, then the other modules of several
# seconds, longest first, so the run ends on short modules and neither worker waits long for the other at the end.
SLOW_FIRST = (
    "test_lifecycle_rehearsal.py",
    "test_rehearsal.py",
    "test_cdk_cli.py",
    "test_registry_config.py",
    "test_ci_config.py",
    "test_validation_memo.py",
    "test_status.py",
    "test_egress_hook.py",
    "test_agent_stack.py",
    "test_egress_rotation.py",
    "test_stateful_changes.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server on 127.0.0.1 (a local AWS endpoint: real AWS is unreachable here), one per worker."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def moto_endpoint(moto_server: str) -> str:
    """moto's server, empty for each test module: every account's state reset and IAM enforcement off (starting a
    server per module costs half a second each to stop)."""
    reset(moto_server)
    return moto_server


def reset(endpoint: str) -> None:
    """Empty moto: every backend reset; IAM enforcement off (an unlimited count of unauthenticated requests)."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"inf", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request).read()


@pytest.fixture(scope="session")
def environments() -> dict[str, EnvironmentConfig]:
    return load_environments(CONFIG_DIR)


@contextmanager
def once_per_run(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A path for what the run's xdist workers share, held under an exclusive lock: the first worker to get here
    writes it, the others wait and then read it. Without xdist, a fresh temporary directory."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        yield factory.mktemp(name)
        return
    shared = factory.getbasetemp().parent / f"{name}-{run}"
    with open(shared.with_name(f"{shared.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield shared


@pytest.fixture(scope="session")
def synthesized(environments: dict[str, EnvironmentConfig], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Every committed environment, synthesized in-process once per run (the first worker to need it writes the
    assembly, the others read it)."""
    with once_per_run(tmp_path_factory, "cdk.out") as shared:
        done = shared.with_name(f"{shared.name}.done")  # written once the synth (and its cdk-nag gate) passed
        if done.exists():
            return Synthesized(assembly=cx_api.CloudAssembly(str(shared)), outdir=shared)
        synthesized = synthesize(list(environments.values()), shared)
        done.touch()
        return synthesized


def _shared_synth(shared: Path, memo: Path, run: Callable[[], subprocess.CompletedProcess[str]]) -> CliSynth:
    """The synth run() does, once per run: the first worker runs it and records its result and memo entries beside
    shared, the others read the record."""
    record = shared.with_name(f"{shared.name}.json")
    if not record.exists():  # written last: the assembly and the memo beside it are complete
        result = run()
        record.write_text(
            json.dumps([result.args, result.returncode, result.stdout, result.stderr, memo_entries(memo)])
        )
    args, returncode, stdout, stderr, entries = json.loads(record.read_text())
    return CliSynth(subprocess.CompletedProcess(args, returncode, stdout, stderr), shared, memo, tuple(entries))


@pytest.fixture(scope="session")
def app_py_all(tmp_path_factory: pytest.TempPathFactory) -> CliSynth:
    """`python app.py` (every environment; no CLI, so no CDK_CONTEXT_JSON) offline with an empty validation memo of
    its own, once per run: the memo's cold run (tests/test_validation_memo.py) and what `cdk synth` must equal
    (tests/test_cdk_cli.py)."""
    with once_per_run(tmp_path_factory, "app-py-all") as shared:
        memo = shared.with_name(f"{shared.name}-memo")
        return _shared_synth(shared, memo, lambda: app_py(shared, CALLSAVER_CFN_VALIDATE_MEMO_DIR=str(memo)))


@pytest.fixture(scope="session")
def cli_synth_all(tmp_path_factory: pytest.TempPathFactory, app_py_all: CliSynth) -> CliSynth:
    """`cdk synth -q` of the committed config with no context, by the real CLI offline, once per run for the tests
    that only read what it wrote (its exit code, output and assembly); tests that change config or context run
    their own. It reads the validation memo app_py_all filled: the memo's warm run."""
    assert app_py_all.memo is not None
    memo = app_py_all.memo
    with once_per_run(tmp_path_factory, "cli-synth-all") as shared:
        env = {"CALLSAVER_CFN_VALIDATE_MEMO_DIR": str(memo)}
        return _shared_synth(shared, memo, lambda: cdk("synth", "-q", "-o", str(shared), env=env))


@pytest.fixture(params=ENV_NAMES)
def env(request: pytest.FixtureRequest, environments: dict[str, EnvironmentConfig]) -> EnvironmentConfig:
    """Each committed environment in turn."""
    config: EnvironmentConfig = environments[request.param]
    return config


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
