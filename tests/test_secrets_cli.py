"""`callsaver-infra secrets status|set` against a local AWS endpoint: moto's server on 127.0.0.1 (real AWS is
unreachable from here), reached over HTTP through boto3's standard AWS_ENDPOINT_URL."""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from callsaver_infra.app.secret_catalog import PLACEHOLDER, SECRETS, find
from callsaver_infra.ops.cli import EXIT_ERROR, EXIT_NOT_READY, EXIT_OK, main
from tests.helpers import CONFIG_DIR, ENV_NAMES

FAKE_VALUE = "sk-fake-not-a-real-key-0123456789"
ENV = "staging"


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Secrets Manager client on a fresh moto backend, with the CLI pointed at the same endpoint."""
    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    # Each test starts from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    yield boto3.client("secretsmanager", region_name="us-west-1", endpoint_url=moto_endpoint)


def _deploy_secrets(client: Any, *, overrides: dict[str, str | None] | None = None) -> None:
    """Create the secrets as Callsaver-Secrets-staging does (config values and placeholders)."""
    values = {
        "backend/LIVEKIT_URL": "wss://callsaver-d8dm5v36.livekit.cloud",
        "backend/SESSION_S3_BUCKET": "callsaver-sessions-staging",
    }
    for spec in SECRETS:
        value = (overrides or {}).get(spec.ref, values.get(spec.ref, PLACEHOLDER))
        if value is not None:
            client.create_secret(Name=f"callsaver/{ENV}/{spec.ref}", SecretString=value)


def _run(*argv: str) -> int:
    return main(["--config-dir", str(CONFIG_DIR), *argv])


def test_status_of_freshly_deployed_secrets_lists_every_placeholder(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _deploy_secrets(aws)
    assert _run("secrets", "status", "--env", ENV) == EXIT_NOT_READY
    out = capsys.readouterr().out
    assert "backend/LIVEKIT_URL" in out and "config value, matches config" in out
    assert out.count("PLACEHOLDER") == 9
    assert "callsaver-infra secrets set --env staging agent/OPENAI_API_KEY" in out
    assert "2 of 11 ready; 9 need attention." in out


def test_status_is_ok_when_everything_is_set(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _deploy_secrets(aws, overrides={s.ref: FAKE_VALUE for s in SECRETS if not s.owned_by_stack})
    assert _run("secrets", "status", "--env", ENV) == EXIT_OK
    captured = capsys.readouterr()
    assert "11 of 11 ready." in captured.out
    assert FAKE_VALUE not in captured.out + captured.err


def test_status_reports_a_missing_secret_and_the_stack_to_deploy(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _deploy_secrets(aws, overrides={"agent/GOOGLE_API_KEY": None})
    assert _run("secrets", "status", "--env", ENV) == EXIT_NOT_READY
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "agent/GOOGLE_API_KEY" in ln)
    assert "MISSING" in line and "does not exist: deploy Callsaver-Secrets-staging" in line


def test_status_flags_a_config_value_that_drifted(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _deploy_secrets(aws, overrides={"backend/SESSION_S3_BUCKET": "some-other-bucket"})
    assert _run("secrets", "status", "--env", ENV) == EXIT_NOT_READY
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "SESSION_S3_BUCKET" in ln)
    assert "DIFFERS" in line and "config/staging.toml" in line


def test_set_stores_the_value_from_stdin_and_never_prints_it(
    aws: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _deploy_secrets(aws)
    monkeypatch.setattr("sys.stdin", io.StringIO(FAKE_VALUE + "\n"))
    assert _run("secrets", "set", "--env", ENV, "agent/OPENAI_API_KEY") == EXIT_OK
    captured = capsys.readouterr()
    assert "set callsaver/staging/agent/OPENAI_API_KEY (33 characters" in captured.out
    assert FAKE_VALUE not in captured.out + captured.err
    stored = aws.get_secret_value(SecretId="callsaver/staging/agent/OPENAI_API_KEY")["SecretString"]
    assert stored == FAKE_VALUE, "the trailing newline of the pasted value must be dropped"
    assert _run("secrets", "status", "--env", ENV) == EXIT_NOT_READY
    assert "3 of 11 ready" in capsys.readouterr().out


def test_set_dry_run_changes_nothing(
    aws: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _deploy_secrets(aws)
    monkeypatch.setattr("sys.stdin", io.StringIO(FAKE_VALUE))
    assert _run("secrets", "set", "--env", ENV, "agent/OPENAI_API_KEY", "--dry-run") == EXIT_OK
    captured = capsys.readouterr()
    assert "dry run: would set callsaver/staging/agent/OPENAI_API_KEY (33 characters); nothing changed" in captured.out
    assert FAKE_VALUE not in captured.out + captured.err
    assert aws.get_secret_value(SecretId="callsaver/staging/agent/OPENAI_API_KEY")["SecretString"] == PLACEHOLDER


def test_set_before_the_stack_is_deployed(
    aws: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(FAKE_VALUE))
    assert _run("secrets", "set", "--env", ENV, "agent/OPENAI_API_KEY") == EXIT_ERROR
    captured = capsys.readouterr()
    assert (
        "secret callsaver/staging/agent/OPENAI_API_KEY does not exist: deploy Callsaver-Secrets-staging first"
        in captured.err
    )
    assert FAKE_VALUE not in captured.out + captured.err


@pytest.mark.parametrize(
    ("ref", "stdin", "message"),
    [
        ("agent/NOPE", FAKE_VALUE, "unknown secret 'agent/NOPE'; the secrets you can set are: backend/LIVEKIT_API_KEY"),
        (
            "backend/LIVEKIT_URL",
            FAKE_VALUE,
            "backend/LIVEKIT_URL is a configuration value owned by Callsaver-Secrets-staging",
        ),
        ("agent/OPENAI_API_KEY", "  \n", "no value given for agent/OPENAI_API_KEY: nothing was changed"),
        ("agent/OPENAI_API_KEY", PLACEHOLDER, "refusing to store the placeholder as agent/OPENAI_API_KEY"),
        (
            "agent/OPENAI_API_KEY",
            f"{FAKE_VALUE}\r\nsk-fake-second-line\n",
            "the value for agent/OPENAI_API_KEY has 2 lines; every secret here is a single line: nothing was changed",
        ),
    ],
)
def test_set_refuses_bad_requests(
    aws: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ref: str, stdin: str, message: str
) -> None:
    _deploy_secrets(aws)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert _run("secrets", "set", "--env", ENV, ref) == EXIT_ERROR
    captured = capsys.readouterr()
    assert message in captured.err
    assert FAKE_VALUE not in captured.out + captured.err
    if find(ref) is not None and not find(ref).owned_by_stack:  # type: ignore[union-attr]
        assert aws.get_secret_value(SecretId=f"callsaver/{ENV}/{ref}")["SecretString"] == PLACEHOLDER


def test_unknown_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("secrets", "status", "--env", "prod") == EXIT_ERROR
    assert f"unknown environment 'prod'; known environments: {', '.join(ENV_NAMES)}" in capsys.readouterr().err


def test_no_aws_endpoint_reachable_is_an_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert _run("secrets", "status", "--env", ENV) == EXIT_ERROR
    assert "error: AWS: Could not connect to the endpoint URL" in capsys.readouterr().err


def test_a_read_denied_by_the_resource_policy_says_who_may_read() -> None:
    """AWS answers AccessDeniedException when a secret's resource policy denies the caller (not reproducible on
    moto, which evaluates no secret resource policies): the error names the roles that may read."""
    from botocore.exceptions import ClientError

    from callsaver_infra.ops.secrets_admin import SecretsError, _read

    class Denied:
        def get_secret_value(self, SecretId: str) -> dict[str, str]:  # noqa: N803 (boto3's parameter name)
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "explicit deny"}}, "GetSecretValue"
            )

    with pytest.raises(SecretsError) as e:
        _read(Denied(), "callsaver/staging/agent/OPENAI_API_KEY")
    message = str(e.value)
    assert message.startswith("could not read callsaver/staging/agent/OPENAI_API_KEY: AccessDeniedException.")
    assert "break-glass role" in message and "CI deploy role" in message
