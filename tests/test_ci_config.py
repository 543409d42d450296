"""config/ci/github.toml: validation errors that name file, key, value and fix; the reserved name `ci`; app.py's
selection of the CI stack through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from callsaver_infra.app.ci_config import (
    CI_CONFIG_FILE,
    PLACEHOLDER_REPOSITORY,
    CiConfig,
    check_reserved_environment_names,
    load_ci_config,
)
from callsaver_infra.app.config import ConfigError, EnvironmentConfig, load_environments
from callsaver_infra.app.stacks.ci import add_ci_stack
from tests.helpers import CI_FIXTURE, CONFIG_DIR, CliSynth, cdk, new_app

VALID = """\
repository = "callsaver/callsaver-infra"
account = "836347236108"
region = "us-west-1"
main_branch = "main"
deploy_environments = ["staging", "production"]
production_approval_environment = "production"
create_oidc_provider = true
"""


def _load(tmp_path: Path, text: str, environments: dict[str, EnvironmentConfig]) -> CiConfig:
    path = tmp_path / "github.toml"
    path.write_text(text)
    return load_ci_config(path, environments)


def _error(tmp_path: Path, text: str, environments: dict[str, EnvironmentConfig]) -> str:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text, environments)
    return str(e.value)


def test_committed_ci_config_loads(environments: dict[str, EnvironmentConfig]) -> None:
    ci = load_ci_config(CONFIG_DIR / CI_CONFIG_FILE, environments)
    assert ci.deploy_environments == ("staging", "production")
    assert ci.deploy_subject("staging") == f"repo:{ci.repository}:ref:refs/heads/main"
    assert ci.deploy_subject("production") == f"repo:{ci.repository}:environment:production"
    assert ci.pull_request_subject == f"repo:{ci.repository}:pull_request"


def test_valid_text_loads_and_is_frozen(tmp_path: Path, environments: dict[str, EnvironmentConfig]) -> None:
    ci = _load(tmp_path, VALID, environments)
    with pytest.raises(ValueError):
        ci.repository = "other/repo"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'repository = "callsaver/callsaver-infra"',
            'repository = "https://github.com/callsaver/callsaver-infra"',
            "repository = 'https://github.com/callsaver/callsaver-infra': must be a GitHub repository \"OWNER/REPO\"",
        ),
        ('repository = "callsaver/callsaver-infra"', 'repository = "callsaver/*"', "repository = 'callsaver/*'"),
        ('account = "836347236108"', "account = 836347236108", "account = 836347236108: must be a 12-digit"),
        ('region = "us-west-1"', 'region = "us-west-9"', "region = 'us-west-9': is not an AWS region"),
        ('main_branch = "main"', 'main_branch = "refs/heads/main"', "no refs/heads/ prefix"),
        ('main_branch = "main"', 'main_branch = "release/*"', "main_branch = 'release/*'"),
        ("create_oidc_provider = true", 'create_oidc_provider = "yes"', "create_oidc_provider = 'yes'"),
        (
            'deploy_environments = ["staging", "production"]',
            'deploy_environments = ["staging", "staging", "production"]',
            "lists an environment more than once",
        ),
        ('deploy_environments = ["staging", "production"]', "deploy_environments = []", "at least one environment"),
        (
            'production_approval_environment = "production"',
            'production_approval_environment = "prod"',
            "production_approval_environment = 'prod' is not one of deploy_environments",
        ),
        (
            'production_approval_environment = "production"',
            'production_approval_environment = "production"\nbranch = "main"',
            "unknown key 'branch'; allowed keys here: repository, account",
        ),
        ('main_branch = "main"\n', "", "missing key 'main_branch' (The branch whose pushes deploy"),
    ],
)
def test_invalid_values_name_file_key_value_and_fix(
    tmp_path: Path, environments: dict[str, EnvironmentConfig], old: str, new: str, expected: str
) -> None:
    assert old in VALID
    message = _error(tmp_path, VALID.replace(old, new), environments)
    assert message.startswith(f"{tmp_path / 'github.toml'}: invalid configuration")
    assert expected in message


def test_every_problem_is_reported_at_once(tmp_path: Path, environments: dict[str, EnvironmentConfig]) -> None:
    text = VALID.replace('"836347236108"', "1").replace('"us-west-1"', '"nowhere"')
    message = _error(tmp_path, text, environments)
    assert "(2 problem(s))" in message and "account = 1" in message and "region = 'nowhere'" in message


def test_deploy_environments_must_exist(tmp_path: Path, environments: dict[str, EnvironmentConfig]) -> None:
    message = _error(tmp_path, VALID.replace('"staging", "production"', '"production", "no-such-env"'), environments)
    known = ", ".join(sorted(environments))
    assert f"deploy_environments: 'no-such-env' has no environment file; known environments: {known}" in message
    assert "Fix: add config/no-such-env.toml or remove it from the list" in message


def test_deploy_environments_must_be_in_the_ci_account(
    tmp_path: Path, environments: dict[str, EnvironmentConfig]
) -> None:
    message = _error(tmp_path, VALID.replace('"staging", "production"', '"production", "local"'), environments)
    assert "'local' is in account 123456789012, the CI stack in 836347236108" in message
    assert "Fix: deploy the CI stack into that account too" in message


def test_missing_and_broken_files(tmp_path: Path, environments: dict[str, EnvironmentConfig]) -> None:
    with pytest.raises(ConfigError, match=r"github.toml: file not found \(the CI configuration"):
        load_ci_config(tmp_path / "github.toml", environments)
    assert "not valid TOML" in _error(tmp_path, "repository = ", environments)


def test_an_environment_named_ci_is_rejected(tmp_path: Path) -> None:
    shutil.copy(CONFIG_DIR / "staging.toml", tmp_path / "staging.toml")
    text = (CONFIG_DIR / "staging.toml").read_text().replace("-staging", "-ci").replace('"cstaging"', '"cci"')
    (tmp_path / "ci.toml").write_text(text)
    envs = load_environments(tmp_path)  # a valid environment file on its own...
    with pytest.raises(ConfigError) as e:
        check_reserved_environment_names(tmp_path, envs)  # ...but its name selects the CI stack
    assert str(e.value) == (
        f"{tmp_path / 'ci.toml'}: the environment name 'ci' is reserved for the CI stack (`cdk synth -c env=ci`, "
        f"configured in {tmp_path / 'ci' / 'github.toml'}); rename the file"
    )
    check_reserved_environment_names(CONFIG_DIR, load_environments(CONFIG_DIR))  # the committed files pass


def _stacks(outdir: Path) -> list[str]:
    manifest = json.loads((outdir / "manifest.json").read_text())
    return sorted(k for k, v in manifest["artifacts"].items() if v["type"] == "aws:cloudformation:stack")


def test_cli_env_ci_synthesizes_only_the_ci_stack(tmp_path: Path) -> None:
    result = cdk("synth", "-q", "-c", "env=ci", "-c", f"ciConfig={CI_FIXTURE}", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert _stacks(tmp_path) == ["Callsaver-CI"]


def test_cli_without_env_synthesizes_every_environment_the_ci_and_the_registry_stack(tmp_path: Path) -> None:
    result = cdk("synth", "-q", "-c", f"ciConfig={CI_FIXTURE}", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    # Each environment, the CI stack and the registry stack in its own Stage (a nested assembly): none is
    # top-level, so a bare `cdk deploy --all` selects none of them.
    assert _stacks(tmp_path) == []
    assert _staged(tmp_path) == sorted(
        [("ci", "Callsaver-CI"), ("registry", "Callsaver-Registry"), *_environment_stacks()]
    )


def _environment_stacks() -> list[tuple[str, str]]:
    envs = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
    return [
        (env, f"Callsaver-{kind}-{env}")
        for env in envs
        for kind in ("Agent", "IAM", "Monitoring", "Secrets", "Storage")
    ]


def _staged(outdir: Path) -> list[tuple[str, str]]:
    """(Stage, stack name) of every stack in the nested assemblies of a full synth."""
    manifest = json.loads((outdir / "manifest.json").read_text())
    staged = []
    for artifact in manifest["artifacts"].values():
        if artifact["type"] == "cdk:cloud-assembly":
            nested = json.loads((outdir / artifact["properties"]["directoryName"] / "manifest.json").read_text())
            stage = artifact["properties"]["displayName"]
            staged += [
                (stage, v["properties"]["stackName"])
                for v in nested["artifacts"].values()
                if v["type"] == "aws:cloudformation:stack"
            ]
    return sorted(staged)


def test_committed_ci_file_still_holds_the_placeholder(environments: dict[str, EnvironmentConfig]) -> None:
    """The template repository ships the placeholder; each deployment sets its own repository."""
    ci = load_ci_config(CONFIG_DIR / CI_CONFIG_FILE, environments)
    assert ci.repository == PLACEHOLDER_REPOSITORY
    assert load_ci_config(CI_FIXTURE, environments).repository != PLACEHOLDER_REPOSITORY


def test_placeholder_repository_fails_synth_of_the_ci_stack(tmp_path: Path) -> None:
    result = cdk("synth", "-q", "-c", "env=ci", "-o", str(tmp_path))
    assert result.returncode != 0 and "Subprocess exited with error 2" in result.stderr
    assert f"{CONFIG_DIR / CI_CONFIG_FILE}: key 'repository' is still the placeholder" in result.stderr
    assert 'Fix: set repository to your "OWNER/REPO", exactly as GitHub spells it' in result.stderr


def test_placeholder_repository_leaves_the_ci_stack_out_of_a_full_synth(cli_synth_all: CliSynth) -> None:
    result, outdir = cli_synth_all.result, cli_synth_all.outdir
    assert result.returncode == 0, result.stderr
    assert _stacks(outdir) == []
    assert _staged(outdir) == sorted([("registry", "Callsaver-Registry"), *_environment_stacks()])
    assert "warning: the CI stack (ci) is not synthesized" in result.stderr


def test_add_ci_stack_refuses_the_placeholder(environments: dict[str, EnvironmentConfig], tmp_path: Path) -> None:
    ci = load_ci_config(CONFIG_DIR / CI_CONFIG_FILE, environments)
    with pytest.raises(ConfigError, match="is still the placeholder 'callsaver/callsaver-infra'"):
        add_ci_stack(new_app(tmp_path), ci, environments)
