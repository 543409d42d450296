"""CI configuration: which GitHub repository may deploy which environment, from `config/ci/github.toml`.

It lives in a subdirectory because every `config/*.toml` is an environment. The name `ci` is reserved for the CI
stack (`cdk synth -c env=ci`), so an environment file `config/ci.toml` is rejected. Errors name the file, the key,
the bad value and the fix, like the environment files' (callsaver_infra/app/config.py).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from callsaver_infra.app.config import AccountId, AwsRegion, ConfigError, EnvironmentConfig, StrTuple, config_error

CI_ENV_NAME = "ci"
# The CI file, relative to the config directory.
CI_CONFIG_FILE = Path("ci") / "github.toml"

# The repository config/ci/github.toml ships with. Roles trusting it would trust whoever owns that name on GitHub,
# so the CI stack refuses to synthesize until it is replaced (fail closed).
PLACEHOLDER_REPOSITORY = "callsaver/callsaver-infra"

# GitHub: owner 1-39 of [A-Za-z0-9-] not starting with '-'; repository 1-100 of [A-Za-z0-9._-], not "." or "..".
REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/(?!\.{1,2}$)[A-Za-z0-9._-]{1,100}$")
# A branch name that is safe inside an OIDC subject (no wildcards, no spaces).
BRANCH_PATTERN = re.compile(r"^[A-Za-z0-9._/-]{1,100}$")
# GitHub environment names allowed in an OIDC subject (no wildcards).
GITHUB_ENVIRONMENT_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,255}$")


class CiConfig(BaseModel):
    """Who may assume the CI roles (repository, branch, approval environment) and which environments they deploy."""

    # strict: TOML is typed, so "30" where 30 is meant is a mistake worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    repository: str = Field(description='GitHub repository as "OWNER/REPO", exactly as GitHub spells it')
    account: AccountId = Field(description="12-digit AWS account id of the CI stack, in quotes")
    region: AwsRegion = Field(description="AWS region of the CI stack, e.g. us-west-1")
    main_branch: str = Field(description="The branch whose pushes deploy the environments without approval")
    deploy_environments: StrTuple = Field(
        description="Environments (config/<env>.toml) the workflows diff and deploy, e.g. staging, production"
    )
    production_approval_environment: str = Field(
        description="The GitHub environment (required reviewers) that gates the deploy of the environment of the "
        "same name; its deploy role trusts only jobs running in it"
    )
    create_oidc_provider: bool = Field(
        description="Create the account's GitHub OIDC provider (false: the account already has one; reuse it)"
    )

    @field_validator("repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        if not REPOSITORY_PATTERN.fullmatch(v):
            raise ValueError('must be a GitHub repository "OWNER/REPO", e.g. "callsaver/callsaver-infra"')
        return v

    @field_validator("main_branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        if not BRANCH_PATTERN.fullmatch(v) or v.startswith("refs/"):
            raise ValueError('must be a branch name such as "main" (no refs/heads/ prefix, no wildcards)')
        return v

    @field_validator("production_approval_environment")
    @classmethod
    def _github_environment(cls, v: str) -> str:
        if not GITHUB_ENVIRONMENT_PATTERN.fullmatch(v):
            raise ValueError("must be a GitHub environment name of letters, digits, '.', '_' and '-'")
        return v

    @field_validator("deploy_environments")
    @classmethod
    def _deploy_environments(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError('must list at least one environment, e.g. ["staging", "production"]')
        if len(set(v)) != len(v):
            raise ValueError("lists an environment more than once; list each once")
        return v

    @model_validator(mode="after")
    def _approval_is_deployed(self) -> CiConfig:
        if self.production_approval_environment not in self.deploy_environments:
            raise ValueError(
                f"production_approval_environment = {self.production_approval_environment!r} is not one of "
                f"deploy_environments {list(self.deploy_environments)}; name the environment the approval gates"
            )
        return self

    @property
    def owner(self) -> str:
        """The repository's owner (user or organization)."""
        return self.repository.split("/")[0]

    def needs_approval(self, env: str) -> bool:
        """Whether env is deployed only from the approval-gated GitHub environment (else: from the main branch)."""
        return env == self.production_approval_environment

    def subject(self, qualifier: str) -> str:
        """A GitHub OIDC `sub` claim of this repository: subject("pull_request") -> repo:OWNER/REPO:pull_request."""
        return f"repo:{self.repository}:{qualifier}"

    @property
    def main_branch_subject(self) -> str:
        """The `sub` of jobs running on the main branch without a GitHub environment."""
        return self.subject(f"ref:refs/heads/{self.main_branch}")

    @property
    def pull_request_subject(self) -> str:
        """The `sub` of pull_request-triggered jobs."""
        return self.subject("pull_request")

    def deploy_subject(self, env: str) -> str:
        """The `sub` env's deploy role trusts: the approval environment's, or the main branch's."""
        if self.needs_approval(env):
            return self.subject(f"environment:{self.production_approval_environment}")
        return self.main_branch_subject


def placeholder_problem(path: Path, config: CiConfig) -> str | None:
    """Why the CI stack must not be synthesized from this file (its repository is still the placeholder), or None."""
    if config.repository != PLACEHOLDER_REPOSITORY:
        return None
    return (
        f"{path}: key 'repository' is still the placeholder {PLACEHOLDER_REPOSITORY!r}: the CI roles would trust "
        'whatever repository holds that name on GitHub. Fix: set repository to your "OWNER/REPO", exactly as '
        "GitHub spells it (the OIDC subject is case-sensitive)"
    )


def require_real_repository(path: Path, config: CiConfig) -> None:
    """Raise ConfigError when the CI file still names the placeholder repository."""
    problem = placeholder_problem(path, config)
    if problem:
        raise ConfigError(problem)


def check_reserved_environment_names(config_dir: Path, envs: Mapping[str, EnvironmentConfig]) -> None:
    """Reject an environment named `ci`: `-c env=ci` selects the CI stack."""
    if CI_ENV_NAME in envs:
        raise ConfigError(
            f"{config_dir / (CI_ENV_NAME + '.toml')}: the environment name {CI_ENV_NAME!r} is reserved for the CI "
            f"stack (`cdk synth -c env={CI_ENV_NAME}`, configured in {config_dir / CI_CONFIG_FILE}); "
            "rename the file"
        )


def load_ci_config(path: Path, envs: Mapping[str, EnvironmentConfig]) -> CiConfig:
    """Read and validate the CI file against the loaded environments; raise ConfigError naming file, key and fix."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (the CI configuration; see docs/ci-cd.md)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        config = CiConfig.model_validate(data)
    except ValidationError as e:
        raise config_error(path, CiConfig, e) from None
    problems = []
    for env in config.deploy_environments:
        if env not in envs:
            problems.append(
                f"deploy_environments: {env!r} has no environment file; known environments: "
                f"{', '.join(sorted(envs))}. Fix: add config/{env}.toml or remove it from the list"
            )
        elif envs[env].account != config.account:
            # The roles live in this account and assume the CDK bootstrap roles of each environment: a second
            # account would need its bootstrap to trust this one, which this stack does not set up.
            problems.append(
                f"deploy_environments: {env!r} is in account {envs[env].account}, the CI stack in {config.account}. "
                "Fix: deploy the CI stack into that account too (one CI config per account), or remove it"
            )
    if problems:
        lines = [f"{path}: invalid configuration ({len(problems)} problem(s)):"]
        lines += [f"  - {p}" for p in problems]
        raise ConfigError("\n".join(lines))
    return config
