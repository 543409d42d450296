"""Rules of Callsaver-Agent-{env}: outbound-only Fargate service that drains calls, least-privilege roles."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match

from callsaver_infra.app.config import EnvironmentConfig, NetworkConfig
from callsaver_infra.app.names import AgentOutputs, EnvNames
from tests.helpers import Synthesized, synthesize

AGENT_SECRETS = {
    "LIVEKIT_API_KEY": "backend",
    "LIVEKIT_API_SECRET": "backend",
    "LIVEKIT_OUTBOUND_TRUNK_ID": "agent",
    "OPENAI_API_KEY": "agent",
    "DEEPGRAM_API_KEY": "agent",
    "CARTESIA_API_KEY": "agent",
    "ANTHROPIC_API_KEY": "agent",
    "ASSEMBLYAI_API_KEY": "agent",
    "GOOGLE_API_KEY": "agent",
}


def _tpl(synthesized: Synthesized, env: EnvironmentConfig) -> Any:
    return synthesized.template(EnvNames(env.name).agent_stack)


def _container(synthesized: Synthesized, env: EnvironmentConfig) -> dict[str, Any]:
    defs = Capture()
    _tpl(synthesized, env).has_resource_properties("AWS::ECS::TaskDefinition", {"ContainerDefinitions": defs})
    containers = defs.as_array()
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _policy_statements(synthesized: Synthesized, env: EnvironmentConfig, role_fragment: str) -> list[dict[str, Any]]:
    policies = _tpl(synthesized, env).find_resources("AWS::IAM::Policy")
    found = [p for p in policies.values() if role_fragment in p["Properties"]["Roles"][0]["Ref"]]
    assert len(found) == 1, f"expected one policy on the {role_fragment}"
    statements: list[dict[str, Any]] = found[0]["Properties"]["PolicyDocument"]["Statement"]
    return statements


def test_vpc_has_public_subnets_in_two_azs_and_no_nat(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    t.resource_count_is("AWS::EC2::VPC", 1)
    t.resource_count_is("AWS::EC2::NatGateway", 0)
    t.resource_count_is("AWS::EC2::EIP", 0)
    subnets = t.find_resources("AWS::EC2::Subnet")
    assert len(subnets) == 2
    zones = [s["Properties"]["AvailabilityZone"] for s in subnets.values()]
    # Chosen by CloudFormation at deploy time, so synth looks nothing up and no zone name is hard-coded.
    assert zones == [{"Fn::Select": [0, {"Fn::GetAZs": ""}]}, {"Fn::Select": [1, {"Fn::GetAZs": ""}]}]
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is True for s in subnets.values())


def test_no_load_balancer_and_no_ingress(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    t.resource_count_is("AWS::ElasticLoadBalancingV2::LoadBalancer", 0)
    t.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)
    groups = t.find_resources("AWS::EC2::SecurityGroup")
    assert len(groups) == 1
    (group,) = groups.values()
    assert "SecurityGroupIngress" not in group["Properties"]
    assert group["Properties"]["SecurityGroupEgress"] == [
        {"CidrIp": "0.0.0.0/0", "Description": "Allow all outbound traffic by default", "IpProtocol": "-1"}
    ]


def test_service_name_size_and_public_ip(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    t.has_resource_properties(
        "AWS::ECS::Service",
        {
            "ServiceName": f"callsaver-agent-{env.name}",
            "LaunchType": "FARGATE",
            "DesiredCount": 1,
            "NetworkConfiguration": {"AwsvpcConfiguration": {"AssignPublicIp": "ENABLED"}},
        },
    )
    t.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Cpu": str(env.agent.cpu),
            "Memory": str(env.agent.memory_mib),
            "NetworkMode": "awsvpc",
            "RequiresCompatibilities": ["FARGATE"],
        },
    )
    assert (env.agent.cpu, env.agent.memory_mib) == (512, 2048)


def test_deploys_never_drop_capacity_and_roll_back(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    _tpl(synthesized, env).has_resource_properties(
        "AWS::ECS::Service",
        {
            "DeploymentConfiguration": {
                "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
                "MinimumHealthyPercent": 100,
                "MaximumPercent": 200,
            }
        },
    )


def test_container_drains_and_reports_health(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    container = _container(synthesized, env)
    assert container["StopTimeout"] == 120
    check = container["HealthCheck"]
    assert check["Command"][0] == "CMD-SHELL" and "http://127.0.0.1:8081/" in check["Command"][1]
    assert (check["Interval"], check["Timeout"], check["Retries"], check["StartPeriod"]) == (30, 5, 3, 60)


def test_container_environment_and_image(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    container = _container(synthesized, env)
    # The agent name is the environment's own (never shared in one LiveKit project), under both variable names;
    # the recording settings let the agent record the calls it places.
    assert {e["Name"]: e["Value"] for e in container["Environment"]} == {
        "LIVEKIT_URL": "wss://callsaver-d8dm5v36.livekit.cloud",
        "LIVEKIT_WORKER_NAME": env.livekit.worker_name,
        "LIVEKIT_AGENT_NAME": env.livekit.worker_name,
        "LIVEKIT_SIP_ENDPOINT": "sip:callsaver-d8dm5v36.pstn.livekit.cloud",
        "SESSION_S3_BUCKET": f"callsaver-sessions-{env.name}",
        "SESSION_S3_REGION": "us-west-1",
        "SESSION_S3_FILEPATH": "{room_name}/{time}",
    }
    assert env.livekit.worker_name == ("callsaver-agent" if env.name == "production" else f"callsaver-agent-{env.name}")
    image = container["Image"]["Fn::Join"][1]
    assert image[0] == f"{env.account}.dkr.ecr.{env.region}."
    assert image[-1] == f"/{env.agent.image_repository}:{env.agent.image_tag}"


def test_container_secrets_come_from_the_right_namespaces(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    container = _container(synthesized, env)
    prefix = f"arn:aws:secretsmanager:{env.region}:{env.account}:secret:callsaver/{env.name}/"
    assert {s["Name"]: s["ValueFrom"] for s in container["Secrets"]} == {
        **{key: f"{prefix}{namespace}/{key}" for key, namespace in AGENT_SECRETS.items()},
        # Exactly the two JSON keys of the egress credentials secret (ECS's secret-arn:json-key:: form).
        "SESSION_S3_ACCESS_KEY_ID": f"{prefix}egress/s3-access-key:accessKeyId::",
        "SESSION_S3_SECRET_ACCESS_KEY": f"{prefix}egress/s3-access-key:secretAccessKey::",
    }


def test_execution_role_reads_exactly_the_agent_secrets(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    statements = _policy_statements(synthesized, env, "ExecutionRole")
    secret_statements = [s for s in statements if any("secretsmanager" in a for a in _actions(s))]
    assert len(secret_statements) == 1
    (secret_statement,) = secret_statements
    assert sorted(_actions(secret_statement)) == ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    prefix = f"arn:aws:secretsmanager:{env.region}:{env.account}:secret:callsaver/{env.name}/"
    expected = [f"{prefix}{ns}/{k}-??????" for k, ns in AGENT_SECRETS.items()] + [
        f"{prefix}egress/s3-access-key-??????"
    ]
    assert sorted(secret_statement["Resource"]) == sorted(expected)
    other = sorted(a for s in statements if s is not secret_statement for a in _actions(s))
    assert other == [
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetAuthorizationToken",
        "ecr:GetDownloadUrlForLayer",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    ]


def test_task_role_may_only_manage_scale_in_protection(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    statements = _policy_statements(synthesized, env, "TaskRole")
    assert statements == [
        {
            "Sid": "ProtectTasksWithActiveCalls",
            "Effect": "Allow",
            "Action": ["ecs:GetTaskProtection", "ecs:UpdateTaskProtection"],
            "Resource": f"arn:aws:ecs:{env.region}:{env.account}:task/callsaver-{env.name}/*",
        }
    ]


def test_autoscaling_1_to_2_on_cpu_scaling_out_faster_than_in(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    t.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {
            "MinCapacity": env.agent.min_tasks,
            "MaxCapacity": env.agent.max_tasks,
            "ScalableDimension": "ecs:service:DesiredCount",
        },
    )
    config = Capture()
    t.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {"PolicyType": "TargetTrackingScaling", "TargetTrackingScalingPolicyConfiguration": config},
    )
    tracking = config.as_object()
    assert tracking["TargetValue"] == env.agent.cpu_target_percent == 80
    assert tracking["PredefinedMetricSpecification"] == {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}
    assert tracking["ScaleOutCooldown"] < tracking["ScaleInCooldown"]
    assert (env.agent.min_tasks, env.agent.max_tasks) == (1, 2)


def test_logs_go_to_the_named_group_with_configured_retention(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    t.has_resource(
        "AWS::Logs::LogGroup",
        {
            "Properties": {
                "LogGroupName": f"/callsaver/{env.name}/agent",
                "RetentionInDays": env.agent.log_retention_days,
            },
            "DeletionPolicy": "Retain",
        },
    )
    log_config = _container(synthesized, env)["LogConfiguration"]
    assert log_config["LogDriver"] == "awslogs" and log_config["Options"]["awslogs-stream-prefix"] == "agent"


def test_outputs(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    t = _tpl(synthesized, env)
    t.has_output(AgentOutputs.CLUSTER_NAME, {"Value": {"Ref": Match.string_like_regexp("^AgentServiceCluster")}})
    t.has_output(
        AgentOutputs.SERVICE_NAME, {"Value": {"Fn::GetAtt": [Match.string_like_regexp("^AgentService"), "Name"]}}
    )
    t.has_output(AgentOutputs.LOG_GROUP, {"Value": {"Ref": Match.string_like_regexp("^AgentServiceLogs")}})
    t.has_resource_properties("AWS::ECS::Cluster", {"ClusterName": f"callsaver-{env.name}"})


def test_agent_stack_imports_nothing(synthesized: Synthesized, env: EnvironmentConfig) -> None:
    assert "Fn::ImportValue" not in str(synthesized.template_json(EnvNames(env.name).agent_stack))


def test_existing_vpc_by_id_creates_no_network(environments: dict[str, EnvironmentConfig], tmp_path: Any) -> None:
    staging = environments["staging"]
    network = NetworkConfig(
        existing_vpc_id="vpc-0123456789abcdef0",
        existing_subnet_ids=("subnet-0123456789abcdef0", "subnet-0fedcba9876543210"),
        existing_subnet_zones=("us-west-1a", "us-west-1c"),
    )
    config = staging.model_copy(update={"name": "byo", "network": network})
    result = synthesize([config], tmp_path)
    t = result.template(EnvNames("byo").agent_stack)
    for kind in ("AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::InternetGateway"):
        t.resource_count_is(kind, 0)
    t.has_resource_properties(
        "AWS::ECS::Service",
        {
            "NetworkConfiguration": {
                "AwsvpcConfiguration": {"Subnets": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]}
            }
        },
    )
    t.has_resource_properties("AWS::EC2::SecurityGroup", {"VpcId": "vpc-0123456789abcdef0"})


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ({"existing_vpc_id": "vpc-0123456789abcdef0"}, "set existing_vpc_id, existing_subnet_ids and"),
        ({"existing_vpc_id": "vpc-12"}, "is not a VPC id"),
        (
            {
                "existing_vpc_id": "vpc-0123456789abcdef0",
                "existing_subnet_ids": ["subnet-0123456789abcdef0"],
                "existing_subnet_zones": ["us-west-1a"],
            },
            "must span at least two availability zones",
        ),
    ],
)
def test_bad_network_config_is_rejected(network: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NetworkConfig.model_validate(network)
