"""Callsaver-IAM-{env}: the identity LiveKit egress writes recordings with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from callsaver_infra.app.config import EgressWriterConfig, StorageConfig
from callsaver_infra.app.constructs.egress_writer import EgressWriter
from callsaver_infra.app.names import EGRESS_POLICY_NAME, EnvNames, IamOutputs
from callsaver_infra.app.regions import partition


def bucket_arn(storage: StorageConfig, region: str) -> str:
    """The session bucket's ARN, derived from config rather than imported (exports would lock the stacks)."""
    return f"arn:{partition(region)}:s3:::{storage.bucket_name}"


class IamStack(Stack):
    """Holds the EgressWriter and publishes its user name, access key id and credentials secret ARN."""

    def __init__(
        self,
        scope: Construct,
        *,
        names: EnvNames,
        storage: StorageConfig,
        egress_writer: EgressWriterConfig,
        credentials_readers: Sequence[str],
        **kwargs: Any,
    ) -> None:
        """credentials_readers: role ARNs that may read the key pair's secret (the Secrets stack's readers)."""
        super().__init__(scope, names.iam_stack, **kwargs)
        region = self.region
        self.egress_writer = EgressWriter(
            self,
            "EgressWriter",
            user_name=names.egress_user,
            policy_name=EGRESS_POLICY_NAME,
            bucket_arn=bucket_arn(storage, region),
            bucket_region=region,
            key_alias=names.session_key_alias,
            access_key_serial=egress_writer.access_key_serial,
            credentials_secret_name=names.egress_credentials_secret,
            # The hook pushes the key pair to LiveKit, and the agent's tasks receive its two JSON keys too
            # (the agent starts outbound-call recordings with them): the agent's execution role must read it.
            credentials_readers=credentials_readers,
        )
        writer = self.egress_writer
        CfnOutput(self, IamOutputs.USER_NAME, value=writer.user.user_name, description="Egress IAM user")
        CfnOutput(self, IamOutputs.ACCESS_KEY_ID, value=writer.access_key.access_key_id, description="Egress key id")
        CfnOutput(
            self,
            IamOutputs.CREDENTIALS_SECRET_ARN,
            value=writer.credentials_secret.secret_arn,
            description="Secret holding the egress access key pair",
        )
