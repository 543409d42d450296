"""The pipeline's gate on destructive changes: any resource a deploy would delete, orphan or replace.

For every stack of a synthesized cloud assembly it compares the synthesized template with the template
CloudFormation holds for that stack (read like `cdk diff` does, through the CDK bootstrap lookup role, or the deploy
role in a deploy job), and reports each resource that the deploy would delete, orphan or replace, or that loses its
Retain policy, unless its type is in SAFE_TO_REPLACE (types an ordinary update replaces and that hold nothing to
lose). Structured templates are compared, not `cdk diff`'s human-oriented text, so the gate does not depend on the
CLI's output format; which property changes replace a resource comes from the CloudFormation resource schemas
(createOnlyProperties; a test checks CREATE_ONLY against the schemas cfn-lint ships, and that it covers every type
the app synthesizes). A type missing from CREATE_ONLY fails closed: any property change counts as a replacement.

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

# Every resource type the app synthesizes (environments, CI and registry stacks) and the properties whose change
# makes CloudFormation replace the resource (create a new one, delete the old): the schemas' createOnlyProperties,
# as JSON-pointer paths below /properties. An empty tuple: no property change replaces it.
CREATE_ONLY: Mapping[str, tuple[str, ...]] = {
    "AWS::ApplicationAutoScaling::ScalableTarget": ("ResourceId", "ScalableDimension", "ServiceNamespace"),
    "AWS::ApplicationAutoScaling::ScalingPolicy": (
        "PolicyName",
        "ServiceNamespace",
        "ResourceId",
        "ScalableDimension",
        "ScalingTargetId",
    ),
    "AWS::CloudTrail::Trail": ("TrailName",),
    "AWS::CloudWatch::Alarm": ("AlarmName",),
    "AWS::CloudWatch::Dashboard": ("DashboardName",),
    "AWS::EC2::InternetGateway": (),
    "AWS::EC2::Route": ("RouteTableId", "DestinationCidrBlock", "DestinationIpv6CidrBlock", "DestinationPrefixListId"),
    "AWS::EC2::RouteTable": ("VpcId",),
    "AWS::EC2::SecurityGroup": ("GroupDescription", "GroupName", "VpcId"),
    "AWS::EC2::Subnet": (
        "VpcId",
        "AvailabilityZone",
        "AvailabilityZoneId",
        "CidrBlock",
        "OutpostArn",
        "Ipv6Native",
        "Ipv4IpamPoolId",
        "Ipv4NetmaskLength",
        "Ipv6IpamPoolId",
        "Ipv6NetmaskLength",
    ),
    "AWS::EC2::SubnetRouteTableAssociation": ("SubnetId", "RouteTableId"),
    "AWS::EC2::VPC": ("CidrBlock", "Ipv4IpamPoolId", "Ipv4NetmaskLength", "VpcEncryptionControl"),
    "AWS::EC2::VPCGatewayAttachment": ("VpcId",),
    "AWS::ECR::Repository": (
        "RepositoryName",
        "EncryptionConfiguration",
        "EncryptionConfiguration/EncryptionType",
        "EncryptionConfiguration/KmsKey",
    ),
    "AWS::ECS::Cluster": ("ClusterName",),
    "AWS::ECS::Service": ("Cluster", "Role", "SchedulingStrategy", "ServiceName"),
    "AWS::ECS::TaskDefinition": (
        "Family",
        "ContainerDefinitions",
        "Cpu",
        "EnableFaultInjection",
        "ExecutionRoleArn",
        "InferenceAccelerators",
        "Memory",
        "NetworkMode",
        "PlacementConstraints",
        "ProxyConfiguration",
        "RequiresCompatibilities",
        "RuntimePlatform",
        "TaskRoleArn",
        "Volumes",
        "PidMode",
        "IpcMode",
        "EphemeralStorage",
    ),
    "AWS::Events::Rule": ("Name",),
    "AWS::IAM::AccessKey": ("UserName", "Serial"),
    "AWS::IAM::ManagedPolicy": ("ManagedPolicyName", "Description", "Path"),
    "AWS::IAM::OIDCProvider": ("Url",),
    "AWS::IAM::Policy": (),
    "AWS::IAM::Role": ("Path", "RoleName"),
    "AWS::IAM::User": ("UserName",),
    "AWS::KMS::Alias": ("AliasName",),
    "AWS::KMS::Key": (),
    "AWS::Logs::LogGroup": ("LogGroupName",),
    "AWS::S3::Bucket": ("BucketName", "BucketNamePrefix", "BucketNamespace"),
    "AWS::S3::BucketPolicy": ("Bucket",),
    "AWS::SNS::Topic": ("TopicName", "FifoTopic"),
    "AWS::SNS::TopicPolicy": (),
    "AWS::SecretsManager::ResourcePolicy": ("SecretId",),
    "AWS::SecretsManager::Secret": ("Name",),
}

# The only types whose replacement or removal the gate lets through, each because an ordinary update replaces it and
# it holds nothing that a replacement loses. Everything else (a bucket, secret, table, log group, key, role, user,
# trail, a type added later) fails the gate until a reviewer allows it.
SAFE_TO_REPLACE: Mapping[str, str] = {
    "AWS::ECS::TaskDefinition": (
        "every image tag, CPU/memory or environment change registers a new revision (ContainerDefinitions are "
        "create-only); the service rolls onto it behind its circuit breaker, and the old revision holds no data"
    ),
    "AWS::IAM::AccessKey": (
        "bumping egress_writer.access_key_serial replaces the egress key by design (rotate-egress-key); the replaced "
        "key is retained (UpdateReplacePolicy Retain, still checked here) until the rotation retires it"
    ),
    "AWS::CloudWatch::Alarm": (
        "configuration only, rebuilt from the template; the no-recording alarm comes and goes with "
        "monitoring.max_hours_without_recording, and only the alarm's state history is lost"
    ),
    "AWS::CloudWatch::Dashboard": "configuration only: its whole body is the template's",
    "AWS::ApplicationAutoScaling::ScalingPolicy": (
        "configuration only (the agent service's target tracking), recreated from the template; running tasks "
        "are not touched"
    ),
}
RETAINING_POLICIES = frozenset({"Retain", "RetainExceptOnCreate"})
# The pull-request label (and, for manual deploys, the workflow input) that lets reviewed destructive changes through.
ALLOW_LABEL = "allow-destructive-changes"
ALLOW_INPUT = "allow_destructive_changes"
CDK_PATH_METADATA = "aws:cdk:path"


class GateError(Exception):
    """The gate could not check (unreadable assembly, AWS error): it fails closed."""


class Impact(StrEnum):
    """What a deploy does to a resource."""

    DESTROY = "will be destroyed"
    ORPHAN = "will be orphaned"
    REPLACE = "will be replaced"
    UNPROTECT = "loses its Retain policy"


@dataclass(frozen=True)
class DestructiveChange:
    """One destructive change to one resource of one stack."""

    stack: str
    logical_id: str
    resource_type: str
    impact: Impact
    detail: str
    construct_path: str | None = None

    def describe(self) -> str:
        """One line: stack, type, construct path and logical id, impact, detail, and how to avoid it."""
        where = f"{self.construct_path} ({self.logical_id})" if self.construct_path else self.logical_id
        return f"{self.stack}: {self.resource_type} {where} {self.impact.value}: {self.detail}. {self.remedy}"

    @property
    def remedy(self) -> str:
        """What keeps the resource, when the change is not intended."""
        if self.impact is Impact.UNPROTECT:
            return "To keep it protected: keep RemovalPolicy.RETAIN on its construct"
        if self.impact is Impact.REPLACE:
            return "To update it in place: keep its type and create-only properties as deployed"
        return (
            f"To keep it: keep it in the template under the logical id {self.logical_id} (a moved or renamed "
            "construct: keep its id and parent, or pin the logical id with override_logical_id)"
        )


def find_destructive_changes(
    stack: str, deployed: Mapping[str, Any] | None, synthesized: Mapping[str, Any]
) -> list[DestructiveChange]:
    """The destructive changes when `deployed` (None: not deployed yet) becomes `synthesized`, leaving out the
    replacement or removal of SAFE_TO_REPLACE types (never their loss of a Retain policy)."""
    if deployed is None:
        return []  # a stack that does not exist yet has nothing to lose
    old_resources: Mapping[str, Any] = deployed.get("Resources", {})
    new_resources: Mapping[str, Any] = synthesized.get("Resources", {})
    replaced = _replacements(old_resources, new_resources)
    changes = []
    for logical_id, old in old_resources.items():
        old_type = str(old.get("Type", ""))
        new = new_resources.get(logical_id)
        path = _construct_path(new) or _construct_path(old)
        for impact, detail in _classify(old, new, replaced.get(logical_id)):
            if impact is not Impact.UNPROTECT and old_type in SAFE_TO_REPLACE:
                continue
            changes.append(DestructiveChange(stack, logical_id, old_type, impact, detail, path))
    return changes


def _replacements(old_resources: Mapping[str, Any], new_resources: Mapping[str, Any]) -> dict[str, str]:
    """Logical id -> why it is replaced: a create-only property changes, or names (Ref/GetAtt) a replaced resource
    in a create-only property (the new physical id changes the value at deploy time, unseen in the templates)."""
    replaced: dict[str, str] = {}
    for logical_id, old in old_resources.items():
        new = new_resources.get(logical_id)
        if new is None:
            continue
        resource_type = str(old.get("Type", ""))
        if new.get("Type") != resource_type:
            replaced[logical_id] = f"type changes to {new.get('Type')}"
            continue
        if resource_type not in CREATE_ONLY:
            if _get(old, "") != _get(new, ""):
                replaced[logical_id] = (
                    "its properties change, and the gate does not know which properties of this type replace it "
                    "(add its createOnlyProperties to CREATE_ONLY in callsaver_infra/ops/stateful_changes.py)"
                )
            continue
        top_level = {p for p in CREATE_ONLY[resource_type] if "/" not in p}
        changed = [
            f"{prop} {_show(_get(old, prop))} → {_show(_get(new, prop))}"
            for prop in CREATE_ONLY[resource_type]
            # A nested path under a listed top-level property is compared with it.
            if not ("/" in prop and prop.split("/")[0] in top_level) and _get(old, prop) != _get(new, prop)
        ]
        if changed:
            replaced[logical_id] = "; ".join(changed)
    # A replacement cascades to every resource naming it in a create-only property, until nothing more changes.
    grew = True
    while grew:
        grew = False
        for logical_id, new in new_resources.items():
            if logical_id in replaced or logical_id not in old_resources:
                continue
            resource_type = str(new.get("Type", ""))
            props = CREATE_ONLY.get(resource_type, ("",))
            for prop in props:
                names = _referenced(_get(new, prop)) & set(replaced)
                if names:
                    where = f"its {prop}" if prop else "it"
                    replaced[logical_id] = f"{where} names {sorted(names)[0]}, which is replaced"
                    grew = True
                    break
    return replaced


def _referenced(value: Any) -> set[str]:
    """The logical ids a template value names through Ref or Fn::GetAtt."""
    if isinstance(value, Mapping):
        found: set[str] = set()
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                target = inner[0] if isinstance(inner, list) and inner else str(inner).split(".")[0]
                found.add(str(target))
            else:
                found |= _referenced(inner)
        return found
    if isinstance(value, list):
        return set().union(*(_referenced(v) for v in value)) if value else set()
    return set()


def _classify(
    old: Mapping[str, Any], new: Mapping[str, Any] | None, replaced_by: str | None
) -> list[tuple[Impact, str]]:
    if new is None:
        # A renamed construct path changes the logical id: CloudFormation sees a removal and a new resource.
        if old.get("DeletionPolicy") in RETAINING_POLICIES:
            return [
                (
                    Impact.ORPHAN,
                    "removed from the template; DeletionPolicy Retain keeps it, but the stack no longer manages it "
                    "(and a new resource of the same name fails to create)",
                )
            ]
        return [(Impact.DESTROY, "removed from the template, and its DeletionPolicy deletes it")]
    if replaced_by is not None:
        return [(Impact.REPLACE, replaced_by)]
    return [
        (Impact.UNPROTECT, f"{policy} {old.get(policy)} → {new.get(policy, 'Delete')}")
        for policy in ("DeletionPolicy", "UpdateReplacePolicy")
        if old.get(policy) in RETAINING_POLICIES and new.get(policy) not in RETAINING_POLICIES
    ]


def _get(resource: Mapping[str, Any], prop: str) -> Any:
    """The value at prop ("Name", "EncryptionConfiguration/KmsKey"; "" for all properties) or None."""
    value: Any = resource.get("Properties", {})
    for part in filter(None, prop.split("/")):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


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
    changes: tuple[DestructiveChange, ...]


def check_assembly(
    stacks: Sequence[AssemblyStack], deployed: Callable[[AssemblyStack], dict[str, Any] | None]
) -> GateResult:
    """Compare every stack of the assembly with its deployed template."""
    changes: list[DestructiveChange] = []
    new = []
    for stack in stacks:
        current = deployed(stack)
        if current is None:
            new.append(stack.name)
        changes += find_destructive_changes(stack.name, current, stack.template())
    return GateResult(tuple(s.name for s in stacks), tuple(new), tuple(changes))


def _safe_types() -> str:
    return ", ".join(f"`{t.split('::', 1)[1]}`" for t in SAFE_TO_REPLACE)


def render_markdown(result: GateResult, *, allowed: bool) -> str:
    """The gate's verdict for a pull-request comment or a job summary."""
    scope = f"any resource except the types safe to replace ({_safe_types()})"
    new = f" Not deployed yet: {', '.join(f'`{s}`' for s in result.new_stacks)}." if result.new_stacks else ""
    if not result.changes:
        return (
            f"✅ **Destructive changes**: none in {len(result.stacks)} stack(s): no deletion or replacement of "
            f"{scope}.{new}\n"
        )
    if allowed:
        head = (
            f"⚠️ **Destructive changes** (deletions and replacements of {scope}), **allowed** by the "
            f"`{ALLOW_LABEL}` label or the `{ALLOW_INPUT}` input:"
        )
    else:
        head = (
            f"❌ **Destructive changes** (deletions and replacements of {scope}): **blocked**. If a change is not "
            "intended, the last column says how to keep the resource; if it is, review it, then add the label "
            f"`{ALLOW_LABEL}` to the pull request (or run the deploy workflow by hand with `{ALLOW_INPUT}`):"
        )
    rows = ["| Stack | Resource | Type | Change | To keep it |", "|---|---|---|---|---|"]
    for c in result.changes:
        where = f"{c.construct_path} (`{c.logical_id}`)" if c.construct_path else f"`{c.logical_id}`"
        cells = [f"`{c.stack}`", where, f"`{c.resource_type}`", f"{c.impact.value}: {c.detail}", c.remedy]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join([head, "", *rows, ""]) + (f"\n{new.strip()}\n" if new else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gate over an assembly; print every change; write the Markdown verdict to --report."""
    parser = argparse.ArgumentParser(
        prog="python -m callsaver_infra.ops.stateful_changes",
        description="Fail on any deletion or replacement of a resource, except of the types safe to replace ("
        + ", ".join(SAFE_TO_REPLACE)
        + ").",
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
        message = f"destructive-change gate: error: {e}"
        print(message, file=sys.stderr)
        if args.report:
            args.report.write_text(f"❌ **Destructive-change gate could not check**: {e}\n", encoding="utf-8")
        return 2
    for change in result.changes:
        print(change.describe())
    verdict = "allowed" if args.allow else "blocked"
    print(
        f"destructive-change gate: {len(result.changes)} destructive change(s) in {len(result.stacks)} stack(s)"
        + (f" ({verdict})" if result.changes else "")
    )
    if result.changes and not args.allow:
        print(f"If intended: review, then add the label {ALLOW_LABEL} to the pull request (or deploy by hand with "
              f"the input {ALLOW_INPUT}).")  # fmt: skip
    if args.report:
        args.report.write_text(render_markdown(result, allowed=args.allow), encoding="utf-8")
    return 1 if result.changes and not args.allow else 0


if __name__ == "__main__":
    sys.exit(main())
