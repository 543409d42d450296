"""The cdk-nag gate: the AwsSolutions and NIST 800-53 rev 5 packs run inside every synth, and acknowledgements
carry their reasons."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, App, Stack, Token, Validations
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks
from constructs import IConstruct

AWS_SOLUTIONS = "AwsSolutions"
NIST = "NIST.800.53.R5"


def enable_policy_checks(app: App) -> None:
    """Make `app.synth()` raise ValidationFailed on any unacknowledged AwsSolutions or NIST 800-53 R5 finding."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), NIST80053R5Checks(app))


@dataclass(frozen=True)
class Ack:
    """One acknowledgement for `acknowledge_all`: the arguments of `acknowledge`."""

    rule: str
    reason: str
    finding: str | None = None
    pack: str = AWS_SOLUTIONS


def acknowledge(
    scope: IConstruct, rule: str, reason: str, *, finding: str | None = None, pack: str = AWS_SOLUTIONS
) -> None:
    """Acknowledge `rule` of `pack` (AwsSolutions "IAM5", NIST "IAMNoInlinePolicy") on scope, optionally for one
    finding (e.g. "Action::s3:*"; tokens in it are written as cdk-nag writes them: <AWS::Partition>, <Id.Arn>)."""
    acknowledge_all(scope, [Ack(rule, reason, finding, pack)])


def acknowledge_all(scope: IConstruct, acks: Iterable[Ack]) -> None:
    """Acknowledge every ack on scope, in order, with one call into the CDK: each call is a round trip to jsii's
    Node process, and acknowledgements are most of the app's calls."""
    rules = []
    for ack in acks:
        finding = ack.finding
        # Only a string holding a token marker can be unresolved: skip the round trip for plain strings.
        if finding is not None and "${Token[" in finding and Token.is_unresolved(finding):
            finding = flatten_cfn_reference(Stack.of(scope).resolve(finding))
        rule_id = f"{ack.pack}::{ack.pack}-{ack.rule}" + (f"[{finding}]" if finding else "")
        rules.append(Acknowledgment(id=rule_id, reason=ack.reason))
    if rules:
        Validations.of(scope).acknowledge(*rules)


def flatten_cfn_reference(node: Any) -> str:
    """A resolved CloudFormation value as the flat string of cdk-nag's findings (cdk-nag 3.0.2,
    src/utils/flatten-cfn-reference.ts: Ref -> <X>, Fn::GetAtt -> <X.Attr>, Fn::Join joined, ${...} -> <...>)."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if node.get("Fn::Join"):
            delimiter, items = node["Fn::Join"]
            return str(delimiter).join(flatten_cfn_reference(item) for item in items)
        if node.get("Fn::Sub"):
            return flatten_cfn_reference(node["Fn::Sub"])
        if node.get("Fn::GetAtt"):
            resource, attribute = node["Fn::GetAtt"]
            return f"<{flatten_cfn_reference(resource)}.{flatten_cfn_reference(attribute)}>"
        if node.get("Fn::ImportValue"):
            return flatten_cfn_reference(node["Fn::ImportValue"])
        if node.get("Ref"):
            return f"<{flatten_cfn_reference(node['Ref'])}>"
    # cdk-nag's fallback: JSON.stringify (compact).
    return json.dumps(node, separators=(",", ":"))
