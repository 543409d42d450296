"""AgentService: the LiveKit Python agent as an ECS Fargate service that drains calls before it stops."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from callsaver_infra.app.config import AgentConfig
from callsaver_infra.app.nag import NIST, Ack, acknowledge, acknowledge_all
from callsaver_infra.app.regions import partition

# livekit-agents drains active jobs on SIGTERM; 120 s is the most Fargate waits before SIGKILL.
STOP_TIMEOUT_SECONDS = 120
# The worker's HTTP health endpoint (livekit-agents serves GET / on 8081). The image is Python, without curl.
HEALTH_PORT = 8081
HEALTH_COMMAND = (
    f"python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{HEALTH_PORT}/', timeout=4)\""
)
SCALE_OUT_COOLDOWN = Duration.seconds(60)
# Slower in than out: a task that scales in must drain its calls first.
SCALE_IN_COOLDOWN = Duration.seconds(300)


class AgentService(Construct):
    """Cluster, task definition, Fargate service and CPU autoscaling of the agent; exposes them as attributes."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        agent: AgentConfig,
        cluster_name: str,
        service_name: str,
        log_group_name: str,
        execution_role_name: str,
        environment: Mapping[str, str],
        secrets: Mapping[str, ecs.Secret],
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.cluster = ecs.Cluster(
            self, "Cluster", cluster_name=cluster_name, vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=log_group_name,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # RetentionDays is a named enum in Python; config holds the number CloudWatch takes (validated there).
        cfn_log_group = self.log_group.node.default_child
        assert isinstance(cfn_log_group, logs.CfnLogGroup)
        cfn_log_group.retention_in_days = agent.log_retention_days
        acknowledge(
            self.log_group,
            "CloudWatchLogGroupEncrypted",
            "CloudWatch Logs encrypts every log group at rest with a service key; a customer key would add a key "
            "policy for CloudWatch. The agent logs call handling, never secrets, and logs expire with retention.",
            pack=NIST,
        )
        # A fixed name: the secrets' resource policies allow this role by ARN, from another stack.
        execution_role = iam.Role(
            self,
            "ExecutionRole",
            role_name=execution_role_name,
            description=f"ECS pulls the agent image and injects its secrets with this role ({cluster_name})",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            execution_role=execution_role,
            cpu=agent.cpu,
            memory_limit_mib=agent.memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        repository = ecr.Repository.from_repository_name(self, "Repository", agent.image_repository)
        self.container = self.task_definition.add_container(
            "agent",
            image=ecs.ContainerImage.from_ecr_repository(repository, agent.image_tag),
            essential=True,
            environment=dict(environment),
            secrets=dict(secrets),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="agent", log_group=self.log_group),
            stop_timeout=Duration.seconds(STOP_TIMEOUT_SECONDS),
            health_check=ecs.HealthCheck(
                command=["CMD-SHELL", HEALTH_COMMAND],
                interval=Duration.seconds(30),
                timeout=Duration.seconds(5),
                retries=3,
                start_period=Duration.seconds(60),
            ),
        )
        acknowledge(
            self.task_definition,
            "ECS2",
            "The plain environment variables are non-secret settings (the LiveKit URL, agent name and SIP "
            "endpoint, the recording bucket, region and file path); every credential is injected by ECS from "
            "Secrets Manager.",
        )
        # ECS task scale-in protection: the agent PUTs $ECS_AGENT_URI/task-protection/v1/state while calls are
        # active, which ECS authorizes against the task role.
        # A literal partition, as for every ARN an acknowledgement names: stack.format_arn's is a token unless the
        # enablePartitionLiterals flag is set, and a token in a finding id cannot be matched (KeyMustResolveToString).
        region = stack.region
        task_arns = f"arn:{partition(region)}:ecs:{region}:{stack.account}:task/{cluster_name}/*"
        self.task_definition.add_to_task_role_policy(
            iam.PolicyStatement(
                sid="ProtectTasksWithActiveCalls",
                actions=["ecs:GetTaskProtection", "ecs:UpdateTaskProtection"],
                resources=[task_arns],
            )
        )
        default_policy = Ack(
            "IAMNoInlinePolicy",
            "CDK writes the grants of this task role as its own default policy, created and deleted with the "
            "role and attachable nowhere else; each grant is scoped to this service's resources.",
            pack=NIST,
        )
        acknowledge_all(
            self.task_definition.task_role,
            [
                Ack(
                    "IAM5",
                    "Task ids are random, so task protection can only be scoped to this cluster's tasks "
                    f"(task/{cluster_name}/*); the two actions only read or set the scale-in protection flag.",
                    finding=f"Resource::{task_arns}",
                ),
                default_policy,
            ],
        )
        acknowledge_all(
            execution_role,
            [
                Ack(
                    "IAM5",
                    'ecr:GetAuthorizationToken has no resource-level permissions (AWS requires Resource "*"); image '
                    "pulls themselves are limited to the agent's repository, and secret reads to the agent's "
                    "secrets.",
                    finding="Resource::*",
                ),
                default_policy,
            ],
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            service_name=service_name,
            cluster=self.cluster,
            task_definition=self.task_definition,
            desired_count=agent.min_tasks,
            assign_public_ip=True,
            vpc_subnets=subnets,
            security_groups=[security_group],
            # Start the new task before stopping the old one, and roll back a deploy whose tasks never turn healthy.
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            platform_version=ecs.FargatePlatformVersion.LATEST,
        )
        self.scaling = self.service.auto_scale_task_count(min_capacity=agent.min_tasks, max_capacity=agent.max_tasks)
        self.scaling.scale_on_cpu_utilization(
            "CpuTarget",
            target_utilization_percent=agent.cpu_target_percent,
            scale_out_cooldown=SCALE_OUT_COOLDOWN,
            scale_in_cooldown=SCALE_IN_COOLDOWN,
        )
