"""The cost-bearing resource counts the benchmark prints, on our templates and on a deliberately costly one."""

from __future__ import annotations

from typing import Any

import pytest

from callsaver_infra.config import EnvironmentConfig
from callsaver_infra.cost_report import CostCounts, count_template, count_templates
from callsaver_infra.names import EnvNames
from tests.helpers import Synthesized


def test_each_environment_runs_only_its_agent_tasks(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    names = EnvNames(env.name)
    stacks = [names.storage_stack, names.iam_stack, names.secrets_stack, names.agent_stack, names.monitoring_stack]
    counts = count_templates(synthesized.template_json(s) for s in stacks)
    no_recording = env.monitoring.max_hours_without_recording is not None
    # No NAT gateway, load balancer or interface endpoint (README, "What gets deployed"); min_tasks agents.
    # Monitoring: down (1 metric), saturated (2 metrics in its math), uploads failing (1), optionally no recording.
    assert counts == CostCounts(
        nat_gateways=0,
        load_balancers=0,
        interface_endpoints=0,
        running_tasks=env.agent.min_tasks,
        task_vcpus=env.agent.min_tasks * env.agent.cpu / 1024,
        alarms=3 + no_recording,
        alarm_metrics=4 + no_recording,
        dashboards=1,
        request_metrics_configurations=1,
        kms_keys=2,  # the recordings' key (Storage) and the alert topic's key (Monitoring)
    )


COSTLY: dict[str, Any] = {
    "Resources": {
        "Nat1": {"Type": "AWS::EC2::NatGateway", "Properties": {}},
        "Nat2": {"Type": "AWS::EC2::NatGateway", "Properties": {}},
        "Alb": {"Type": "AWS::ElasticLoadBalancingV2::LoadBalancer", "Properties": {}},
        "Clb": {"Type": "AWS::ElasticLoadBalancing::LoadBalancer", "Properties": {}},
        "Ecr": {"Type": "AWS::EC2::VPCEndpoint", "Properties": {"VpcEndpointType": "Interface"}},
        "S3": {"Type": "AWS::EC2::VPCEndpoint", "Properties": {}},  # a gateway endpoint: free
        "Task": {"Type": "AWS::ECS::TaskDefinition", "Properties": {"Cpu": "1024"}},
        "Svc": {"Type": "AWS::ECS::Service", "Properties": {"DesiredCount": 3, "TaskDefinition": {"Ref": "Task"}}},
        "Default": {"Type": "AWS::ECS::Service", "Properties": {"TaskDefinition": {"Ref": "Task"}}},
        "Plain": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"MetricName": "x"}},
        "Math": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "Metrics": [
                    {"Id": "e", "Expression": "a+b"},
                    {"Id": "a", "MetricStat": {}},
                    {"Id": "b", "MetricStat": {}},
                ]
            },
        },
        "Board": {"Type": "AWS::CloudWatch::Dashboard", "Properties": {}},
        "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"MetricsConfigurations": [{"Id": "a"}, {"Id": "b"}]}},
        "Key": {"Type": "AWS::KMS::Key", "Properties": {}},
    }
}


def test_a_costly_template_is_counted() -> None:
    assert count_template(COSTLY) == CostCounts(
        nat_gateways=2,
        load_balancers=2,
        interface_endpoints=1,
        running_tasks=4,
        task_vcpus=4.0,
        alarms=2,
        alarm_metrics=3,
        dashboards=1,
        request_metrics_configurations=2,
        kms_keys=1,
    )


@pytest.mark.parametrize("template", [{}, {"Resources": {}}])
def test_an_empty_template_costs_nothing(template: dict[str, Any]) -> None:
    assert count_template(template) == CostCounts()
