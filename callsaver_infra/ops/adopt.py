"""Bring an environment back after `cdk destroy` without losing anything: adopt the retained resources.

`cdk destroy` keeps every resource with `DeletionPolicy: Retain` (the recording bucket, its policy, KMS key and
alias, the read-audit log bucket, the 11 secrets, the agent's log group). Their fixed names then block a plain
redeploy ("already exists"). For each stack that is not deployed but whose retained resources still exist, this
creates the stack by a CloudFormation IMPORT
change set holding exactly those resources, identified by the names from config (what `cdk import` does), so no
recording or secret value is touched; `make deploy` then adds everything else.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EnvNames

# The identifier CloudFormation imports each retained type by, read from the resource's template properties.
IDENTIFIERS: dict[str, tuple[str, str]] = {
    "AWS::S3::Bucket": ("BucketName", "BucketName"),
    "AWS::S3::BucketPolicy": ("Bucket", "Bucket"),
    "AWS::SecretsManager::Secret": ("Id", "Name"),
    "AWS::Logs::LogGroup": ("LogGroupName", "LogGroupName"),
    # A key has no name: it is found by the retained alias of the same template that targets it.
    "AWS::KMS::Key": ("KeyId", "AliasName"),
    "AWS::KMS::Alias": ("AliasName", "AliasName"),
}


class AdoptError(Exception):
    """A stack cannot be adopted; the message says why and what to do."""


@dataclass(frozen=True)
class Adoption:
    """One stack to create by import: its retained resources and their identifiers."""

    stack: str
    resources: list[dict[str, Any]]
    template: dict[str, Any]


def retained_resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The template's resources that outlive a stack deletion."""
    return {k: v for k, v in template.get("Resources", {}).items() if v.get("DeletionPolicy") == "Retain"}


def plan_adoption(config: EnvironmentConfig, assembly: Path, aws: Callable[[str], Any]) -> list[Adoption]:
    """For each of the environment's stacks (deploy order) that does not exist but has retained resources that do,
    the import to run. Reads the synthesized templates from assembly (`cdk synth -c env=<env>`)."""
    names = EnvNames(config.name)
    cfn = aws("cloudformation")
    plans = []
    for stack in (names.storage_stack, names.iam_stack, names.secrets_stack, names.agent_stack):
        path = assembly / f"{stack}.template.json"
        if not path.exists():
            raise AdoptError(f"{path} is missing: run `cdk synth -c env={config.name}` (make synth ENV={config.name})")
        template = json.loads(path.read_text())
        status = _stack_status(cfn, stack)
        if status is not None and status != "DELETE_COMPLETE":
            if status == "ROLLBACK_COMPLETE":
                raise AdoptError(
                    f"{stack} is ROLLBACK_COMPLETE (a failed create): delete it first "
                    f"(aws cloudformation delete-stack --stack-name {stack}; its retained resources stay), then "
                    "run this again"
                )
            continue  # deployed: nothing to adopt
        found = []
        for logical_id, resource in retained_resources(template).items():
            if resource["Type"] not in IDENTIFIERS:
                raise AdoptError(f"{stack}: no import identifier known for {resource['Type']} ({logical_id})")
            key, prop = IDENTIFIERS[resource["Type"]]
            if resource["Type"] == "AWS::KMS::Key":
                name = _alias_of(template, logical_id)
                if name is None:
                    raise AdoptError(f"{stack}: the retained key {logical_id} has no retained alias to find it by")
            else:
                name = resource["Properties"][prop]
            if isinstance(name, dict) and "Ref" in name:  # the policy names its bucket by Ref
                name = template["Resources"][name["Ref"]]["Properties"]["BucketName"]
            identifier = _existing(aws, resource["Type"], name)
            if identifier is not None:
                found.append(
                    {
                        "ResourceType": resource["Type"],
                        "LogicalResourceId": logical_id,
                        "ResourceIdentifier": {key: identifier},
                    }
                )
        if found:
            adopted = {r["LogicalResourceId"] for r in found}
            # An import may only add the imported resources; outputs and everything else come with the next deploy.
            body = {k: v for k, v in template.items() if k not in ("Resources", "Outputs")}
            body["Resources"] = {k: v for k, v in template["Resources"].items() if k in adopted}
            plans.append(Adoption(stack, found, body))
    return plans


def adopt(
    config: EnvironmentConfig,
    assembly: Path,
    aws: Callable[[str], Any],
    *,
    dry_run: bool = False,
    out: Callable[[str], None] = print,
    timeout: float = 600,
) -> list[Adoption]:
    """Run every planned import (or, dry run, print it); returns the plans."""
    plans = plan_adoption(config, assembly, aws)
    if not plans:
        out(f"{config.name}: nothing to adopt (no stack is missing while its retained resources exist)")
    cfn = aws("cloudformation")
    for plan in plans:
        listed = ", ".join(
            f"{r['ResourceType']} {next(iter(r['ResourceIdentifier'].values()))}" for r in plan.resources
        )
        if dry_run:
            out(f"dry run: would create {plan.stack} by importing {listed}")
            continue
        out(f"{plan.stack}: importing {listed}")
        change_set = f"adopt-retained-{int(time.time())}"
        cfn.create_change_set(
            StackName=plan.stack,
            ChangeSetName=change_set,
            ChangeSetType="IMPORT",
            TemplateBody=json.dumps(plan.template),
            ResourcesToImport=plan.resources,
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
        read_change_set = functools.partial(cfn.describe_change_set, StackName=plan.stack, ChangeSetName=change_set)
        _wait(read_change_set, "Status", "CREATE_COMPLETE", timeout)
        cfn.execute_change_set(StackName=plan.stack, ChangeSetName=change_set)
        _wait(functools.partial(_stack, cfn, plan.stack), "StackStatus", "IMPORT_COMPLETE", timeout)
        out(f"{plan.stack}: IMPORT_COMPLETE")
    if plans and not dry_run:
        out(f"next: make deploy ENV={config.name} (creates the rest; the imported resources are kept as they are)")
    return plans


def _wait(read: Callable[[], dict[str, Any]], key: str, done: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = read()
        if state.get(key) == done:
            return
        if str(state.get(key, "")).endswith(("FAILED", "ROLLBACK_COMPLETE")) or time.monotonic() > deadline:
            raise AdoptError(
                f"import ended {state.get(key)}: {state.get('StatusReason') or state.get('StackStatusReason')}"
            )
        time.sleep(1)


def _stack(cfn: Any, stack: str) -> dict[str, Any]:
    described: dict[str, Any] = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    return described


def _stack_status(cfn: Any, stack: str) -> str | None:
    try:
        return str(cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"])
    except ClientError as e:
        if "does not exist" in str(e):
            return None
        raise


def _alias_of(template: dict[str, Any], key_logical_id: str) -> str | None:
    """The name of the retained alias in template that targets the key key_logical_id."""
    for resource in retained_resources(template).values():
        target = resource.get("Properties", {}).get("TargetKeyId")
        if (
            resource["Type"] == "AWS::KMS::Alias"
            and isinstance(target, dict)
            and key_logical_id in (target.get("Ref"), (target.get("Fn::GetAtt") or [None])[0])
        ):
            return str(resource["Properties"]["AliasName"])
    return None


def _existing(aws: Callable[[str], Any], resource_type: str, name: str) -> str | None:
    """The import identifier of the retained resource called name, or None when it is gone."""
    try:
        if resource_type == "AWS::S3::Bucket":
            aws("s3").head_bucket(Bucket=name)
            return name
        if resource_type == "AWS::S3::BucketPolicy":
            aws("s3").get_bucket_policy(Bucket=name)
            return name
        if resource_type == "AWS::SecretsManager::Secret":
            described = aws("secretsmanager").describe_secret(SecretId=name)
            return None if described.get("DeletedDate") else str(described["ARN"])
        if resource_type == "AWS::KMS::Key":
            metadata = aws("kms").describe_key(KeyId=name)["KeyMetadata"]
            return None if metadata.get("KeyState") == "PendingDeletion" else str(metadata["KeyId"])
        if resource_type == "AWS::KMS::Alias":
            aws("kms").describe_key(KeyId=name)
            return name
        if resource_type == "AWS::Logs::LogGroup":
            groups = aws("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
            return name if any(g["logGroupName"] == name for g in groups) else None
    except ClientError as e:
        if e.response["Error"]["Code"] in (
            "404",
            "NoSuchBucket",
            "NoSuchBucketPolicy",
            "ResourceNotFoundException",
            "NotFoundException",
        ):
            return None
        raise
    return None
