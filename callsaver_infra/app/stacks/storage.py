"""Callsaver-Storage-{env}: the session-recording bucket, its key and its reader."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from callsaver_infra.app.config import CallRecordingConfig, SecurityConfig, StorageConfig
from callsaver_infra.app.constructs.read_audit_trail import ReadAuditTrail
from callsaver_infra.app.constructs.session_bucket import SessionBucket
from callsaver_infra.app.names import HEALTHCHECK_PREFIX, CiNames, EnvNames, StorageOutputs, iam_arn


class StorageStack(Stack):
    """Holds the SessionBucket and publishes its name, ARN, region, key and reader for the hook and the backend."""

    def __init__(
        self,
        scope: Construct,
        *,
        names: EnvNames,
        storage: StorageConfig,
        recording: CallRecordingConfig,
        security: SecurityConfig,
        **kwargs: Any,
    ) -> None:
        """recording: the recording push's section (its object prefix)."""
        super().__init__(scope, names.storage_stack, **kwargs)
        # Each read of a stack attribute is a round trip to jsii's Node process: read them once.
        region, account = self.region, self.account

        def role(name: str) -> str:
            return iam_arn(region=region, account=account, kind="role", name=name)

        break_glass = security.break_glass_role_arn
        self.session_bucket = SessionBucket(
            self,
            "SessionBucket",
            bucket_name=storage.bucket_name,
            expiration_days=storage.expiration_days,
            recording_prefix=recording.recording_prefix,
            key_alias=names.session_key_alias,
            reader_name=names.recording_reader,
            # The CI deploy role runs the post-deploy hook, whose --verify reads its test recording.
            healthcheck_reader_arn=role(CiNames.deploy_role(names.env)),
            healthcheck_prefix=HEALTHCHECK_PREFIX,
            break_glass_role_arns=[break_glass] if break_glass else [],
        )
        sb = self.session_bucket
        self.read_audit = ReadAuditTrail(
            self,
            "RecordingReads",
            trail_name=names.recording_reads_trail,
            # Bucket names are global: the account keeps the name of one environment's log bucket unique.
            log_bucket_name=f"{names.recording_reads_trail}-{account}",
            bucket=sb.bucket,
        )
        bucket = sb.bucket
        CfnOutput(self, StorageOutputs.BUCKET_NAME, value=bucket.bucket_name, description="Recording bucket")
        CfnOutput(self, StorageOutputs.BUCKET_ARN, value=bucket.bucket_arn, description="Recording bucket ARN")
        CfnOutput(self, StorageOutputs.BUCKET_REGION, value=region, description="Recording bucket region")
        CfnOutput(self, StorageOutputs.KEY_ARN, value=sb.key.key_arn, description="KMS key of the recordings")
        CfnOutput(
            self,
            StorageOutputs.READER_ROLE_ARN,
            value=sb.reader_role.role_arn,
            description="The role the backend assumes to read recordings (presigned playback URLs)",
        )
        CfnOutput(
            self,
            StorageOutputs.READER_POLICY_ARN,
            value=sb.reader_policy.managed_policy_arn,
            description="Managed policy of the RecordingReader role (effective only on that role)",
        )
        CfnOutput(
            self,
            StorageOutputs.READS_LOG_BUCKET,
            value=self.read_audit.log_bucket.bucket_name,
            description=f"CloudTrail log of every recording read (trail {names.recording_reads_trail})",
        )
