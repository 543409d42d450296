"""Callsaver-Monitoring-{env}: alarms, the alert topic, the deploy-failure rule and the dashboard."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from callsaver_infra.app.config import AgentConfig, CallRecordingConfig, MonitoringConfig, StorageConfig
from callsaver_infra.app.constructs.agent_alarms import AgentAlarms
from callsaver_infra.app.constructs.alert_topic import AlertTopic
from callsaver_infra.app.constructs.deploy_failure_rule import DeployFailureRule
from callsaver_infra.app.constructs.operations_dashboard import OperationsDashboard
from callsaver_infra.app.constructs.recording_alarms import RecordingAlarms
from callsaver_infra.app.names import RECORDING_METRICS_FILTER_ID, EnvNames, MonitoringOutputs


class MonitoringStack(Stack):
    """Watches the Agent and Storage stacks' resources, referenced by their names from config (no imports)."""

    def __init__(
        self,
        scope: Construct,
        *,
        names: EnvNames,
        monitoring: MonitoringConfig,
        agent: AgentConfig,
        storage: StorageConfig,
        recording: CallRecordingConfig,
        **kwargs: Any,
    ) -> None:
        """agent, storage and recording: what the alarms and the dashboard watch, by name."""
        super().__init__(scope, names.monitoring_stack, **kwargs)
        self.alert_topic = AlertTopic(
            self,
            "AlertTopic",
            topic_name=names.alert_topic,
            key_alias=names.alert_key_alias,
            emails=monitoring.email_subscriptions,
        )
        action = self.alert_topic.action
        self.agent_alarms = AgentAlarms(
            self,
            "AgentAlarms",
            env_name=names.env,
            cluster_name=names.agent_cluster,
            service_name=names.agent_service,
            log_group_name=names.agent_log_group,
            min_tasks=agent.min_tasks,
            max_tasks=agent.max_tasks,
            cpu_target_percent=agent.cpu_target_percent,
            down_minutes=monitoring.agent_down_minutes,
            saturation_minutes=monitoring.saturation_minutes,
            down_alarm_name=names.alarm_agent_down,
            saturated_alarm_name=names.alarm_agent_saturated,
            action=action,
        )
        self.recording_alarms = RecordingAlarms(
            self,
            "RecordingAlarms",
            env_name=names.env,
            bucket_name=storage.bucket_name,
            filter_id=RECORDING_METRICS_FILTER_ID,
            recording_prefix=recording.recording_prefix,
            errors_threshold=monitoring.upload_errors_threshold,
            errors_period_minutes=monitoring.upload_errors_period_minutes,
            max_hours_without_recording=monitoring.max_hours_without_recording,
            failing_alarm_name=names.alarm_uploads_failing,
            no_recording_alarm_name=names.alarm_no_recording,
            action=action,
        )
        self.deploy_failure_rule = DeployFailureRule(
            self,
            "DeployFailureRule",
            env_name=names.env,
            rule_name=names.deploy_failed_rule,
            cluster_name=names.agent_cluster,
            service_name=names.agent_service,
            log_group_name=names.agent_log_group,
            topic=self.alert_topic.topic,
        )
        self.dashboard = OperationsDashboard(
            self,
            "OperationsDashboard",
            dashboard_name=names.dashboard,
            cluster_name=names.agent_cluster,
            service_name=names.agent_service,
            cpu_target_percent=agent.cpu_target_percent,
            bucket_name=storage.bucket_name,
            filter_id=RECORDING_METRICS_FILTER_ID,
            errors_period_minutes=monitoring.upload_errors_period_minutes,
            deploy_failed_rule_name=names.deploy_failed_rule,
            alarms=[self.agent_alarms.down, self.agent_alarms.saturated, *self.recording_alarms.alarms],
        )
        topic = self.alert_topic.topic
        CfnOutput(self, MonitoringOutputs.TOPIC_ARN, value=topic.topic_arn, description="Alert topic")
        CfnOutput(self, MonitoringOutputs.DASHBOARD_NAME, value=names.dashboard, description="Dashboard")
