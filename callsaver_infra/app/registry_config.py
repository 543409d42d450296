"""Registry configuration: the agent image's ECR repository and who may push to it, from `config/ci/registry.toml`.

Account-level like the CI file (hence under `config/ci/`). The name `registry` is reserved for the registry stack
(`cdk synth -c env=registry`), so an environment file `config/registry.toml` is rejected. Errors name the file, the
key, the bad value and the fix, like the environment files' (callsaver_infra/app/config.py).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from callsaver_infra.app.config import (
    ECR_REPOSITORY_PATTERN,
    AccountId,
    AwsRegion,
    ConfigError,
    EnvironmentConfig,
    config_error,
)

REGISTRY_ENV_NAME = "registry"
# The registry file, relative to the config directory.
REGISTRY_CONFIG_FILE = Path("ci") / "registry.toml"
# ECR lifecycle rules count at most 10,000 images per repository (ECR service quota "images per repository").
MAX_KEEP_TAGGED = 10_000

# An IAM role ARN in any partition; no wildcards (one identity, not a family of them).
ROLE_ARN_PATTERN = re.compile(r"^arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
# A GitHub OIDC `sub` of one repository: repo:OWNER/REPO:<ref:refs/heads/BRANCH | ref:refs/tags/TAG |
# environment:NAME>, no wildcards (IAM compares it with StringEquals).
GITHUB_SUBJECT_PATTERN = re.compile(
    r"^repo:[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}:"
    r"(?:ref:refs/(?:heads|tags)/[A-Za-z0-9._/-]{1,100}|environment:[A-Za-z0-9._-]{1,255})$"
)


class RegistryConfig(BaseModel):
    """The agent image repository: where it lives, how many tagged images it keeps, and its one pusher."""

    # strict: TOML is typed, so "30" where 30 is meant is a mistake worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    account: AccountId = Field(description="12-digit AWS account id of the registry, in quotes")
    region: AwsRegion = Field(description="AWS region of the registry, e.g. us-west-1")
    repository_name: str = Field(description="The ECR repository of the agent image, e.g. callsaver-agent")
    keep_tagged_images: int = Field(
        ge=1, le=MAX_KEEP_TAGGED, description="How many of the most recent tagged images the lifecycle keeps"
    )
    push_role_arn: str | None = Field(
        default=None, description="The agent repository's CI role allowed to push (set this or push_github_subject)"
    )
    push_github_subject: str | None = Field(
        default=None,
        description="The agent repository's GitHub OIDC subject allowed to push through a role this stack creates "
        "(set this or push_role_arn)",
    )

    @field_validator("repository_name")
    @classmethod
    def _repository(cls, v: str) -> str:
        if not ECR_REPOSITORY_PATTERN.fullmatch(v) or len(v) > 256:
            raise ValueError("is not an ECR repository name; use lowercase letters, digits and . _ - /")
        return v

    @field_validator("push_role_arn")
    @classmethod
    def _role_arn(cls, v: str | None) -> str | None:
        if v is not None and not ROLE_ARN_PATTERN.fullmatch(v):
            raise ValueError(
                'is not one IAM role ARN; write it as "arn:aws:iam::<12-digit account>:role/<name>" (no wildcards)'
            )
        return v

    @field_validator("push_github_subject")
    @classmethod
    def _subject(cls, v: str | None) -> str | None:
        if v is not None and not GITHUB_SUBJECT_PATTERN.fullmatch(v):
            raise ValueError(
                'is not one GitHub OIDC subject; write e.g. "repo:OWNER/callsaver-agent:ref:refs/heads/main" or '
                '"repo:OWNER/REPO:environment:NAME" (no wildcards)'
            )
        return v

    @model_validator(mode="after")
    def _one_pusher(self) -> RegistryConfig:
        if (self.push_role_arn is None) == (self.push_github_subject is None):
            raise ValueError(
                "set exactly one of push_role_arn and push_github_subject: the one identity that pushes agent images"
            )
        return self


def check_reserved_registry_name(config_dir: Path, envs: Mapping[str, EnvironmentConfig]) -> None:
    """Reject an environment named `registry`: `-c env=registry` selects the registry stack."""
    if REGISTRY_ENV_NAME in envs:
        raise ConfigError(
            f"{config_dir / (REGISTRY_ENV_NAME + '.toml')}: the environment name {REGISTRY_ENV_NAME!r} is reserved "
            f"for the registry stack (`cdk synth -c env={REGISTRY_ENV_NAME}`, configured in "
            f"{config_dir / REGISTRY_CONFIG_FILE}); rename the file"
        )


def load_registry_config(path: Path, envs: Mapping[str, EnvironmentConfig]) -> RegistryConfig:
    """Read and validate the registry file against the environments; raise ConfigError naming file, key and fix.

    Every environment in the registry's account and region must run its agent from this repository: otherwise
    its deploy would check (and pull from) a repository nothing creates."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (the agent image registry; see docs/runbooks.md)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        config = RegistryConfig.model_validate(data)
    except ValidationError as e:
        raise config_error(path, RegistryConfig, e) from None
    problems = [
        f"repository_name = {config.repository_name!r}: environment {env.name!r} (same account and region) runs "
        f"its agent from {env.agent.image_repository!r}. Fix: use one repository name in both files"
        for env in envs.values()
        if (env.account, env.region) == (config.account, config.region)
        and env.agent.image_repository != config.repository_name
    ]
    if problems:
        lines = [f"{path}: invalid configuration ({len(problems)} problem(s)):"]
        lines += [f"  - {p}" for p in problems]
        raise ConfigError("\n".join(lines))
    return config


def registry_for(config: RegistryConfig, env: EnvironmentConfig) -> RegistryConfig:
    """The same registry placed in env's account and region (`-c registryFor=ENV`): for an environment in another
    account, or the local rehearsal's endpoint."""
    if env.agent.image_repository != config.repository_name:
        raise ConfigError(
            f"context registryFor={env.name}: environment {env.name!r} runs its agent from "
            f"{env.agent.image_repository!r}, the registry holds {config.repository_name!r}; use one name in both"
        )
    return config.model_copy(update={"account": env.account, "region": env.region})
