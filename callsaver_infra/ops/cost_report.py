"""Cost-bearing resources per environment, counted from synthesized templates, and their estimated monthly cost.

Counts what is billed by the hour whether or not calls come in: NAT gateways, load balancers, interface VPC
endpoints, Fargate tasks at the services' desired count (vCPU, memory, public IPv4 addresses); what is billed per
month: secrets, KMS keys, CloudWatch alarms (per metric they evaluate, so a metric-math alarm counts each of its
metrics), dashboards, S3 request-metrics configurations and Container Insights (both billed as custom metrics); and
what scales with calls: recordings stored and PUT, reads logged by the read audit trail, agent logs. PRICES is a
pinned, dated us-west-1 price table; ASSUMED states the usage the estimate assumes. Used by benchmarks/cost_bench.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

LOAD_BALANCER_TYPES = frozenset(
    {"AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::ElasticLoadBalancing::LoadBalancer"}
)
HOURS_PER_MONTH = 730  # AWS's own convention on its pricing pages

REGION = "us-west-1"
# The date the prices below were recorded: the list prices of the named AWS pricing pages for US West (N. California)
# as known to their author that day, NOT checked against the live pages (the machine that wrote them reaches no AWS
# page; synth and tests are offline anyway). Check each against its page before relying on a figure, then move
# this date (PRICES_CHECKED says whether that happened).
PRICES_AS_OF = "2026-11-24"
PRICES_CHECKED = False


@dataclass(frozen=True)
class Price:
    """One list price: USD per unit, and the AWS pricing page it is from."""

    usd: float
    unit: str
    source: str


PRICES: Mapping[str, Price] = {
    "fargate_vcpu_hour": Price(0.04656, "vCPU-hour", "AWS Fargate Pricing, Linux/X86, US West (N. California)"),
    "fargate_gb_hour": Price(0.00511, "GB-hour", "AWS Fargate Pricing, Linux/X86, US West (N. California)"),
    "public_ipv4_hour": Price(0.005, "address-hour", "Amazon VPC Pricing, Public IPv4 Address (in-use)"),
    "secret_month": Price(0.40, "secret-month", "AWS Secrets Manager Pricing"),
    "kms_key_month": Price(1.00, "key-month", "AWS Key Management Service Pricing, customer managed key"),
    "alarm_metric_month": Price(0.10, "alarm metric-month", "Amazon CloudWatch Pricing, standard resolution alarm"),
    "dashboard_month": Price(3.00, "dashboard-month", "Amazon CloudWatch Pricing, dashboards"),
    "custom_metric_month": Price(0.30, "metric-month", "Amazon CloudWatch Pricing, metrics (first 10,000)"),
    "logs_ingested_gb": Price(0.50, "GB ingested", "Amazon CloudWatch Pricing, logs, standard ingestion"),
    "s3_standard_gb_month": Price(0.026, "GB-month", "Amazon S3 Pricing, S3 Standard, first 50 TB, N. California"),
    "s3_put_1000": Price(0.0055, "1,000 PUT requests", "Amazon S3 Pricing, PUT/COPY/POST/LIST, N. California"),
    "cloudtrail_data_events_100k": Price(0.10, "100,000 data events", "AWS CloudTrail Pricing, data events"),
    "ecr_gb_month": Price(0.10, "GB-month", "Amazon ECR Pricing, storage"),
    "nat_gateway_hour": Price(0.048, "gateway-hour", "Amazon VPC Pricing, NAT gateway, US West (N. California)"),
    "nat_gateway_gb": Price(0.048, "GB processed", "Amazon VPC Pricing, NAT gateway, US West (N. California)"),
    "alb_hour": Price(0.0252, "ALB-hour", "Elastic Load Balancing Pricing, Application Load Balancer, N. California"),
    "alb_lcu_hour": Price(
        0.008, "LCU-hour", "Elastic Load Balancing Pricing, Application Load Balancer, N. California"
    ),
}

# The usage the estimate assumes (none of it is in the templates). A recording is Ogg/Opus, about 0.24 MB a minute.
ASSUMED: Mapping[str, float] = {
    "recorded_call_minutes_per_month": 10_000,
    "recording_mb_per_minute": 0.24,
    "average_call_minutes": 4,
    "puts_per_recording": 3,  # multipart upload: create, one part, complete
    "reads_per_recording": 2,  # playback URLs, each a data event of the read audit trail
    "agent_log_gb_per_month": 1,
    # Container Insights (classic) on a cluster with one service: its ECS metrics at cluster, service and task
    # family level, and the performance log events they are computed from.
    "container_insights_metrics_per_cluster": 30,
    "container_insights_log_gb_per_month": 0.5,
    "request_metrics_per_configuration": 10,  # the S3 request metrics that have data (Put, 4xx, 5xx, bytes, ...)
    "agent_image_gb": 1,
    "agent_images_kept": 10,
    # The common layout: one NAT gateway, one ALB across two subnets (two public addresses), one LCU on average, and
    # the agent's traffic (LiveKit media, model APIs) through the NAT gateway.
    "alb_public_ipv4_addresses": 2,
    "alb_lcus": 1,
    "nat_processed_gb_per_month": 20,
}

# Every resource type the app synthesizes (and those the comparison adds), with the prices it is billed by or why it
# is free; a test checks that the templates hold no type missing here.
TYPE_PRICES: Mapping[str, tuple[str, ...] | str] = {
    "AWS::ECS::Service": ("fargate_vcpu_hour", "fargate_gb_hour", "public_ipv4_hour"),
    "AWS::ECS::Cluster": ("custom_metric_month", "logs_ingested_gb"),  # Container Insights
    "AWS::SecretsManager::Secret": ("secret_month",),
    "AWS::KMS::Key": ("kms_key_month",),
    "AWS::CloudWatch::Alarm": ("alarm_metric_month",),
    "AWS::CloudWatch::Dashboard": ("dashboard_month",),
    "AWS::S3::Bucket": ("s3_standard_gb_month", "s3_put_1000", "custom_metric_month"),
    "AWS::CloudTrail::Trail": ("cloudtrail_data_events_100k",),
    "AWS::Logs::LogGroup": ("logs_ingested_gb",),
    "AWS::ECR::Repository": ("ecr_gb_month",),
    "AWS::EC2::NatGateway": ("nat_gateway_hour", "nat_gateway_gb", "public_ipv4_hour"),
    "AWS::ElasticLoadBalancingV2::LoadBalancer": ("alb_hour", "alb_lcu_hour", "public_ipv4_hour"),
    "AWS::ECS::TaskDefinition": "free: billed through the service's running tasks",
    "AWS::ApplicationAutoScaling::ScalableTarget": "free: Application Auto Scaling has no charge",
    "AWS::ApplicationAutoScaling::ScalingPolicy": "free: Application Auto Scaling has no charge",
    "AWS::EC2::VPC": "free: a VPC, its subnets, route tables and gateways attachments have no charge",
    "AWS::EC2::Subnet": "free: no charge",
    "AWS::EC2::RouteTable": "free: no charge",
    "AWS::EC2::Route": "free: no charge",
    "AWS::EC2::SubnetRouteTableAssociation": "free: no charge",
    "AWS::EC2::InternetGateway": "free: no charge (data transfer out is billed per GB, the same in both layouts)",
    "AWS::EC2::VPCGatewayAttachment": "free: no charge",
    "AWS::EC2::SecurityGroup": "free: no charge",
    "AWS::Events::Rule": "free: AWS service events delivered to rules have no charge",
    "AWS::IAM::Role": "free: IAM has no charge",
    "AWS::IAM::Policy": "free: IAM has no charge",
    "AWS::IAM::ManagedPolicy": "free: IAM has no charge",
    "AWS::IAM::User": "free: IAM has no charge",
    "AWS::IAM::AccessKey": "free: IAM has no charge",
    "AWS::IAM::OIDCProvider": "free: IAM has no charge",
    "AWS::KMS::Alias": "free: aliases have no charge",
    "AWS::S3::BucketPolicy": "free: no charge",
    "AWS::SecretsManager::ResourcePolicy": "free: no charge",
    "AWS::SNS::Topic": "free: a few alerts a month stay within SNS's always-free publishes and email deliveries",
    "AWS::SNS::TopicPolicy": "free: no charge",
}


@dataclass(frozen=True)
class CostCounts:
    """Cost-bearing resources of some templates."""

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
    task_memory_gb: float = 0.0
    task_public_ipv4_addresses: int = 0
    secrets: int = 0
    container_insights_clusters: int = 0
    recording_buckets: int = 0  # buckets publishing request metrics: the recordings, at the assumed volume
    recording_retention_days: int = 0
    read_audit_trails: int = 0  # trails logging S3 read data events
    log_groups: int = 0
    image_repositories: int = 0

    def __add__(self, other: CostCounts) -> CostCounts:
        summed = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        summed["recording_retention_days"] = max(self.recording_retention_days, other.recording_retention_days)
        return CostCounts(**summed)


def count_template(template: Mapping[str, Any]) -> CostCounts:
    """The cost-bearing resources of one CloudFormation template."""
    resources: Mapping[str, Any] = template.get("Resources", {})
    total = CostCounts()
    for resource in resources.values():
        total = total + _count(resources, resource.get("Type"), resource.get("Properties", {}))
    return total


def _count(resources: Mapping[str, Any], kind: str | None, props: Mapping[str, Any]) -> CostCounts:
    if kind == "AWS::EC2::NatGateway":
        return CostCounts(nat_gateways=1)
    if kind in LOAD_BALANCER_TYPES:
        return CostCounts(load_balancers=1)
    if kind == "AWS::EC2::VPCEndpoint" and props.get("VpcEndpointType") == "Interface":
        # Gateway endpoints (S3, DynamoDB; the default type) are free; interface endpoints bill per AZ-hour.
        return CostCounts(interface_endpoints=1)
    if kind == "AWS::ECS::Service":
        # CloudFormation starts a service without DesiredCount at 1 task.
        desired = props.get("DesiredCount", 1)
        count = desired if isinstance(desired, int) else 1
        cpu, memory = _task_size(resources, props.get("TaskDefinition"))
        vpc = props.get("NetworkConfiguration", {}).get("AwsvpcConfiguration", {})
        public = count if vpc.get("AssignPublicIp") == "ENABLED" else 0
        return CostCounts(
            running_tasks=count,
            task_vcpus=count * cpu / 1024,
            task_memory_gb=count * memory / 1024,
            task_public_ipv4_addresses=public,
        )
    if kind == "AWS::ECS::Cluster":
        settings = props.get("ClusterSettings", [])
        insights = any(s.get("Name") == "containerInsights" and s.get("Value") != "disabled" for s in settings)
        return CostCounts(container_insights_clusters=int(insights))
    if kind == "AWS::CloudWatch::Alarm":
        metrics = sum("MetricStat" in m for m in props.get("Metrics", [])) or 1
        return CostCounts(alarms=1, alarm_metrics=metrics)
    if kind == "AWS::CloudWatch::Dashboard":
        return CostCounts(dashboards=1)
    if kind == "AWS::S3::Bucket":
        configurations = len(props.get("MetricsConfigurations", []))
        if not configurations:
            return CostCounts()
        rules = props.get("LifecycleConfiguration", {}).get("Rules", [])
        days = [r["ExpirationInDays"] for r in rules if isinstance(r.get("ExpirationInDays"), int)]
        return CostCounts(
            request_metrics_configurations=configurations,
            recording_buckets=1,
            recording_retention_days=min(days) if days else 365,  # no expiry: a year, stated in the output
        )
    if kind == "AWS::KMS::Key":
        return CostCounts(kms_keys=1)
    if kind == "AWS::SecretsManager::Secret":
        return CostCounts(secrets=1)
    if kind == "AWS::CloudTrail::Trail":
        selectors = props.get("EventSelectors", [])
        reads = any(s.get("ReadWriteType") in ("ReadOnly", "All") and s.get("DataResources") for s in selectors)
        return CostCounts(read_audit_trails=int(reads))
    if kind == "AWS::Logs::LogGroup":
        return CostCounts(log_groups=1)
    if kind == "AWS::ECR::Repository":
        return CostCounts(image_repositories=1)
    return CostCounts()


def _task_size(resources: Mapping[str, Any], task_definition: Any) -> tuple[int, int]:
    """(cpu units, memory MiB) of the referenced task definition; 0 when not literal."""
    if isinstance(task_definition, Mapping) and "Ref" in task_definition:
        props = resources.get(task_definition["Ref"], {}).get("Properties", {})
        return _int(props.get("Cpu")), _int(props.get("Memory"))
    return 0, 0


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, str)) and str(value).isdigit() else 0


def count_templates(templates: Iterable[Mapping[str, Any]]) -> CostCounts:
    """The sum over several templates (e.g. the stacks of one environment)."""
    total = CostCounts()
    for template in templates:
        total = total + count_template(template)
    return total


def monthly_cost(c: CostCounts) -> dict[str, float]:
    """Estimated USD per month, by line item, from the counts, PRICES and ASSUMED (items of zero left out)."""
    p = {key: price.usd for key, price in PRICES.items()}
    a = ASSUMED
    h = HOURS_PER_MONTH
    recorded_gb = a["recorded_call_minutes_per_month"] * a["recording_mb_per_minute"] / 1000
    recordings = a["recorded_call_minutes_per_month"] / a["average_call_minutes"]
    public_ipv4 = c.task_public_ipv4_addresses + c.nat_gateways + c.load_balancers * a["alb_public_ipv4_addresses"]
    items = {
        "Fargate vCPU": c.task_vcpus * h * p["fargate_vcpu_hour"],
        "Fargate memory": c.task_memory_gb * h * p["fargate_gb_hour"],
        "public IPv4 addresses": public_ipv4 * h * p["public_ipv4_hour"],
        "NAT gateway hours": c.nat_gateways * h * p["nat_gateway_hour"],
        "NAT gateway data": c.nat_gateways * a["nat_processed_gb_per_month"] * p["nat_gateway_gb"],
        "load balancer hours": c.load_balancers * h * (p["alb_hour"] + a["alb_lcus"] * p["alb_lcu_hour"]),
        "Secrets Manager secrets": c.secrets * p["secret_month"],
        "KMS keys": c.kms_keys * p["kms_key_month"],
        "Container Insights": c.container_insights_clusters
        * (
            a["container_insights_metrics_per_cluster"] * p["custom_metric_month"]
            + a["container_insights_log_gb_per_month"] * p["logs_ingested_gb"]
        ),
        "CloudWatch alarms": c.alarm_metrics * p["alarm_metric_month"],
        "CloudWatch dashboards": c.dashboards * p["dashboard_month"],
        "S3 request metrics": c.request_metrics_configurations
        * a["request_metrics_per_configuration"]
        * p["custom_metric_month"],
        # Steady state: each month's recordings are kept for the retention period.
        "S3 recordings stored": c.recording_buckets
        * recorded_gb
        * (c.recording_retention_days / 30)
        * p["s3_standard_gb_month"],
        "S3 recording PUTs": c.recording_buckets * recordings * a["puts_per_recording"] / 1000 * p["s3_put_1000"],
        "CloudTrail read data events": c.read_audit_trails
        * recordings
        * a["reads_per_recording"]
        / 100_000
        * p["cloudtrail_data_events_100k"],
        "agent logs": c.log_groups * a["agent_log_gb_per_month"] * p["logs_ingested_gb"],
        "agent images": c.image_repositories * a["agent_image_gb"] * a["agent_images_kept"] * p["ecr_gb_month"],
    }
    return {label: usd for label, usd in items.items() if usd}


def common_layout(c: CostCounts) -> CostCounts:
    """The same environment in the common layout: tasks in private subnets (no public addresses) behind one NAT
    gateway, and an application load balancer in front."""
    return replace(
        c, task_public_ipv4_addresses=0, nat_gateways=c.nat_gateways + 1, load_balancers=c.load_balancers + 1
    )
