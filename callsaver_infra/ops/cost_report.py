"""Cost-bearing resources per environment, counted from synthesized templates, so a reviewer sees cost drift.

Counts what is billed by the hour whether or not calls come in: NAT gateways, load balancers, interface VPC
endpoints, and Fargate tasks at the services' desired count (with their vCPU); and what monitoring bills per month:
CloudWatch alarms (priced per metric they evaluate, so a metric-math alarm counts each of its metrics), dashboards,
S3 request-metrics configurations (each publishes S3's request metrics, billed as custom metrics) and KMS keys.
Used by benchmarks/synth_bench.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

LOAD_BALANCER_TYPES = frozenset(
    {"AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::ElasticLoadBalancing::LoadBalancer"}
)


@dataclass(frozen=True)
class CostCounts:
    """Always-on, billed-by-the-hour resources of some templates."""

    nat_gateways: int = 0
    load_balancers: int = 0
    interface_endpoints: int = 0
    running_tasks: int = 0
    task_vcpus: float = 0.0
    alarms: int = 0
    alarm_metrics: int = 0
    dashboards: int = 0
    request_metrics_configurations: int = 0
    kms_keys: int = 0

    def __add__(self, other: CostCounts) -> CostCounts:
        return CostCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


def count_template(template: Mapping[str, Any]) -> CostCounts:
    """The cost-bearing resources of one CloudFormation template."""
    resources: Mapping[str, Any] = template.get("Resources", {})
    nat = lbs = endpoints = tasks = 0
    vcpus = 0.0
    monitoring = CostCounts()
    for resource in resources.values():
        kind = resource.get("Type")
        props: Mapping[str, Any] = resource.get("Properties", {})
        if kind == "AWS::EC2::NatGateway":
            nat += 1
        elif kind in LOAD_BALANCER_TYPES:
            lbs += 1
        elif kind == "AWS::EC2::VPCEndpoint" and props.get("VpcEndpointType") == "Interface":
            # Gateway endpoints (S3, DynamoDB; the default type) are free; interface endpoints bill per AZ-hour.
            endpoints += 1
        elif kind == "AWS::ECS::Service":
            # CloudFormation starts a service without DesiredCount at 1 task.
            desired = props.get("DesiredCount", 1)
            count = desired if isinstance(desired, int) else 1
            tasks += count
            vcpus += count * _task_cpu(resources, props.get("TaskDefinition")) / 1024
        elif kind == "AWS::CloudWatch::Alarm":
            metrics = sum("MetricStat" in m for m in props.get("Metrics", [])) or 1
            monitoring = monitoring + CostCounts(alarms=1, alarm_metrics=metrics)
        elif kind == "AWS::CloudWatch::Dashboard":
            monitoring = monitoring + CostCounts(dashboards=1)
        elif kind == "AWS::S3::Bucket":
            monitoring = monitoring + CostCounts(
                request_metrics_configurations=len(props.get("MetricsConfigurations", []))
            )
        elif kind == "AWS::KMS::Key":
            monitoring = monitoring + CostCounts(kms_keys=1)
    return CostCounts(nat, lbs, endpoints, tasks, vcpus) + monitoring


def _task_cpu(resources: Mapping[str, Any], task_definition: Any) -> int:
    if isinstance(task_definition, Mapping) and "Ref" in task_definition:
        cpu = resources.get(task_definition["Ref"], {}).get("Properties", {}).get("Cpu")
        if isinstance(cpu, (int, str)) and str(cpu).isdigit():
            return int(cpu)
    return 0


def count_templates(templates: Iterable[Mapping[str, Any]]) -> CostCounts:
    """The sum over several templates (e.g. the stacks of one environment)."""
    total = CostCounts()
    for template in templates:
        total = total + count_template(template)
    return total
