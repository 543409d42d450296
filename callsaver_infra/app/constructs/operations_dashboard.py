"""OperationsDashboard: one CloudWatch dashboard per environment for the agent, the uploads and the deploys."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from callsaver_infra.app.constructs.agent_alarms import running_tasks, service_metric
from callsaver_infra.app.constructs.recording_alarms import request_metric

WIDTH = 12
HEIGHT = 6


class OperationsDashboard(Construct):
    """Running vs desired tasks, CPU and memory, uploads per hour, 4xx errors, deployments, alarm states."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        dashboard_name: str,
        cluster_name: str,
        service_name: str,
        cpu_target_percent: int,
        bucket_name: str,
        filter_id: str,
        errors_period_minutes: int,
        deploy_failed_rule_name: str,
        alarms: Sequence[cloudwatch.IAlarm],
    ) -> None:
        super().__init__(scope, construct_id)
        insights = {"ClusterName": cluster_name, "ServiceName": service_name}
        desired = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="DesiredTaskCount",
            dimensions_map=insights,
            statistic="Maximum",
            period=Duration.minutes(1),
        )
        deployments = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="DeploymentCount",
            dimensions_map=insights,
            statistic="Maximum",
            period=Duration.minutes(5),
            label="deployments in progress",
        )
        failed_deploys = cloudwatch.Metric(
            namespace="AWS/Events",
            metric_name="MatchedEvents",
            dimensions_map={"RuleName": deploy_failed_rule_name},
            statistic="Sum",
            period=Duration.minutes(5),
            label="failed and rolled back",
        )
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=dashboard_name,
            default_interval=Duration.days(1),
            widgets=[
                [
                    cloudwatch.GraphWidget(
                        title="Agent tasks: running vs desired",
                        left=[
                            running_tasks(cluster_name, service_name).with_(label="running"),
                            desired.with_(label="desired"),
                        ],
                        width=WIDTH,
                        height=HEIGHT,
                    ),
                    cloudwatch.GraphWidget(
                        title="Agent CPU and memory (%)",
                        left=[
                            service_metric(cluster_name, service_name, "CPUUtilization").with_(label="CPU"),
                            service_metric(cluster_name, service_name, "MemoryUtilization").with_(label="memory"),
                        ],
                        left_annotations=[
                            cloudwatch.HorizontalAnnotation(value=cpu_target_percent, label="CPU target")
                        ],
                        left_y_axis=cloudwatch.YAxisProps(min=0, max=100),
                        width=WIDTH,
                        height=HEIGHT,
                    ),
                ],
                [
                    cloudwatch.GraphWidget(
                        title="Recording uploads per hour (PUT requests)",
                        left=[request_metric(bucket_name, filter_id, "PutRequests", Duration.hours(1))],
                        width=WIDTH,
                        height=HEIGHT,
                    ),
                    cloudwatch.GraphWidget(
                        title=f"Upload 4xx errors per {errors_period_minutes} min",
                        left=[
                            request_metric(bucket_name, filter_id, "4xxErrors", Duration.minutes(errors_period_minutes))
                        ],
                        width=WIDTH,
                        height=HEIGHT,
                    ),
                ],
                [
                    cloudwatch.GraphWidget(
                        title="Agent deployments", left=[deployments, failed_deploys], width=WIDTH, height=HEIGHT
                    ),
                    cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=WIDTH, height=HEIGHT),
                ],
            ],
        )
