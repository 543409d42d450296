"""Check and set an environment's Secrets Manager secrets without ever showing a value."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EnvNames
from callsaver_infra.app.secret_catalog import PLACEHOLDER, SECRETS, SecretSpec, find


class SecretsError(Exception):
    """A secrets operation cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class SecretStatus:
    """The state of one secret: ok, placeholder, missing, or (for config values) differs from config."""

    spec: SecretSpec
    name: str
    state: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def secret_statuses(client: Any, config: EnvironmentConfig) -> list[SecretStatus]:
    """Read every required secret of config's environment and classify it; values are compared, never returned."""
    names = EnvNames(config.name)
    statuses = []
    for spec in SECRETS:
        name = names.secret(spec.ref)
        value = _read(client, name)
        set_cmd = f"callsaver-infra secrets set --env {config.name} {spec.ref}"
        if value is None:
            status = SecretStatus(spec, name, "missing", f"does not exist: deploy {names.secrets_stack}")
        elif spec.from_config is not None:
            if value == spec.from_config(config):
                status = SecretStatus(spec, name, "ok", "config value, matches config")
            else:
                status = SecretStatus(
                    spec, name, "differs", f"differs from config/{config.name}.toml: deploy {names.secrets_stack}"
                )
        elif value == PLACEHOLDER:
            status = SecretStatus(spec, name, "placeholder", f"still the placeholder: {set_cmd}")
        elif not value.strip():
            status = SecretStatus(spec, name, "placeholder", f"empty: {set_cmd}")
        else:
            status = SecretStatus(spec, name, "ok", "set")
        statuses.append(status)
    return statuses


def format_statuses(config: EnvironmentConfig, statuses: Iterable[SecretStatus]) -> str:
    """A table of states and next steps, one line per secret."""
    statuses = list(statuses)
    width = max(len(s.spec.ref) for s in statuses)
    lines = [f"Secrets of {config.name} (account {config.account}, {config.region}):"]
    for s in statuses:
        lines.append(f"  {s.spec.ref:<{width}}  {s.state.upper() if not s.ok else 'ok':<11}  {s.detail}")
    bad = sum(not s.ok for s in statuses)
    lines.append(f"{len(statuses) - bad} of {len(statuses)} ready" + (f"; {bad} need attention." if bad else "."))
    return "\n".join(lines)


def check_settable(config: EnvironmentConfig, ref: str) -> SecretSpec:
    """The spec operators may set under ref, or SecretsError saying why not."""
    spec = find(ref)
    if spec is None:
        known = ", ".join(s.ref for s in SECRETS if not s.owned_by_stack)
        raise SecretsError(f"unknown secret {ref!r}; the secrets you can set are: {known}")
    if spec.owned_by_stack:
        raise SecretsError(
            f"{ref} is a configuration value owned by {EnvNames(config.name).secrets_stack}: change it in "
            f"config/{config.name}.toml and deploy"
        )
    return spec


def validate_value(ref: str, value: str) -> str:
    """The value to store (surrounding whitespace, such as a pasted newline, removed), or SecretsError."""
    value = value.strip()
    if not value:
        raise SecretsError(f"no value given for {ref}: nothing was changed")
    if value == PLACEHOLDER:
        raise SecretsError(f"refusing to store the placeholder as {ref}")
    lines = value.splitlines()
    if len(lines) > 1:
        # Every secret in the catalog is one line (an API key, a URL, a trunk id); a second line is a paste of
        # two values or of a file, and the agent would read it whole.
        raise SecretsError(
            f"the value for {ref} has {len(lines)} lines; every secret here is a single line: nothing was changed "
            "(paste only the value)"
        )
    return value


def set_secret(client: Any, config: EnvironmentConfig, spec: SecretSpec, value: str) -> str:
    """Store value as the secret's new current version; returns the version id."""
    name = EnvNames(config.name).secret(spec.ref)
    try:
        response = client.put_secret_value(SecretId=name, SecretString=value)
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            raise SecretsError(
                f"secret {name} does not exist: deploy {EnvNames(config.name).secrets_stack} first"
            ) from None
        raise SecretsError(f"could not set {name}: {e.response['Error']['Code']}") from None
    version: str = response["VersionId"]
    return version


def _read(client: Any, name: str) -> str | None:
    try:
        value: str = client.get_secret_value(SecretId=name)["SecretString"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        code = e.response["Error"]["Code"]
        if code in ("AccessDeniedException", "AccessDenied"):
            # The secrets' resource policies deny every reader but three roles, whatever the caller's IAM policy.
            raise SecretsError(
                f"could not read {name}: {code}. Only the agent's execution role, the CI deploy role and the "
                "break-glass role ([security] break_glass_role_arn) may read secrets: run this with the "
                "break-glass role's credentials (docs/security.md)"
            ) from None
        raise SecretsError(f"could not read {name}: {code}") from None
    return value
