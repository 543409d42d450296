"""The reader of a synthesized cloud assembly (`cdk.out`): its CloudFormation stacks and their bootstrap roles."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


class AssemblyError(Exception):
    """The directory is not a readable cloud assembly with concrete stacks."""


@dataclass(frozen=True)
class AssemblyStack:
    """A stack of a synthesized cloud assembly (manifest.json), with the bootstrap roles the CLI would use."""

    name: str
    account: str
    region: str
    template_file: Path
    lookup_role_arn: str | None
    deploy_role_arn: str | None

    def template(self) -> dict[str, Any]:
        """The synthesized template."""
        template: dict[str, Any] = json.loads(self.template_file.read_text(encoding="utf-8"))
        return template

    def role_arn(self, role: Literal["lookup", "deploy", "base"]) -> str | None:
        """The lookup or deploy role's ARN template (may hold ${AWS::Partition}); None for the base credentials."""
        if role == "base":
            return None
        return self.lookup_role_arn if role == "lookup" else self.deploy_role_arn


def read_assembly(assembly_dir: Path) -> list[AssemblyStack]:
    """The CloudFormation stacks of a cloud assembly directory, sorted by name."""
    manifest_path = assembly_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AssemblyError(f"{manifest_path}: not a readable cloud assembly ({e}); synthesize first") from None
    stacks = []
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        props = artifact.get("properties", {})
        environment = str(artifact.get("environment", ""))
        _, _, account_region = environment.partition("aws://")
        account, _, region = account_region.partition("/")
        if not (account.isdigit() and region):
            raise AssemblyError(f"stack {artifact_id} has no concrete environment ({environment!r}); cannot read it")
        stacks.append(
            AssemblyStack(
                name=props.get("stackName", artifact_id),
                account=account,
                region=region,
                template_file=assembly_dir / props["templateFile"],
                lookup_role_arn=props.get("lookupRole", {}).get("arn"),
                deploy_role_arn=props.get("assumeRoleArn"),
            )
        )
    if not stacks:
        raise AssemblyError(f"{manifest_path}: no CloudFormation stacks in the assembly")
    return sorted(stacks, key=lambda s: s.name)
