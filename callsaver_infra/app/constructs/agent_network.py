"""AgentNetwork: where the agent's tasks run. Outbound only: public subnets, no NAT gateway, no ingress."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from callsaver_infra.app.config import NetworkConfig
from callsaver_infra.app.nag import NIST, Ack, acknowledge_all

VPC_CIDR = "10.40.0.0/16"


AZ_COUNT = 2


class AgentNetwork(Construct):
    """A VPC with public subnets in two AZs (or an existing one, by id) and a security group with no ingress."""

    def __init__(self, scope: Construct, construct_id: str, *, network: NetworkConfig) -> None:
        super().__init__(scope, construct_id)
        if network.existing_vpc_id:
            # From ids in config, not Vpc.from_lookup: synth stays hermetic.
            self.vpc: ec2.IVpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=network.existing_vpc_id,
                availability_zones=list(network.existing_subnet_zones),
                public_subnet_ids=list(network.existing_subnet_ids),
            )
        else:
            vpc = ec2.Vpc(
                self,
                "Vpc",
                ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
                # The zones are picked by CloudFormation (Fn::GetAZs, see AgentStack): zone names differ per
                # account, and synth must not look them up.
                max_azs=AZ_COUNT,
                # A NAT gateway costs ~$33/month before traffic; tasks with public IPs reach LiveKit directly.
                nat_gateways=0,
                subnet_configuration=[
                    ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
                ],
                restrict_default_security_group=False,
            )
            # The default security group is unused (tasks get their own); restricting it needs a custom resource.
            acknowledge_all(
                vpc,
                [
                    Ack(
                        "VPC7",
                        "The VPC carries only the agent's outbound connections (LiveKit Cloud, AI providers) and "
                        "accepts no inbound traffic; the agent logs every call to CloudWatch, and flow logs would add "
                        "a log group and role per environment for traffic the security group already restricts.",
                    ),
                    Ack(
                        "VPCFlowLogsEnabled",
                        "The VPC carries only the agent's outbound connections and accepts no inbound traffic; flow "
                        "logs would add a log group and role per environment for traffic the security group already "
                        "limits.",
                        pack=NIST,
                    ),
                    Ack(
                        "VPCDefaultSecurityGroupClosed",
                        "Nothing uses the default security group (the tasks have their own, without ingress); closing "
                        "it needs CDK's Lambda-backed custom resource, which this app never deploys.",
                        pack=NIST,
                    ),
                    Ack(
                        "VPCSubnetAutoAssignPublicIpDisabled",
                        "Public subnets with public IPs instead of a NAT gateway (~$33/month each): the tasks only "
                        "connect out, and their security group has no ingress rule, so the addresses accept nothing.",
                        pack=NIST,
                    ),
                    Ack(
                        "VPCNoUnrestrictedRouteToIGW",
                        "The agent must reach LiveKit Cloud and AI providers on the internet; without a NAT gateway "
                        "the public subnets route 0.0.0.0/0 to the internet gateway, and no ingress is allowed.",
                        pack=NIST,
                    ),
                ],
            )
            self.vpc = vpc
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=self.vpc,
            description="LiveKit agent tasks: outbound only, no ingress",
            allow_all_outbound=True,
        )
