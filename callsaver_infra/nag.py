"""The cdk-nag gate: AwsSolutions checks run inside every synth, and acknowledgements carry their reasons."""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def enable_policy_checks(app: App) -> None:
    """Make `app.synth()` raise ValidationFailed on any unacknowledged AwsSolutions finding."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(scope: IConstruct, rule: str, reason: str, *, finding: str | None = None) -> None:
    """Acknowledge AwsSolutions `rule` (e.g. "IAM5") on scope, optionally for one finding (e.g. "Action::s3:*")."""
    rule_id = f"AwsSolutions::AwsSolutions-{rule}" + (f"[{finding}]" if finding else "")
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))
