"""Callsaver-Agent-{env}: the LiveKit agent on Fargate, outbound only."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Fn, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from callsaver_infra.app.config import AgentConfig, CallRecordingConfig, LiveKitConfig, NetworkConfig, StorageConfig
from callsaver_infra.app.constructs.agent_network import AZ_COUNT, AgentNetwork
from callsaver_infra.app.constructs.agent_service import AgentService
from callsaver_infra.app.names import (
    EGRESS_SECRET_KEY_ID_FIELD,
    EGRESS_SECRET_SECRET_FIELD,
    AgentEnvironment,
    AgentOutputs,
    EnvNames,
)
from callsaver_infra.app.secret_catalog import SECRETS


class AgentStack(Stack):
    """Composes AgentNetwork and AgentService and publishes the cluster, service and log group names."""

    def __init__(
        self,
        scope: Construct,
        *,
        names: EnvNames,
        agent: AgentConfig,
        network: NetworkConfig,
        livekit: LiveKitConfig,
        storage: StorageConfig,
        recording: CallRecordingConfig,
        **kwargs: Any,
    ) -> None:
        """storage and recording: where the agent uploads the recordings of the calls it places."""
        super().__init__(scope, names.agent_stack, **kwargs)
        self.network = AgentNetwork(self, "AgentNetwork", network=network)
        # Referenced by name, not imported from the Secrets stack: no export locks the two stacks together, and
        # the execution role's grant names each secret (with Secrets Manager's random 6-character suffix).
        secrets = {
            spec.key: ecs.Secret.from_secrets_manager(
                secretsmanager.Secret.from_secret_name_v2(self, f"Secret{spec.key}", names.secret(spec.ref))
            )
            for spec in SECRETS
            if spec.for_agent
        }
        # The agent records the calls it places itself (outbound calls carry no dispatch rule, so no room config):
        # it gets the egress key pair from the IAM stack's secret, the two JSON keys of exactly that one secret.
        egress_secret = secretsmanager.Secret.from_secret_name_v2(
            self, "EgressCredentials", names.egress_credentials_secret
        )
        secrets[AgentEnvironment.RECORDING_ACCESS_KEY_ID] = ecs.Secret.from_secrets_manager(
            egress_secret, field=EGRESS_SECRET_KEY_ID_FIELD
        )
        secrets[AgentEnvironment.RECORDING_SECRET_ACCESS_KEY] = ecs.Secret.from_secrets_manager(
            egress_secret, field=EGRESS_SECRET_SECRET_FIELD
        )
        self.agent_service = AgentService(
            self,
            "AgentService",
            agent=agent,
            cluster_name=names.agent_cluster,
            service_name=names.agent_service,
            log_group_name=names.agent_log_group,
            execution_role_name=names.agent_execution_role,
            environment={
                "LIVEKIT_URL": livekit.url,
                AgentEnvironment.WORKER_NAME: livekit.worker_name,
                AgentEnvironment.AGENT_NAME: livekit.worker_name,
                "LIVEKIT_SIP_ENDPOINT": livekit.sip_endpoint,
                AgentEnvironment.RECORDING_BUCKET: storage.bucket_name,
                AgentEnvironment.RECORDING_REGION: self.region,
                AgentEnvironment.RECORDING_FILEPATH: recording.filepath_template,
            },
            secrets=secrets,
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            security_group=self.network.security_group,
        )
        svc = self.agent_service
        CfnOutput(self, AgentOutputs.CLUSTER_NAME, value=svc.cluster.cluster_name, description="ECS cluster")
        CfnOutput(self, AgentOutputs.SERVICE_NAME, value=svc.service.service_name, description="Agent service")
        CfnOutput(self, AgentOutputs.LOG_GROUP, value=svc.log_group.log_group_name, description="Agent log group")

    @property
    def availability_zones(self) -> list[str]:
        """The first AZs CloudFormation lists for the account (Fn::GetAZs), instead of a lookup during synth."""
        return [Fn.select(i, Fn.get_azs()) for i in range(AZ_COUNT)]
