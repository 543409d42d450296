"""The LiveKit API key and the egress access key, read from Secrets Manager; Redactor masks them in messages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import (
    EGRESS_SECRET_KEY_ID_FIELD,
    EGRESS_SECRET_SECRET_FIELD,
    EnvNames,
    IamOutputs,
)
from callsaver_infra.app.secret_catalog import LIVEKIT_KEY_REF, LIVEKIT_SECRET_REF, PLACEHOLDER
from callsaver_infra.ops.push_egress.dispatch_rules import (
    mask_key,
)
from callsaver_infra.ops.push_egress.errors import HookError, NotReadyError


@dataclass(frozen=True, repr=False)
class LiveKitCredentials:
    """The LiveKit API key pair the hook signs its requests with."""

    api_key: str
    api_secret: str

    def __repr__(self) -> str:
        return f"LiveKitCredentials(api_key={mask_key(self.api_key)}, api_secret=<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class EgressCredentials:
    """The egress IAM user's access key, as the IAM stack stored it in Secrets Manager."""

    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:
        return f"EgressCredentials(access_key_id={mask_key(self.access_key_id)}, secret_access_key=<hidden>)"

    __str__ = __repr__


class Redactor:
    """Replaces every known secret (and key id) in a text before it is printed or raised."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def add(self, value: str, shown_as: str = "<hidden>") -> None:
        """Register a value to hide; very short values are ignored (they would mangle ordinary words)."""
        if len(value) >= 6:
            self._values[value] = shown_as

    def add_livekit(self, creds: LiveKitCredentials) -> None:
        """Register a LiveKit key pair."""
        self.add(creds.api_secret)
        self.add(creds.api_key, mask_key(creds.api_key))

    def add_egress(self, creds: EgressCredentials) -> None:
        """Register an egress access key."""
        self.add(creds.secret_access_key)
        self.add(creds.access_key_id, mask_key(creds.access_key_id))

    def __call__(self, text: str) -> str:
        # Longest first, so a secret containing another registered value is replaced whole.
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, self._values[value])
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} values)"


def _read_secret(client: Any, secret_id: str) -> str | None:
    try:
        value: str = client.get_secret_value(SecretId=secret_id)["SecretString"]
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code == "ResourceNotFoundException":
            return None
        raise HookError(f"could not read secret {secret_id}: {code}") from None
    return value


def read_livekit_credentials(client: Any, config: EnvironmentConfig) -> LiveKitCredentials:
    """The API key and secret from callsaver/{env}/backend/LIVEKIT_API_KEY and _SECRET; NotReadyError if unset."""
    names = EnvNames(config.name)
    values = []
    for ref in (LIVEKIT_KEY_REF, LIVEKIT_SECRET_REF):
        name = names.secret(ref)
        value = _read_secret(client, name)
        fix = f"callsaver-infra secrets set --env {config.name} {ref}"
        if value is None:
            raise NotReadyError(f"secret {name} does not exist: deploy {names.secrets_stack}, then run: {fix}")
        if value == PLACEHOLDER or not value.strip():
            state = "still the placeholder" if value == PLACEHOLDER else "empty"
            raise NotReadyError(f"secret {name} is {state}: set it with: {fix}")
        values.append(value.strip())
    return LiveKitCredentials(values[0], values[1])


def read_egress_credentials(client: Any, config: EnvironmentConfig, secret_arn: str) -> EgressCredentials:
    """The egress access key from the IAM stack's secret, JSON {"accessKeyId": ..., "secretAccessKey": ...}."""
    names = EnvNames(config.name)
    value = _read_secret(client, secret_arn)
    if value is None:
        raise NotReadyError(
            f"secret {secret_arn} (egress credentials, output {IamOutputs.CREDENTIALS_SECRET_ARN} of "
            f"{names.iam_stack}) does not exist: deploy it with make deploy ENV={config.name}"
        )
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    key_id = data.get(EGRESS_SECRET_KEY_ID_FIELD) if isinstance(data, dict) else None
    secret = data.get(EGRESS_SECRET_SECRET_FIELD) if isinstance(data, dict) else None
    if not (isinstance(key_id, str) and key_id and isinstance(secret, str) and secret):
        # Never quote the value: it is (or contains) the secret access key.
        raise HookError(
            f"secret {secret_arn} is not JSON with non-empty accessKeyId and secretAccessKey: it is written by "
            f"{names.iam_stack}; redeploy it (bump egress_writer.access_key_serial in config/{config.name}.toml to "
            "issue a new key)"
        )
    return EgressCredentials(key_id, secret)
