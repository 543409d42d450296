"""AgentAlarms: the agent's service is down (too few tasks) or saturated (at max tasks and still busy)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

MINUTE = Duration.minutes(1)


def running_tasks(cluster_name: str, service_name: str, statistic: str = "Minimum") -> cloudwatch.Metric:
    """Container Insights' count of the service's RUNNING tasks, per minute."""
    return cloudwatch.Metric(
        namespace="ECS/ContainerInsights",
        metric_name="RunningTaskCount",
        dimensions_map={"ClusterName": cluster_name, "ServiceName": service_name},
        statistic=statistic,
        period=MINUTE,
    )


def service_metric(cluster_name: str, service_name: str, metric_name: str) -> cloudwatch.Metric:
    """An AWS/ECS service metric (CPUUtilization, MemoryUtilization), averaged over the tasks, per minute."""
    return cloudwatch.Metric(
        namespace="AWS/ECS",
        metric_name=metric_name,
        dimensions_map={"ClusterName": cluster_name, "ServiceName": service_name},
        statistic="Average",
        period=MINUTE,
    )


class AgentAlarms(Construct):
    """Two alarms on the agent's Fargate service, each notifying `action` when it fires and when it clears."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        cluster_name: str,
        service_name: str,
        log_group_name: str,
        min_tasks: int,
        max_tasks: int,
        cpu_target_percent: int,
        down_minutes: int,
        saturation_minutes: int,
        down_alarm_name: str,
        saturated_alarm_name: str,
        action: cloudwatch.IAlarmAction,
    ) -> None:
        super().__init__(scope, construct_id)
        check_first = (
            f"Check first: `callsaver-infra status --env {env_name}`, then "
            f"`aws ecs describe-services --cluster {cluster_name} --services {service_name} "
            "--query 'services[0].events[:10]'` and the log group "
            f"{log_group_name}."
        )
        # Missing data is breaching: Container Insights reports the count every minute while the service exists,
        # so silence means the service, the cluster or its metrics are gone; for a phone line, not knowing is as
        # bad as knowing it is down.
        self.down = cloudwatch.Alarm(
            self,
            "Down",
            alarm_name=down_alarm_name,
            alarm_description=(
                f"CallSaver {env_name}: fewer than {min_tasks} agent task(s) running for {down_minutes} minute(s); "
                f"callers get silence. {check_first} Stopped tasks say why in their stoppedReason "
                f"(`aws ecs list-tasks --cluster {cluster_name} --desired-status STOPPED`)."
            ),
            metric=running_tasks(cluster_name, service_name),
            threshold=min_tasks,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=down_minutes,
            datapoints_to_alarm=down_minutes,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        # One math alarm, not a composite of two: both conditions must hold in the same minutes. Missing data is
        # not breaching: saturation cannot be inferred without data, and the down alarm reports missing counts.
        self.saturated = cloudwatch.Alarm(
            self,
            "Saturated",
            alarm_name=saturated_alarm_name,
            alarm_description=(
                f"CallSaver {env_name}: {max_tasks} agent task(s) (agent.max_tasks) with average CPU above "
                f"{cpu_target_percent}% (agent.cpu_target_percent) for {saturation_minutes} minute(s); autoscaling "
                "cannot add tasks, and workers past their load threshold refuse new calls. "
                f"{check_first} Raise agent.max_tasks or the task size in config/{env_name}.toml and deploy."
            ),
            metric=cloudwatch.MathExpression(
                expression=f"IF((tasks >= {max_tasks}) AND (cpu > {cpu_target_percent}), 1, 0)",
                using_metrics={
                    "tasks": running_tasks(cluster_name, service_name),
                    "cpu": service_metric(cluster_name, service_name, "CPUUtilization"),
                },
                label="at max tasks and above the CPU target",
                period=MINUTE,
            ),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=saturation_minutes,
            datapoints_to_alarm=saturation_minutes,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        for alarm in (self.down, self.saturated):
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
