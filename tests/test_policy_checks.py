"""The cdk-nag gate and cfn-lint, over every synthesized template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Environment, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.nag import (
    NIST,
    Ack,
    acknowledge,
    acknowledge_all,
    enable_policy_checks,
    flatten_cfn_reference,
)
from callsaver_infra.app.registry_config import REGISTRY_CONFIG_FILE, load_registry_config
from callsaver_infra.app.stacks.registry import add_registry_stack
from tests.helpers import (
    CONFIG_DIR,
    ENV_NAMES,
    SEED_AGENT_KEYS,
    SEED_BACKEND_KEYS,
    Synthesized,
    cdk_json_context,
    cfn_lint,
    new_app,
)

# Every acknowledged finding, per environment: (rule, construct path below the stack). A new entry here is a
# security decision and must be reviewed with its reason in the code.
EXPECTED_ACKNOWLEDGEMENTS = {
    ("AwsSolutions-S1", "Callsaver-Storage-{env}/SessionBucket/Bucket/Resource"),
    ("AwsSolutions-S1", "Callsaver-Storage-{env}/RecordingReads/LogBucket/Resource"),
    (
        "AwsSolutions-IAM5[Resource::<SessionBucket82929202.Arn>/*]",
        "Callsaver-Storage-{env}/SessionBucket/ReaderPolicy/Resource",
    ),
    (
        "AwsSolutions-IAM5[Resource::arn:aws:kms:us-west-1:<account>:key/*]",
        "Callsaver-IAM-{env}/EgressWriter/Policy/Resource",
    ),
    (
        "AwsSolutions-IAM5[Resource::arn:aws:s3:::callsaver-sessions-{env}/*]",
        "Callsaver-IAM-{env}/EgressWriter/Policy/Resource",
    ),
    ("AwsSolutions-SMG4", "Callsaver-IAM-{env}/EgressWriter/CredentialsSecret/Resource"),
    *(("AwsSolutions-SMG4", f"Callsaver-Secrets-{{env}}/BackendSecrets/{key}/Resource") for key in SEED_BACKEND_KEYS),
    *(("AwsSolutions-SMG4", f"Callsaver-Secrets-{{env}}/AgentSecrets/{key}/Resource") for key in SEED_AGENT_KEYS),
    ("AwsSolutions-VPC7", "Callsaver-Agent-{env}/AgentNetwork/Vpc/Resource"),
    ("AwsSolutions-ECS2", "Callsaver-Agent-{env}/AgentService/TaskDefinition/Resource"),
    (
        "AwsSolutions-IAM5[Resource::arn:aws:ecs:us-west-1:<account>:task/callsaver-{env}/*]",
        "Callsaver-Agent-{env}/AgentService/TaskDefinition/TaskRole/DefaultPolicy/Resource",
    ),
    (
        "AwsSolutions-IAM5[Resource::*]",
        "Callsaver-Agent-{env}/AgentService/ExecutionRole/DefaultPolicy/Resource",
    ),
    # NIST 800-53 R5 (the second pack of the gate).
    *(
        (f"NIST.800.53.R5-{rule}", "Callsaver-Storage-{env}/SessionBucket/Bucket/Resource")
        for rule in ("S3BucketLoggingEnabled", "S3BucketReplicationEnabled")
    ),
    *(
        (f"NIST.800.53.R5-{rule}", "Callsaver-Storage-{env}/RecordingReads/LogBucket/Resource")
        for rule in ("S3BucketLoggingEnabled", "S3BucketReplicationEnabled", "S3DefaultEncryptionKMS")
    ),
    *(
        (f"NIST.800.53.R5-{rule}", "Callsaver-Storage-{env}/RecordingReads/Trail/Resource")
        for rule in ("CloudTrailCloudWatchLogsEnabled", "CloudTrailEncryptionEnabled")
    ),
    ("NIST.800.53.R5-IAMUserGroupMembership", "Callsaver-IAM-{env}/EgressWriter/User/Resource"),
    ("NIST.800.53.R5-IAMNoInlinePolicy", "Callsaver-IAM-{env}/EgressWriter/Policy/Resource"),
    ("NIST.800.53.R5-IAMUserNoPolicies", "Callsaver-IAM-{env}/EgressWriter/Policy/Resource"),
    *(
        (f"NIST.800.53.R5-{rule}", path)
        for rule in ("SecretsManagerRotationEnabled", "SecretsManagerUsingKMSKey")
        for path in (
            "Callsaver-IAM-{env}/EgressWriter/CredentialsSecret/Resource",
            *(f"Callsaver-Secrets-{{env}}/BackendSecrets/{key}/Resource" for key in SEED_BACKEND_KEYS),
            *(f"Callsaver-Secrets-{{env}}/AgentSecrets/{key}/Resource" for key in SEED_AGENT_KEYS),
        )
    ),
    ("NIST.800.53.R5-IAMNoInlinePolicy", "Callsaver-Agent-{env}/AgentService/ExecutionRole/DefaultPolicy/Resource"),
    (
        "NIST.800.53.R5-IAMNoInlinePolicy",
        "Callsaver-Agent-{env}/AgentService/TaskDefinition/TaskRole/DefaultPolicy/Resource",
    ),
    ("NIST.800.53.R5-CloudWatchLogGroupEncrypted", "Callsaver-Agent-{env}/AgentService/Logs/Resource"),
    ("NIST.800.53.R5-VPCFlowLogsEnabled", "Callsaver-Agent-{env}/AgentNetwork/Vpc/Resource"),
    ("NIST.800.53.R5-VPCDefaultSecurityGroupClosed", "Callsaver-Agent-{env}/AgentNetwork/Vpc/Resource"),
    *(
        (rule, f"Callsaver-Agent-{{env}}/AgentNetwork/Vpc/PublicSubnet{n}/{child}")
        for n in (1, 2)
        for rule, child in (
            ("NIST.800.53.R5-VPCSubnetAutoAssignPublicIpDisabled", "Subnet"),
            ("NIST.800.53.R5-VPCNoUnrestrictedRouteToIGW", "DefaultRoute"),
        )
    ),
}


# Callsaver-Registry (one per account). With a GitHub subject it creates the push role; with the agent CI's own
# role ARN (pushes granted by the repository policy) it has nothing to acknowledge.
EXPECTED_REGISTRY_ACKNOWLEDGEMENTS = {
    "github_subject": {
        ("AwsSolutions-IAM5[Resource::*]", "Callsaver-Registry/AgentImages/PushRole/Resource"),
        ("NIST.800.53.R5-IAMNoInlinePolicy", "Callsaver-Registry/AgentImages/PushRole/Resource"),
    },
    "role_arn": set(),
}


def _report(synthesized: Synthesized) -> dict[str, object]:
    report: dict[str, object] = json.loads((synthesized.outdir / "validation-report.json").read_text())
    return report


def test_nag_gate_fails_synth_on_a_non_compliant_construct(tmp_path: Path) -> None:
    app = new_app(tmp_path)
    stack = Stack(app, "Deliberately-NonCompliant", env=Environment(account="123456789012", region="us-west-1"))
    s3.Bucket(stack, "PlainBucket")  # no TLS-only policy, no access logs
    enable_policy_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed") as e:
        app.synth()
    assert "AwsSolutions-S10" in str(e.value) and "AwsSolutions-S1" in str(e.value)
    assert "NIST.800.53.R5-S3BucketVersioningEnabled" in str(e.value)


def test_acknowledging_a_finding_lets_synth_pass(tmp_path: Path) -> None:
    app = new_app(tmp_path)
    stack = Stack(app, "Acknowledged", env=Environment(account="123456789012", region="us-west-1"))
    bucket = s3.Bucket(stack, "PlainBucket", enforce_ssl=True)
    acknowledge(bucket, "S1", "test fixture: access logs are out of scope for this check")
    for rule in (
        "S3BucketLoggingEnabled",
        "S3BucketPublicReadProhibited",
        "S3BucketPublicWriteProhibited",
        "S3BucketReplicationEnabled",
        "S3BucketVersioningEnabled",
        "S3DefaultEncryptionKMS",
    ):
        acknowledge(bucket, rule, "test fixture: out of scope for this check", pack=NIST)
    enable_policy_checks(app)
    app.synth()


def test_acknowledge_all_records_every_acknowledgement_in_order(tmp_path: Path) -> None:
    """One call for several acknowledgements (synth speed) records each, with its reason, as `acknowledge` would;
    a token in a finding is flattened as cdk-nag writes it."""
    app = new_app(tmp_path)
    stack = Stack(app, "Batched", env=Environment(account="123456789012", region="us-west-1"))
    bucket = s3.Bucket(stack, "Bucket")
    acknowledge_all(
        bucket,
        [
            Ack("S1", "first reason"),
            Ack("S3BucketLoggingEnabled", "second reason", pack=NIST),
            Ack("IAM5", "third reason", finding=f"Resource::{bucket.arn_for_objects('*')}"),
        ],
    )
    acknowledge_all(bucket, [])  # nothing to record: no call
    logical_id = stack.resolve(stack.get_logical_id(bucket.node.default_child))
    recorded = [
        entry.data for entry in bucket.node.metadata if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    ]
    assert recorded == [
        {"AwsSolutions::AwsSolutions-S1": "first reason"},
        {"NIST.800.53.R5::NIST.800.53.R5-S3BucketLoggingEnabled": "second reason"},
        {f"AwsSolutions::AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/*]": "third reason"},
    ]


@pytest.mark.parametrize("partition_literals", [True, False])
def test_findings_with_tokens_are_acknowledged_under_any_feature_flags(
    tmp_path: Path, partition_literals: bool
) -> None:
    """A finding id naming a token (the partition, a bucket's ARN) is written as cdk-nag writes it, so the
    acknowledgement matches whether or not @aws-cdk/core:enablePartitionLiterals turns the partition into "aws"."""
    context = {**cdk_json_context(), "@aws-cdk/core:enablePartitionLiterals": partition_literals}
    app = App(context=context, outdir=str(tmp_path), analytics_reporting=False)
    stack = Stack(app, "Tokens", env=Environment(account="123456789012", region="us-west-1"))
    bucket = s3.Bucket(stack, "Bucket", enforce_ssl=True)
    tasks = stack.format_arn(service="ecs", resource="task", resource_name="cluster/*")
    policy = iam.ManagedPolicy(
        stack,
        "Policy",
        statements=[
            iam.PolicyStatement(actions=["ecs:GetTaskProtection"], resources=[tasks]),
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects("*")]),
        ],
    )
    acknowledge(bucket, "S1", "test fixture: access logs are out of scope for this check")
    for finding in (tasks, bucket.arn_for_objects("*")):
        acknowledge(policy, "IAM5", "test fixture: the finding names a token", finding=f"Resource::{finding}")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    suppressed = {v["ruleName"] for r in report["pluginReports"] for v in r["suppressedViolations"]}
    partition = "aws" if partition_literals else "<AWS::Partition>"
    assert suppressed >= {
        f"AwsSolutions-IAM5[Resource::arn:{partition}:ecs:us-west-1:123456789012:task/cluster/*]",
        "AwsSolutions-IAM5[Resource::<Bucket83908E77.Arn>/*]",
    }


def test_cdk_nag_notation_of_resolved_values() -> None:
    join = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::", {"Fn::GetAtt": ["B", "Arn"]}, "/*"]]}
    assert flatten_cfn_reference(join) == "arn:<AWS::Partition>:s3:::<B.Arn>/*"
    assert flatten_cfn_reference({"Fn::Sub": "arn:${AWS::Partition}:x"}) == "arn:<AWS::Partition>:x"
    assert flatten_cfn_reference({"Fn::Select": [0, ["a"]]}) == '{"Fn::Select":[0,["a"]]}'


def test_app_synthesizes_with_no_unacknowledged_findings(synthesized: Synthesized) -> None:
    reports = _report(synthesized)["pluginReports"]
    assert isinstance(reports, list) and [r["pluginName"] for r in reports] == ["AwsSolutions", "NIST.800.53.R5"]
    for report in reports:
        assert (report["pluginName"], report["conclusion"], report["violations"]) == (
            report["pluginName"],
            "success",
            [],
        )


def test_every_acknowledgement_is_expected_and_reasoned(
    synthesized: Synthesized, environments: dict[str, EnvironmentConfig]
) -> None:
    reports = _report(synthesized)["pluginReports"]
    assert isinstance(reports, list)
    found = set()
    for suppressed in (s for report in reports for s in report["suppressedViolations"]):
        assert len(suppressed["reason"]) >= 80, f"{suppressed['ruleName']}: reason too thin for a reviewer"
        for construct in suppressed["violatingConstructs"]:
            found.add((suppressed["ruleName"], construct["constructPath"]))
    expected = {
        (rule.format(env=env).replace("<account>", environments[env].account), path.format(env=env))
        for env in ENV_NAMES
        for rule, path in EXPECTED_ACKNOWLEDGEMENTS
    }
    assert found == expected


def _acknowledgements(reports: list[dict[str, Any]]) -> set[tuple[str, str]]:
    found = set()
    for suppressed in (s for report in reports for s in report["suppressedViolations"]):
        assert len(suppressed["reason"]) >= 80, f"{suppressed['ruleName']}: reason too thin for a reviewer"
        for construct in suppressed["violatingConstructs"]:
            found.add((suppressed["ruleName"], construct["constructPath"]))
    return found


def test_monitoring_stacks_need_no_acknowledgement(synthesized: Synthesized) -> None:
    """Both packs pass on Callsaver-Monitoring-{env} as built (KMS-encrypted topic with a rotating key, every alarm
    with an action): nothing of it may appear among the acknowledgements."""
    reports = _report(synthesized)["pluginReports"]
    assert isinstance(reports, list)
    assert [f for f in _acknowledgements(reports) if "Callsaver-Monitoring-" in f[1]] == []
    assert {n for n in synthesized.stack_names() if n.startswith("Callsaver-Monitoring-")} == {
        f"Callsaver-Monitoring-{env}" for env in ENV_NAMES
    }


@pytest.mark.parametrize("variant", sorted(EXPECTED_REGISTRY_ACKNOWLEDGEMENTS))
def test_registry_stack_passes_both_packs_with_reasoned_acknowledgements(
    environments: dict[str, EnvironmentConfig], tmp_path: Path, variant: str
) -> None:
    registry = load_registry_config(CONFIG_DIR / REGISTRY_CONFIG_FILE, environments)
    if variant == "role_arn":
        registry = registry.model_copy(
            update={"push_github_subject": None, "push_role_arn": "arn:aws:iam::210987654321:role/callsaver-agent-ci"}
        )
    app = new_app(tmp_path)
    add_registry_stack(app, registry)
    enable_policy_checks(app)
    app.synth()
    # synth() raises on any unacknowledged finding; the report lists the packs only when something was acknowledged.
    reports = json.loads((tmp_path / "validation-report.json").read_text())["pluginReports"]
    assert all((r["conclusion"], r["violations"]) == ("success", []) for r in reports)
    if EXPECTED_REGISTRY_ACKNOWLEDGEMENTS[variant]:
        assert [r["pluginName"] for r in reports] == ["AwsSolutions", "NIST.800.53.R5"]
    assert _acknowledgements(reports) == EXPECTED_REGISTRY_ACKNOWLEDGEMENTS[variant]


@pytest.fixture(scope="module")
def lint_results(synthesized: Synthesized) -> dict[str, list[str]]:
    results = {}
    for name in synthesized.stack_names():
        artifact = synthesized.artifact(name)
        text = Path(artifact.template_full_path).read_text()
        matches = cfn_lint(text, artifact.environment.region)
        results[name] = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches]
    return results


def test_cfn_lint_finds_no_errors_or_warnings(lint_results: dict[str, list[str]]) -> None:
    assert len(lint_results) == 5 * len(ENV_NAMES)
    problems = {name: [m for m in found if m[0] in "EW"] for name, found in lint_results.items()}
    assert problems == {name: [] for name in lint_results}


def test_cfn_lint_does_report_a_broken_template() -> None:
    """Guards the test above against a linter that silently checks nothing."""
    broken = json.dumps({"Resources": {"B": {"Type": "AWS::S3::Bucket", "Properties": {"BucketNam": "x"}}}})
    assert any(m.rule.id.startswith("E") for m in cfn_lint(broken, "us-west-1"))
