"""Rules of Callsaver-Monitoring-{env}, asserted in every environment: the alert topic and who may publish to it,
each alarm's metric, statistic, threshold, period, evaluation, missing-data treatment and actions, the deploy-failure
rule, the dashboard, and the session bucket's request-metrics configuration the upload alarms read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import RECORDING_METRICS_FILTER_ID, EnvNames, MonitoringOutputs
from tests.helpers import Synthesized, cfn_lint, synthesize


def _tpl(synthesized: Synthesized, env: EnvironmentConfig) -> Template:
    return synthesized.template(EnvNames(env.name).monitoring_stack)


def _one(template: Template, kind: str, props: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    found = template.find_resources(kind, {"Properties": props} if props else None)
    assert len(found) == 1, f"expected one {kind} matching {props}, found {sorted(found)}"
    ((logical_id, resource),) = found.items()
    return logical_id, resource


def _alarm(template: Template, name: str) -> dict[str, Any]:
    props: dict[str, Any] = _one(template, "AWS::CloudWatch::Alarm", {"AlarmName": name})[1]["Properties"]
    return props


def _topic_ref(template: Template) -> dict[str, str]:
    return {"Ref": _one(template, "AWS::SNS::Topic")[0]}


def _assert_notifies_topic(template: Template, alarm: dict[str, Any]) -> None:
    topic = _topic_ref(template)
    assert alarm["AlarmActions"] == [topic]
    assert alarm["OKActions"] == [topic]
    assert alarm.get("ActionsEnabled", True) is True


def _with_monitoring(env: EnvironmentConfig, monitoring: dict[str, Any], **changes: Any) -> EnvironmentConfig:
    """env with other [monitoring] settings (and other sections changed), validated like a file."""
    data = {**env.model_dump(), "monitoring": monitoring, **changes}
    return EnvironmentConfig.model_validate(data)


@pytest.fixture(scope="module")
def configured(environments: dict[str, EnvironmentConfig], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """local with subscriptions, the no-recording alarm, other thresholds and a static recording prefix."""
    local = environments["local"]
    config = _with_monitoring(
        local,
        {
            "email_subscriptions": ("oncall@example.com", "ops@example.org"),
            "max_hours_without_recording": 6,
            "agent_down_minutes": 5,
            "saturation_minutes": 15,
            "upload_errors_threshold": 3,
            "upload_errors_period_minutes": 10,
        },
        call_recording={**local.call_recording.model_dump(), "filepath_template": "recordings/{room_name}/{time}"},
    )
    return config, synthesize([config], tmp_path_factory.mktemp("configured"))


def test_stack_targets_the_environment_and_deploys_after_what_it_watches(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    names = EnvNames(env.name)
    artifact = synthesized.artifact(names.monitoring_stack)
    assert (artifact.environment.account, artifact.environment.region) == (env.account, env.region)
    # From the manifest: asking jsii for artifact.dependencies would re-type the storage artifact's proxy.
    manifest = json.loads((synthesized.outdir / "manifest.json").read_text())
    assert {names.storage_stack, names.agent_stack} <= set(
        manifest["artifacts"][names.monitoring_stack]["dependencies"]
    )
    # Names, not imports: no export from any other stack, so none of them is locked by this one.
    assert "Fn::ImportValue" not in json.dumps(synthesized.template_json(names.monitoring_stack))


def test_topic_is_encrypted_with_its_own_rotated_key(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    key_id, key = _one(t, "AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    _one(
        t,
        "AWS::SNS::Topic",
        {"TopicName": f"callsaver-alerts-{env.name}", "KmsMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]}},
    )
    t.has_resource_properties("AWS::KMS::Alias", {"AliasName": f"alias/callsaver-alerts-{env.name}"})
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    services = [s for s in statements if "Service" in s["Principal"]]
    # Not alias/aws/sns: its policy cannot grant CloudWatch alarms the key, so they could never publish.
    assert services == [
        {
            "Sid": "AllowAlarmAndRulePublishersToEncrypt",
            "Effect": "Allow",
            "Principal": {"Service": ["cloudwatch.amazonaws.com", "events.amazonaws.com"]},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
        }
    ]


def test_only_this_accounts_alarms_and_rules_may_publish_over_tls(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    t = _tpl(synthesized, env)
    topic = _topic_ref(t)
    _, policy = _one(t, "AWS::SNS::TopicPolicy")
    assert policy["Properties"]["Topics"] == [topic]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert sorted(
        (s["Principal"]["Service"], s["Action"], json.dumps(s["Condition"], sort_keys=True)) for s in allows
    ) == [
        (
            "cloudwatch.amazonaws.com",
            "sns:Publish",
            json.dumps(
                {
                    "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:{env.region}:{env.account}:alarm:*"},
                    "StringEquals": {"aws:SourceAccount": env.account},
                },
                sort_keys=True,
            ),
        ),
        (
            "events.amazonaws.com",
            "sns:Publish",
            json.dumps(
                {
                    "ArnLike": {"aws:SourceArn": f"arn:aws:events:{env.region}:{env.account}:rule/*"},
                    "StringEquals": {"aws:SourceAccount": env.account},
                },
                sort_keys=True,
            ),
        ),
    ]
    denies = {json.dumps(s["Condition"], sort_keys=True) for s in statements if s["Effect"] == "Deny"}
    assert denies == {
        json.dumps({"Bool": {"aws:SecureTransport": "false"}}),
        json.dumps({"Bool": {"aws:PrincipalIsAWSService": "false"}}),
    }
    assert all(s["Resource"] == topic for s in statements)


def test_committed_environments_subscribe_what_config_lists(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    subscriptions = t.find_resources("AWS::SNS::Subscription")
    assert sorted(s["Properties"]["Endpoint"] for s in subscriptions.values()) == sorted(
        env.monitoring.email_subscriptions
    )


def test_agent_down_alarm(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    alarm = _alarm(t, EnvNames(env.name).alarm_agent_down)
    assert {k: alarm[k] for k in ("Namespace", "MetricName", "Statistic", "Period", "Dimensions")} == {
        "Namespace": "ECS/ContainerInsights",
        "MetricName": "RunningTaskCount",
        "Statistic": "Minimum",
        "Period": 60,
        "Dimensions": [
            {"Name": "ClusterName", "Value": f"callsaver-{env.name}"},
            {"Name": "ServiceName", "Value": f"callsaver-agent-{env.name}"},
        ],
    }
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", env.agent.min_tasks)
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (3, 3)
    assert alarm["TreatMissingData"] == "breaching"
    assert f"callsaver-infra status --env {env.name}" in alarm["AlarmDescription"]
    assert f"/callsaver/{env.name}/agent" in alarm["AlarmDescription"]
    _assert_notifies_topic(t, alarm)


def test_agent_saturated_alarm_needs_max_tasks_and_high_cpu_together(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    t = _tpl(synthesized, env)
    alarm = _alarm(t, EnvNames(env.name).alarm_agent_saturated)
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    (expression,) = [m for m in metrics.values() if "Expression" in m]
    assert expression["Expression"] == (
        f"IF((tasks >= {env.agent.max_tasks}) AND (cpu > {env.agent.cpu_target_percent}), 1, 0)"
    )
    assert expression["ReturnData"] is True
    stats = {
        i: (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"], m["MetricStat"]["Stat"],
            m["MetricStat"]["Period"], m["ReturnData"])
        for i, m in metrics.items() if "MetricStat" in m
    }  # fmt: skip
    assert stats == {
        "tasks": ("ECS/ContainerInsights", "RunningTaskCount", "Minimum", 60, False),
        "cpu": ("AWS/ECS", "CPUUtilization", "Average", 60, False),
    }
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (10, 10)
    assert alarm["TreatMissingData"] == "notBreaching"
    _assert_notifies_topic(t, alarm)


def test_uploads_failing_alarm(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    alarm = _alarm(t, EnvNames(env.name).alarm_uploads_failing)
    assert {k: alarm[k] for k in ("Namespace", "MetricName", "Statistic", "Period", "Dimensions")} == {
        "Namespace": "AWS/S3",
        "MetricName": "4xxErrors",
        "Statistic": "Sum",
        "Period": 300,
        "Dimensions": [
            {"Name": "BucketName", "Value": env.storage.bucket_name},
            {"Name": "FilterId", "Value": RECORDING_METRICS_FILTER_ID},
        ],
    }
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"
    assert f"push-egress --env {env.name} --verify" in alarm["AlarmDescription"]
    _assert_notifies_topic(t, alarm)


def test_no_recording_alarm_only_when_configured(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    found = t.find_resources(
        "AWS::CloudWatch::Alarm", {"Properties": {"AlarmName": EnvNames(env.name).alarm_no_recording}}
    )
    assert len(found) == (0 if env.monitoring.max_hours_without_recording is None else 1)


def test_bucket_metrics_configuration_feeds_the_upload_alarms(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    storage = synthesized.template(EnvNames(env.name).storage_stack)
    expected: dict[str, str] = {"Id": RECORDING_METRICS_FILTER_ID}
    if env.call_recording.recording_prefix:
        expected["Prefix"] = env.call_recording.recording_prefix
    _one(storage, "AWS::S3::Bucket", {"MetricsConfigurations": [expected]})


def test_deploy_failure_rule_matches_this_service_and_names_the_deployment(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    t = _tpl(synthesized, env)
    _, rule = _one(t, "AWS::Events::Rule")
    props = rule["Properties"]
    assert props["Name"] == EnvNames(env.name).deploy_failed_rule
    assert props["State"] == "ENABLED"
    assert props["EventPattern"] == {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Deployment State Change"],
        "resources": [
            f"arn:aws:ecs:{env.region}:{env.account}:service/callsaver-{env.name}/callsaver-agent-{env.name}"
        ],
        "detail": {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]},
    }
    (target,) = props["Targets"]
    assert target["Arn"] == _topic_ref(t)
    assert "RoleArn" not in target  # the topic policy admits EventBridge itself, not a role
    transformer = target["InputTransformer"]
    paths = transformer["InputPathsMap"]
    assert {"$.detail.deploymentId", "$.resources[0]", "$.detail.reason"} <= set(paths.values())
    template = transformer["InputTemplate"]
    by_path = {v: k for k, v in paths.items()}
    for path in ("$.detail.deploymentId", "$.resources[0]", "$.detail.reason"):
        assert f"<{by_path[path]}>" in template
    assert template.startswith('"') and template.endswith('"')  # SNS takes the message as a JSON string


def _dashboard_text(t: Template) -> str:
    _, dashboard = _one(t, "AWS::CloudWatch::Dashboard")
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else "REGION_OR_ARN" for p in parts)


def test_dashboard_shows_tasks_cpu_memory_uploads_errors_and_deployments(
    synthesized: Synthesized, env: EnvironmentConfig
) -> None:
    t = _tpl(synthesized, env)
    t.has_resource_properties("AWS::CloudWatch::Dashboard", {"DashboardName": f"Callsaver-{env.name}"})
    body = json.loads(_dashboard_text(t))
    metrics = {
        (m[0], m[1]) for w in body["widgets"] for m in w["properties"].get("metrics", []) if isinstance(m[0], str)
    }
    assert metrics == {
        ("ECS/ContainerInsights", "RunningTaskCount"),
        ("ECS/ContainerInsights", "DesiredTaskCount"),
        ("AWS/ECS", "CPUUtilization"),
        ("AWS/ECS", "MemoryUtilization"),
        ("AWS/S3", "PutRequests"),
        ("AWS/S3", "4xxErrors"),
        ("ECS/ContainerInsights", "DeploymentCount"),
        ("AWS/Events", "MatchedEvents"),
    }
    uploads = next(w for w in body["widgets"] if w["properties"].get("title", "").startswith("Recording uploads"))
    assert uploads["properties"]["metrics"][0][-1] == {"period": 3600, "stat": "Sum"}
    alarms = next(w for w in body["widgets"] if w["properties"].get("title") == "Alarms")
    assert len(alarms["properties"]["alarms"]) == 3 + (env.monitoring.max_hours_without_recording is not None)


def test_outputs_and_alarm_names_match_names_py(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    names = EnvNames(env.name)
    t = _tpl(synthesized, env)
    t.has_output(MonitoringOutputs.TOPIC_ARN, {"Value": _topic_ref(t)})
    t.has_output(MonitoringOutputs.DASHBOARD_NAME, {"Value": names.dashboard})
    alarm_names = {a["Properties"]["AlarmName"] for a in t.find_resources("AWS::CloudWatch::Alarm").values()}
    assert alarm_names <= set(names.alarms)
    assert alarm_names >= {names.alarm_agent_down, names.alarm_agent_saturated, names.alarm_uploads_failing}


# -- thresholds, periods, subscriptions and the recording prefix from config ---------------------------------


def test_configured_subscriptions_are_email(configured: Any) -> None:
    config, synthesized = configured
    t = _tpl(synthesized, config)
    subscriptions = t.find_resources("AWS::SNS::Subscription")
    assert sorted((s["Properties"]["Protocol"], s["Properties"]["Endpoint"]) for s in subscriptions.values()) == [
        ("email", "oncall@example.com"),
        ("email", "ops@example.org"),
    ]
    assert all(s["Properties"]["TopicArn"] == _topic_ref(t) for s in subscriptions.values())


def test_configured_thresholds_and_periods(configured: Any) -> None:
    config, synthesized = configured
    t, names = _tpl(synthesized, config), EnvNames(config.name)
    down = _alarm(t, names.alarm_agent_down)
    assert (down["EvaluationPeriods"], down["DatapointsToAlarm"], down["Period"]) == (5, 5, 60)
    saturated = _alarm(t, names.alarm_agent_saturated)
    assert (saturated["EvaluationPeriods"], saturated["DatapointsToAlarm"]) == (15, 15)
    failing = _alarm(t, names.alarm_uploads_failing)
    assert (failing["Threshold"], failing["Period"], failing["EvaluationPeriods"]) == (3, 600, 1)
    assert "s3://callsaver-sessions-local/recordings/" in failing["AlarmDescription"]


def test_configured_no_recording_alarm(configured: Any) -> None:
    config, synthesized = configured
    t = _tpl(synthesized, config)
    alarm = _alarm(t, EnvNames(config.name).alarm_no_recording)
    assert {k: alarm[k] for k in ("Namespace", "MetricName", "Statistic", "Period")} == {
        "Namespace": "AWS/S3",
        "MetricName": "PutRequests",
        "Statistic": "Sum",
        "Period": 3600,
    }
    assert alarm["Dimensions"] == [
        {"Name": "BucketName", "Value": config.storage.bucket_name},
        {"Name": "FilterId", "Value": RECORDING_METRICS_FILTER_ID},
    ]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", 1)
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (6, 6)
    # S3 sends no data point for an hour without requests: that silence is what this alarm reports.
    assert alarm["TreatMissingData"] == "breaching"
    _assert_notifies_topic(t, alarm)


def test_static_prefix_of_the_filepath_template_filters_the_metrics(configured: Any) -> None:
    config, synthesized = configured
    storage = synthesized.template(EnvNames(config.name).storage_stack)
    storage.has_resource_properties(
        "AWS::S3::Bucket",
        {"MetricsConfigurations": [{"Id": RECORDING_METRICS_FILTER_ID, "Prefix": "recordings/"}]},
    )


@pytest.mark.parametrize(
    ("template", "prefix"),
    [("{room_name}/{time}", ""), ("calls/{room_name}/{time}", "calls/"), ("rec-{room_id}", "rec-")],
)
def test_recording_prefix_is_the_text_before_the_first_variable(
    environments: dict[str, EnvironmentConfig], template: str, prefix: str
) -> None:
    local = environments["local"]
    egress = {**local.call_recording.model_dump(), "filepath_template": template}
    config = EnvironmentConfig.model_validate({**local.model_dump(), "call_recording": egress})
    assert config.call_recording.recording_prefix == prefix


def test_cdk_nag_and_cfn_lint_pass_with_everything_configured(configured: Any) -> None:
    config, synthesized = configured
    report = json.loads((Path(synthesized.outdir) / "validation-report.json").read_text())
    assert report["pluginReports"][0]["violations"] == []
    artifact = synthesized.artifact(EnvNames(config.name).monitoring_stack)
    problems = cfn_lint(Path(artifact.template_full_path).read_text(), config.region)
    assert [f"{m.rule.id} {m.message}" for m in problems if m.rule.id[0] in "EW"] == []


def test_match_helper_is_strict() -> None:
    """Guards _one: a property filter that matches nothing must fail, not pass silently."""
    t = Template.from_json({"Resources": {"A": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "a"}}}})
    with pytest.raises(AssertionError, match="expected one"):
        _one(t, "AWS::SNS::Topic", {"TopicName": Match.exact("b")})
