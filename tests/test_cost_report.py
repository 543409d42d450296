"""The cost-bearing resource counts and monthly estimates the benchmark prints, on our templates and on a
deliberately costly one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EnvNames
from callsaver_infra.ops.cost_report import (
    ASSUMED,
    HOURS_PER_MONTH,
    PRICES,
    TYPE_PRICES,
    CostCounts,
    common_layout,
    count_template,
    count_templates,
    monthly_cost,
)
from tests.helpers import Synthesized


def test_each_environment_runs_only_its_agent_tasks(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    names = EnvNames(env.name)
    stacks = [names.storage_stack, names.iam_stack, names.secrets_stack, names.agent_stack, names.monitoring_stack]
    counts = count_templates(synthesized.template_json(s) for s in stacks)
    no_recording = env.monitoring.max_hours_without_recording is not None
    # No NAT gateway, load balancer or interface endpoint (docs/architecture.md); min_tasks agents.
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
        task_memory_gb=env.agent.min_tasks * env.agent.memory_mib / 1024,
        task_public_ipv4_addresses=env.agent.min_tasks,  # public subnets, no NAT gateway
        secrets=12,  # 4 backend, 7 agent, the egress key pair
        container_insights_clusters=1,
        recording_buckets=1,
        recording_retention_days=env.storage.expiration_days,
        read_audit_trails=1,
        log_groups=1,
    )


COSTLY: dict[str, Any] = {
    "Resources": {
        "Nat1": {"Type": "AWS::EC2::NatGateway", "Properties": {}},
        "Nat2": {"Type": "AWS::EC2::NatGateway", "Properties": {}},
        "Alb": {"Type": "AWS::ElasticLoadBalancingV2::LoadBalancer", "Properties": {}},
        "Clb": {"Type": "AWS::ElasticLoadBalancing::LoadBalancer", "Properties": {}},
        "Ecr": {"Type": "AWS::EC2::VPCEndpoint", "Properties": {"VpcEndpointType": "Interface"}},
        "S3": {"Type": "AWS::EC2::VPCEndpoint", "Properties": {}},  # a gateway endpoint: free
        "Task": {"Type": "AWS::ECS::TaskDefinition", "Properties": {"Cpu": "1024", "Memory": "2048"}},
        "Svc": {
            "Type": "AWS::ECS::Service",
            "Properties": {
                "DesiredCount": 3,
                "TaskDefinition": {"Ref": "Task"},
                "NetworkConfiguration": {"AwsvpcConfiguration": {"AssignPublicIp": "ENABLED"}},
            },
        },
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
        "Bucket": {
            "Type": "AWS::S3::Bucket",
            "Properties": {
                "MetricsConfigurations": [{"Id": "a"}, {"Id": "b"}],
                "LifecycleConfiguration": {"Rules": [{"ExpirationInDays": 60}]},
            },
        },
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
        task_memory_gb=8.0,
        task_public_ipv4_addresses=3,
        recording_buckets=1,
        recording_retention_days=60,
    )


@pytest.mark.parametrize("template", [{}, {"Resources": {}}])
def test_an_empty_template_costs_nothing(template: dict[str, Any]) -> None:
    assert count_template(template) == CostCounts()


def test_monthly_cost_arithmetic_on_a_small_fixture() -> None:
    """Worked by hand: one 0.5 vCPU / 1 GB task with a public address, two secrets, a key, a two-metric alarm."""
    counts = CostCounts(
        running_tasks=1, task_vcpus=0.5, task_memory_gb=1.0, task_public_ipv4_addresses=1, secrets=2, kms_keys=1,
        alarms=1, alarm_metrics=2, recording_buckets=1, recording_retention_days=60, read_audit_trails=1,
    )  # fmt: skip
    cost = monthly_cost(counts)
    assert cost["Fargate vCPU"] == pytest.approx(0.5 * 730 * 0.04656)  # 16.99
    assert cost["Fargate memory"] == pytest.approx(1.0 * 730 * 0.00511)  # 3.73
    assert cost["public IPv4 addresses"] == pytest.approx(730 * 0.005)  # 3.65
    assert cost["Secrets Manager secrets"] == pytest.approx(0.80)
    assert cost["KMS keys"] == pytest.approx(1.00)
    assert cost["CloudWatch alarms"] == pytest.approx(0.20)
    # 10,000 minutes x 0.24 MB = 2.4 GB a month, kept 60 days: 4.8 GB stored; 2,500 recordings x 3 PUTs.
    assert cost["S3 recordings stored"] == pytest.approx(4.8 * 0.026)
    assert cost["S3 recording PUTs"] == pytest.approx(7.5 * 0.0055)
    assert cost["CloudTrail read data events"] == pytest.approx(0.05 * 0.10)  # 5,000 reads
    assert set(cost) == {
        "Fargate vCPU", "Fargate memory", "public IPv4 addresses", "Secrets Manager secrets", "KMS keys",
        "CloudWatch alarms", "S3 recordings stored", "S3 recording PUTs", "CloudTrail read data events",
    }  # fmt: skip
    assert sum(cost.values()) == pytest.approx(16.99 + 3.73 + 3.65 + 0.80 + 1.00 + 0.20 + 0.12 + 0.04 + 0.005, abs=0.02)


def test_the_common_layout_adds_a_nat_gateway_and_a_load_balancer() -> None:
    counts = CostCounts(running_tasks=1, task_vcpus=0.5, task_memory_gb=1.0, task_public_ipv4_addresses=1)
    common = monthly_cost(common_layout(counts))
    assert common["NAT gateway hours"] == pytest.approx(730 * 0.048)
    assert common["NAT gateway data"] == pytest.approx(ASSUMED["nat_processed_gb_per_month"] * 0.048)
    assert common["load balancer hours"] == pytest.approx(730 * (0.0252 + 0.008))
    # The task loses its address; the NAT gateway has one, the load balancer two.
    assert common["public IPv4 addresses"] == pytest.approx(3 * 730 * 0.005)
    assert sum(common.values()) - sum(monthly_cost(counts).values()) == pytest.approx(35.04 + 0.96 + 24.236 + 2 * 3.65)


def test_every_price_names_its_page_and_the_hours_are_awss() -> None:
    assert HOURS_PER_MONTH == 730
    for key, price in PRICES.items():
        assert price.usd > 0 and price.unit and "Pricing" in price.source, key


def test_every_resource_type_the_app_synthesizes_has_a_price_or_a_free_row() -> None:
    snapshots = sorted((Path(__file__).parent / "__snapshots__").glob("*/*.json"))
    types = {r["Type"] for f in snapshots for r in json.loads(f.read_text()).get("Resources", {}).values()}
    assert len(types) > 20
    assert sorted(types - set(TYPE_PRICES)) == []
    for kind, rows in TYPE_PRICES.items():
        if isinstance(rows, str):
            assert rows.startswith("free: "), kind
        else:
            assert rows and set(rows) <= set(PRICES), kind
    # Every price is used by some type.
    assert set(PRICES) == {key for rows in TYPE_PRICES.values() if not isinstance(rows, str) for key in rows}
