"""The deployed stacks' outputs the hook needs (bucket, egress key, its secret), from a file or CloudFormation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import (
    EnvNames,
    IamOutputs,
    StorageOutputs,
)
from callsaver_infra.ops.push_egress.errors import HookError, NotReadyError


@dataclass(frozen=True)
class DeployedOutputs:
    """What the hook needs from the deployed stacks, and where it was read from."""

    bucket_name: str
    bucket_region: str
    credentials_secret_arn: str
    access_key_id: str
    source: str


def _required_outputs(config: EnvironmentConfig) -> list[tuple[str, str]]:
    names = EnvNames(config.name)
    return [
        (names.storage_stack, StorageOutputs.BUCKET_NAME),
        (names.storage_stack, StorageOutputs.BUCKET_REGION),
        (names.iam_stack, IamOutputs.CREDENTIALS_SECRET_ARN),
        (names.iam_stack, IamOutputs.ACCESS_KEY_ID),
    ]


def _pick_outputs(
    config: EnvironmentConfig, stacks: Mapping[str, Mapping[str, Any]], source: str, status: Mapping[str, str]
) -> DeployedOutputs:
    values = []
    for stack, key in _required_outputs(config):
        outputs = stacks.get(stack)
        if outputs is None:
            raise NotReadyError(
                f"stack {stack} is not deployed ({source} has no such stack): run make deploy ENV={config.name}; "
                f"if the environment was destroyed (its bucket and secrets are retained, so a plain deploy fails), "
                f'first run callsaver-infra adopt-retained --env {config.name} (docs/runbooks.md, "Redeploying after a '
                'destroy")'
            )
        value = outputs.get(key)
        if not isinstance(value, str) or not value:
            state = f" (status {status[stack]})" if stack in status else ""
            raise NotReadyError(
                f"stack {stack}{state} has no output {key} ({source}): deploy it with make deploy ENV={config.name}"
            )
        values.append(value)
    return DeployedOutputs(values[0], values[1], values[2], values[3], source)


def outputs_from_file(path: Path, config: EnvironmentConfig) -> DeployedOutputs:
    """Outputs from the JSON `cdk deploy --outputs-file` writes: {"StackName": {"OutputKey": "value"}}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotReadyError(
            f"outputs file {path} not found: run make deploy ENV={config.name}, or leave out --outputs-file to "
            "read the outputs from CloudFormation"
        ) from None
    except ValueError as e:
        raise HookError(f"outputs file {path} is not JSON ({e}); it is written by cdk deploy --outputs-file") from None
    if not isinstance(data, dict):
        raise HookError(f"outputs file {path} is not a JSON object of stacks; it is written by cdk deploy")
    stacks = {name: value for name, value in data.items() if isinstance(value, dict)}
    return _pick_outputs(config, stacks, f"outputs file {path}", {})


def outputs_from_cloudformation(client: Any, config: EnvironmentConfig) -> DeployedOutputs:
    """Outputs from CloudFormation DescribeStacks, in the environment's account and region."""
    stacks: dict[str, dict[str, str]] = {}
    status: dict[str, str] = {}
    for stack in dict.fromkeys(stack for stack, _ in _required_outputs(config)):
        try:
            described = client.describe_stacks(StackName=stack)["Stacks"][0]
        except ClientError as e:
            if e.response["Error"]["Code"] == "ValidationError" and "does not exist" in str(e):
                continue  # reported below, naming the stack
            raise HookError(f"CloudFormation DescribeStacks {stack}: {e.response['Error']['Code']}") from None
        status[stack] = described["StackStatus"]
        stacks[stack] = {o["OutputKey"]: o.get("OutputValue", "") for o in described.get("Outputs", [])}
    where = f"CloudFormation in account {config.account}, {config.region}"
    return _pick_outputs(config, stacks, where, status)
