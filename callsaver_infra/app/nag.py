"""The cdk-nag gate: the AwsSolutions and NIST 800-53 rev 5 packs run inside every synth, and acknowledgements
carry their reasons."""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Validations
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks
from constructs import IConstruct

AWS_SOLUTIONS = "AwsSolutions"
NIST = "NIST.800.53.R5"


def enable_policy_checks(app: App) -> None:
    """Make `app.synth()` raise ValidationFailed on any unacknowledged AwsSolutions or NIST 800-53 R5 finding."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), NIST80053R5Checks(app))


def acknowledge(
    scope: IConstruct, rule: str, reason: str, *, finding: str | None = None, pack: str = AWS_SOLUTIONS
) -> None:
    """Acknowledge `rule` of `pack` (AwsSolutions "IAM5", NIST "IAMNoInlinePolicy") on scope, optionally for one
    finding (e.g. "Action::s3:*")."""
    rule_id = f"{pack}::{pack}-{rule}" + (f"[{finding}]" if finding else "")
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))
