"""The agent image's configuration: an immutable agent.image_tag in each environment file (the one source of the
deployed tag), and config/ci/registry.toml (the repository and its one pusher), checked by app.py and the CLI."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from callsaver_infra.app.config import (
    ConfigError,
    EnvironmentConfig,
    image_tag_problem,
    load_environment,
    load_environments,
    with_image_tag,
)
from callsaver_infra.app.registry_config import (
    REGISTRY_CONFIG_FILE,
    check_reserved_registry_name,
    load_registry_config,
    registry_for,
)
from tests.helpers import CONFIG_DIR, cdk, staging_with

SHA = "0123456789abcdef0123456789abcdef01234567"
REGISTRY = CONFIG_DIR / REGISTRY_CONFIG_FILE


@pytest.mark.parametrize("tag", [SHA, "v1.0.0", "1.4.2", "v2.10.3-rc.1", "v1.0.0-hotfix2"])
def test_immutable_tags_are_accepted(tag: str) -> None:
    assert image_tag_problem(tag) is None


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("latest", "'latest' moves with every push"),
        ("main", "looks like a moving tag"),
        ("stable", "looks like a moving tag"),
        ("v1", "looks like a moving tag"),
        ("v1.4", "looks like a moving tag"),
        ("0123abc", "looks like a moving tag"),  # a short SHA: ambiguous as the repository grows
        (SHA.upper(), "looks like a moving tag"),
        ("-bad", "is not a container image tag"),
        ("a" * 129, "is not a container image tag"),
    ],
)
def test_latest_moving_and_malformed_tags_are_refused(tag: str, reason: str) -> None:
    problem = image_tag_problem(tag)
    assert problem is not None and reason in problem
    assert "full commit SHA (40 lowercase hex characters) or a release version such as v1.4.2" in problem


def test_latest_in_config_is_a_config_error_naming_file_key_and_fix(tmp_path: Path) -> None:
    path = staging_with(tmp_path, agent__image_tag="latest")
    with pytest.raises(ConfigError) as e:
        load_environment(path)
    assert str(e.value) == (
        f"{path}: invalid configuration (1 problem(s)):\n"
        "  - agent.image_tag = 'latest': 'latest' moves with every push, so a deploy could run any image; use an "
        "immutable tag: the agent repository's full commit SHA (40 lowercase hex characters) or a release version "
        "such as v1.4.2"
    )


def test_the_committed_environments_name_immutable_example_tags(environments: dict[str, EnvironmentConfig]) -> None:
    assert {name: env.agent.image_tag for name, env in environments.items()} == {
        "local": SHA,
        "production": "v1.0.0",
        "staging": "v1.0.0",
    }
    for name in ("staging", "production"):
        assert "EXAMPLE VALUE" in (CONFIG_DIR / f"{name}.toml").read_text()


def test_the_hotfix_override_is_validated_the_same_way(environments: dict[str, EnvironmentConfig]) -> None:
    assert with_image_tag(environments["staging"], "v1.0.1").agent.image_tag == "v1.0.1"
    with pytest.raises(ConfigError, match="^context agentImageTag='latest': 'latest' moves with every push"):
        with_image_tag(environments["staging"], "latest")


def test_cli_refuses_latest_as_the_hotfix_override(tmp_path: Path) -> None:
    result = cdk("synth", "-q", "-c", "env=staging", "-c", "agentImageTag=latest", "-o", str(tmp_path))
    assert result.returncode != 0
    assert "error: context agentImageTag='latest': 'latest' moves with every push" in result.stderr


# -- config/ci/registry.toml -------------------------------------------------------------------------------------


def _registry_with(tmp_path: Path, **changes: object) -> Path:
    """registry.toml with top-level keys changed; a value of None deletes the key."""
    data = tomllib.loads(REGISTRY.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items()]
    path = tmp_path / "registry.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _registry_error(path: Path, environments: dict[str, EnvironmentConfig]) -> str:
    with pytest.raises(ConfigError) as e:
        load_registry_config(path, environments)
    return str(e.value)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"keep_tagged_images": 0}, "keep_tagged_images = 0: Input should be greater than or equal to 1"),
        ({"repository_name": "Callsaver_Agent"}, "repository_name = 'Callsaver_Agent': is not an ECR repository"),
        (
            {"push_role_arn": "arn:aws:iam::210987654321:role/callsaver-agent-ci"},
            "set exactly one of push_role_arn and push_github_subject",
        ),
        (
            {"push_github_subject": None, "push_role_arn": "arn:aws:iam::210987654321:role/*"},
            "push_role_arn = 'arn:aws:iam::210987654321:role/*': is not one IAM role ARN",
        ),
        ({"push_github_subject": None}, "set exactly one of push_role_arn and push_github_subject"),
        (
            {"push_github_subject": "repo:callsaver/callsaver-agent:*"},
            "push_github_subject = 'repo:callsaver/callsaver-agent:*': is not one GitHub OIDC subject",
        ),
        ({"account": "83634723610"}, "account = '83634723610': must be a 12-digit AWS account id"),
    ],
)
def test_invalid_registry_values_name_file_key_and_fix(
    tmp_path: Path, environments: dict[str, EnvironmentConfig], changes: dict[str, object], expected: str
) -> None:
    message = _registry_error(_registry_with(tmp_path, **changes), environments)
    assert message.startswith(f"{tmp_path / 'registry.toml'}: invalid configuration")
    assert expected in message


def test_a_role_arn_alone_is_a_valid_pusher(tmp_path: Path, environments: dict[str, EnvironmentConfig]) -> None:
    path = _registry_with(
        tmp_path, push_github_subject=None, push_role_arn="arn:aws:iam::210987654321:role/callsaver-agent-ci"
    )
    assert load_registry_config(path, environments).push_role_arn == "arn:aws:iam::210987654321:role/callsaver-agent-ci"


def test_environments_in_the_registry_account_must_use_its_repository(
    tmp_path: Path, environments: dict[str, EnvironmentConfig]
) -> None:
    message = _registry_error(_registry_with(tmp_path, repository_name="other-agent"), environments)
    assert "repository_name = 'other-agent': environment 'production' (same account and region)" in message
    assert "environment 'staging'" in message and "environment 'local'" not in message


def test_missing_registry_file(tmp_path: Path, environments: dict[str, EnvironmentConfig]) -> None:
    assert "file not found" in _registry_error(tmp_path / "nope.toml", environments)


def test_an_environment_named_registry_is_rejected(tmp_path: Path) -> None:
    shutil.copy(CONFIG_DIR / "staging.toml", tmp_path / "registry.toml")
    with pytest.raises(ConfigError, match="the environment name 'registry' is reserved for the registry stack"):
        check_reserved_registry_name(tmp_path, load_environments(tmp_path))


def test_registry_for_places_it_in_an_environment_account(environments: dict[str, EnvironmentConfig]) -> None:
    registry = load_registry_config(REGISTRY, environments)
    local = registry_for(registry, environments["local"])
    assert (local.account, local.region, local.repository_name) == ("123456789012", "us-west-1", "callsaver-agent")


def _stacks(outdir: Path) -> list[str]:
    manifest = json.loads((outdir / "manifest.json").read_text())
    return sorted(k for k, v in manifest["artifacts"].items() if v["type"] == "aws:cloudformation:stack")


def test_cli_env_registry_synthesizes_only_the_registry_stack(tmp_path: Path) -> None:
    result = cdk("synth", "-q", "-c", "env=registry", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert _stacks(tmp_path) == ["Callsaver-Registry"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifacts"]["Callsaver-Registry"]["environment"] == "aws://836347236108/us-west-1"


def test_cli_registry_for_an_environment_uses_its_account(tmp_path: Path) -> None:
    result = cdk("synth", "-q", "-c", "env=registry", "-c", "registryFor=local", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifacts"]["Callsaver-Registry"]["environment"] == "aws://123456789012/us-west-1"
    bad = cdk("synth", "-q", "-c", "env=registry", "-c", "registryFor=prod", "-o", str(tmp_path / "bad"))
    assert bad.returncode != 0 and "error: unknown environment 'prod'" in bad.stderr
