"""The pipeline's gate on destructive changes to stateful resources (the S3 buckets, the Secrets Manager secrets).

For every stack of a synthesized cloud assembly it compares the synthesized template with the template
CloudFormation holds for that stack (read like `cdk diff` does, through the CDK bootstrap lookup role, or the deploy
role in a deploy job), and reports each stateful resource that the deploy would delete, orphan or replace, or that
loses its Retain policy. Structured templates are compared, not `cdk diff`'s human-oriented text, so the gate does
not depend on the CLI's output format; which property changes replace a resource comes from the CloudFormation
resource schemas (createOnlyProperties; a test checks the table below against the schemas cfn-lint ships).

    python -m callsaver_infra.ops.stateful_changes --assembly cdk.out [--role lookup|deploy] [--allow] [--report FILE]

Exit status: 0 no destructive change (or allowed with --allow), 1 destructive changes, 2 error (nothing checked).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from callsaver_infra.ops.cloud_assembly import AssemblyError, AssemblyStack, read_assembly

# Stateful resource types and the properties whose change makes CloudFormation replace the resource (create a new
# one, delete the old): the schemas' createOnlyProperties.
STATEFUL_CREATE_ONLY: Mapping[str, tuple[str, ...]] = {
    "AWS::S3::Bucket": ("BucketName", "BucketNamePrefix", "BucketNamespace"),
    "AWS::SecretsManager::Secret": ("Name",),
}
RETAINING_POLICIES = frozenset({"Retain", "RetainExceptOnCreate"})
# The pull-request label (and, for manual deploys, the workflow input) that lets reviewed destructive changes through.
ALLOW_LABEL = "allow-destructive-changes"
ALLOW_INPUT = "allow_destructive_changes"
CDK_PATH_METADATA = "aws:cdk:path"


class GateError(Exception):
    """The gate could not check (unreadable assembly, AWS error): it fails closed."""


class Impact(StrEnum):
    """What a deploy does to a stateful resource."""

    DESTROY = "will be destroyed"
    ORPHAN = "will be orphaned"
    REPLACE = "will be replaced"
    UNPROTECT = "loses its Retain policy"


@dataclass(frozen=True)
class StatefulChange:
    """One destructive change to one stateful resource of one stack."""

    stack: str
    logical_id: str
    resource_type: str
    impact: Impact
    detail: str
    construct_path: str | None = None

    def describe(self) -> str:
        """One line: stack, type, construct path and logical id, impact, detail."""
        where = f"{self.construct_path} ({self.logical_id})" if self.construct_path else self.logical_id
        return f"{self.stack}: {self.resource_type} {where} {self.impact.value}: {self.detail}"


def find_stateful_changes(
    stack: str, deployed: Mapping[str, Any] | None, synthesized: Mapping[str, Any]
) -> list[StatefulChange]:
    """The destructive changes to stateful resources when `deployed` (None: not deployed yet) becomes `synthesized`."""
    if deployed is None:
        return []  # a stack that does not exist yet has nothing to lose
    old_resources: Mapping[str, Any] = deployed.get("Resources", {})
    new_resources: Mapping[str, Any] = synthesized.get("Resources", {})
    changes = []
    for logical_id, old in old_resources.items():
        old_type = old.get("Type", "")
        if old_type not in STATEFUL_CREATE_ONLY:
            continue
        new = new_resources.get(logical_id)
        path = _construct_path(new) or _construct_path(old)
        for impact, detail in _classify(old_type, old, new):
            changes.append(StatefulChange(stack, logical_id, old_type, impact, detail, path))
    return changes


def _classify(resource_type: str, old: Mapping[str, Any], new: Mapping[str, Any] | None) -> list[tuple[Impact, str]]:
    if new is None:
        # A renamed construct path changes the logical id: CloudFormation sees a removal and a new resource.
        if old.get("DeletionPolicy") in RETAINING_POLICIES:
            return [
                (
                    Impact.ORPHAN,
                    "removed from the template; DeletionPolicy Retain keeps the data, but the stack no longer "
                    "manages it (and a new resource of the same name fails to create)",
                )
            ]
        return [(Impact.DESTROY, "removed from the template, and its DeletionPolicy deletes it")]
    if new.get("Type") != resource_type:
        return [(Impact.REPLACE, f"type changes to {new.get('Type')}")]
    replaced_by = [
        f"{prop} {_show(_get(old, prop))} → {_show(_get(new, prop))}"
        for prop in STATEFUL_CREATE_ONLY[resource_type]
        if _get(old, prop) != _get(new, prop)
    ]
    if replaced_by:
        return [(Impact.REPLACE, "; ".join(replaced_by))]
    return [
        (Impact.UNPROTECT, f"{policy} {old.get(policy)} → {new.get(policy, 'Delete')}")
        for policy in ("DeletionPolicy", "UpdateReplacePolicy")
        if old.get(policy) in RETAINING_POLICIES and new.get(policy) not in RETAINING_POLICIES
    ]


def _get(resource: Mapping[str, Any], prop: str) -> Any:
    properties: Mapping[str, Any] = resource.get("Properties", {})
    return properties.get(prop)


def _construct_path(resource: Mapping[str, Any] | None) -> str | None:
    if resource is None:
        return None
    path = resource.get("Metadata", {}).get(CDK_PATH_METADATA)
    return str(path) if path else None


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


ClientFactory = Callable[..., Any]


class DeployedTemplates:
    """Reads the template CloudFormation holds for a stack, through the stack's CDK bootstrap role, as the CLI does.

    The base credentials (from the environment, e.g. GitHub OIDC) only need sts:AssumeRole on that role.
    """

    def __init__(self, role: Literal["lookup", "deploy", "base"], client_factory: ClientFactory | None = None) -> None:
        if client_factory is None:
            import boto3

            client_factory = boto3.client
        self._role = role
        self._client = client_factory
        self._partition: str | None = None

    def get(self, stack: AssemblyStack) -> dict[str, Any] | None:
        """The deployed template (TemplateStage Original), or None when the stack does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            cfn = self._cloudformation(stack)
            body = cfn.get_template(StackName=stack.name, TemplateStage="Original")["TemplateBody"]
        except ClientError as e:
            error = e.response.get("Error", {})
            if error.get("Code") == "ValidationError" and "does not exist" in str(error.get("Message", "")):
                return None
            raise GateError(f"{stack.name}: could not read the deployed template: {e}") from None
        except BotoCoreError as e:
            raise GateError(f"{stack.name}: could not read the deployed template: {e}") from None
        if isinstance(body, dict):
            return body
        try:
            template: dict[str, Any] = json.loads(body)
        except ValueError:
            raise GateError(
                f"{stack.name}: the deployed template is not JSON (deployed by another tool?); the gate cannot "
                "compare it. Deploy it once from this app, or review by hand and allow the change"
            ) from None
        return template

    def _cloudformation(self, stack: AssemblyStack) -> Any:
        role_arn = stack.role_arn(self._role)
        if role_arn is None:
            # A stack synthesized without bootstrap roles is read with the base credentials, like the CLI does.
            return self._client("cloudformation", region_name=stack.region)
        sts = self._client("sts", region_name=stack.region)
        if self._partition is None:
            self._partition = str(sts.get_caller_identity()["Arn"]).split(":")[1]
        arn = (
            role_arn.replace("${AWS::Partition}", self._partition)
            .replace("${AWS::AccountId}", stack.account)
            .replace("${AWS::Region}", stack.region)
        )
        credentials = sts.assume_role(RoleArn=arn, RoleSessionName="callsaver-stateful-gate")["Credentials"]
        return self._client(
            "cloudformation",
            region_name=stack.region,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )


def templates_from_directory(directory: Path) -> Callable[[AssemblyStack], dict[str, Any] | None]:
    """Deployed templates taken from another assembly or directory (<stack>.template.json), for offline checks."""

    def get(stack: AssemblyStack) -> dict[str, Any] | None:
        path = directory / f"{stack.name}.template.json"
        if not path.exists():
            return None
        template: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return template

    return get


@dataclass(frozen=True)
class GateResult:
    """The changes found over an assembly, and which stacks were not deployed yet."""

    stacks: tuple[str, ...]
    new_stacks: tuple[str, ...]
    changes: tuple[StatefulChange, ...]


def check_assembly(
    stacks: Sequence[AssemblyStack], deployed: Callable[[AssemblyStack], dict[str, Any] | None]
) -> GateResult:
    """Compare every stack of the assembly with its deployed template."""
    changes: list[StatefulChange] = []
    new = []
    for stack in stacks:
        current = deployed(stack)
        if current is None:
            new.append(stack.name)
        changes += find_stateful_changes(stack.name, current, stack.template())
    return GateResult(tuple(s.name for s in stacks), tuple(new), tuple(changes))


def render_markdown(result: GateResult, *, allowed: bool) -> str:
    """The gate's verdict for a pull-request comment or a job summary."""
    kinds = "S3 buckets, Secrets Manager secrets"
    new = f" Not deployed yet: {', '.join(f'`{s}`' for s in result.new_stacks)}." if result.new_stacks else ""
    if not result.changes:
        return f"✅ **Stateful resources** ({kinds}): no destructive change in {len(result.stacks)} stack(s).{new}\n"
    if allowed:
        head = (
            f"⚠️ **Destructive changes to stateful resources** ({kinds}), **allowed** by the "
            f"`{ALLOW_LABEL}` label or the `{ALLOW_INPUT}` input:"
        )
    else:
        head = (
            f"❌ **Destructive changes to stateful resources** ({kinds}): **blocked**. If they are intended, "
            f"review them, then add the label `{ALLOW_LABEL}` to the pull request (or run the deploy workflow by "
            f"hand with `{ALLOW_INPUT}`):"
        )
    rows = ["| Stack | Resource | Type | Change |", "|---|---|---|---|"]
    for c in result.changes:
        where = f"{c.construct_path} (`{c.logical_id}`)" if c.construct_path else f"`{c.logical_id}`"
        cells = [f"`{c.stack}`", where, f"`{c.resource_type}`", f"{c.impact.value}: {c.detail}"]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join([head, "", *rows, ""]) + (f"\n{new.strip()}\n" if new else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gate over an assembly; print every change; write the Markdown verdict to --report."""
    parser = argparse.ArgumentParser(
        prog="python -m callsaver_infra.ops.stateful_changes",
        description="Fail on destructive changes to stateful resources (S3 buckets, Secrets Manager secrets).",
    )
    parser.add_argument("--assembly", type=Path, default=Path("cdk.out"), help="synthesized cloud assembly")
    parser.add_argument(
        "--role",
        choices=("base", "lookup", "deploy"),
        default="base",
        help="credentials to read deployed templates with (base: the caller's own, as CI's diff role, which may "
        "only GetTemplate/DescribeStacks; lookup or deploy: that CDK bootstrap role, deploy in deploy jobs)",
    )
    parser.add_argument(
        "--deployed-dir", type=Path, help="read 'deployed' templates from this directory instead of AWS (offline)"
    )
    parser.add_argument("--allow", action="store_true", help=f"report but do not fail (label {ALLOW_LABEL})")
    parser.add_argument("--report", type=Path, help="write the verdict as Markdown to this file")
    args = parser.parse_args(argv)
    try:
        stacks = read_assembly(args.assembly)
        if args.deployed_dir is not None:
            result = check_assembly(stacks, templates_from_directory(args.deployed_dir))
        else:
            result = check_assembly(stacks, DeployedTemplates(args.role).get)
    except (GateError, AssemblyError) as e:
        message = f"stateful-changes gate: error: {e}"
        print(message, file=sys.stderr)
        if args.report:
            args.report.write_text(f"❌ **Stateful-changes gate could not check**: {e}\n", encoding="utf-8")
        return 2
    for change in result.changes:
        print(change.describe())
    verdict = "allowed" if args.allow else "blocked"
    print(
        f"stateful-changes gate: {len(result.changes)} destructive change(s) to stateful resources in "
        f"{len(result.stacks)} stack(s)" + (f" ({verdict})" if result.changes else "")
    )
    if args.report:
        args.report.write_text(render_markdown(result, allowed=args.allow), encoding="utf-8")
    return 1 if result.changes and not args.allow else 0


if __name__ == "__main__":
    sys.exit(main())
