"""Callsaver-Storage-{env}: the session-recording bucket."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from callsaver_infra.config import EnvironmentConfig
from callsaver_infra.constructs.session_bucket import SessionBucket
from callsaver_infra.names import EnvNames, StorageOutputs


class StorageStack(Stack):
    """Holds the SessionBucket and publishes its name, ARN and region for the hook and the backend."""

    def __init__(self, scope: Construct, *, config: EnvironmentConfig, **kwargs: Any) -> None:
        super().__init__(scope, EnvNames(config.name).storage_stack, **kwargs)
        self.session_bucket = SessionBucket(
            self,
            "SessionBucket",
            bucket_name=config.storage.bucket_name,
            expiration_days=config.storage.expiration_days,
            recording_prefix=config.livekit_egress.recording_prefix,
        )
        bucket = self.session_bucket.bucket
        CfnOutput(self, StorageOutputs.BUCKET_NAME, value=bucket.bucket_name, description="Recording bucket")
        CfnOutput(self, StorageOutputs.BUCKET_ARN, value=bucket.bucket_arn, description="Recording bucket ARN")
        CfnOutput(self, StorageOutputs.BUCKET_REGION, value=self.region, description="Recording bucket region")
