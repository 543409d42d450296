"""SessionBucket: the S3 bucket LiveKit egress uploads call recordings to."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from callsaver_infra.nag import acknowledge
from callsaver_infra.names import RECORDING_METRICS_FILTER_ID

# LiveKit egress uploads in parts; a part left by a crashed egress is invisible and billed until aborted.
ABORT_INCOMPLETE_UPLOAD_DAYS = 1


class SessionBucket(Construct):
    """A private, TLS-only bucket whose recordings expire, and which no `cdk destroy` can delete."""

    def __init__(
        self, scope: Construct, construct_id: str, *, bucket_name: str, expiration_days: int, recording_prefix: str
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireRecordings",
                    expiration=Duration.days(expiration_days),
                    abort_incomplete_multipart_upload_after=Duration.days(ABORT_INCOMPLETE_UPLOAD_DAYS),
                )
            ],
            # Recordings are evidence of calls: a stack deletion or replacement must never take them along.
            removal_policy=RemovalPolicy.RETAIN,
            auto_delete_objects=False,
            # S3 request metrics (PUTs, 4xx errors) of the recordings, for the Monitoring stack's upload alarms.
            # A filter can only include (prefix, tags, access point), never exclude: with no static prefix in the
            # egress filepath template it covers the whole bucket, push-egress --verify's _healthcheck/ too.
            metrics=[s3.BucketMetrics(id=RECORDING_METRICS_FILTER_ID, prefix=recording_prefix or None)],
        )
        # The CDK bootstrap lookup role carries ReadOnlyAccess (s3:GetObject included) and CI's diff role, which
        # pull requests use, may assume it: it must never read a call recording.
        stack = Stack.of(self)
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyRecordingReadsByCdkLookupRoles",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[self.bucket.arn_for_objects("*")],
                conditions={
                    "ArnLike": {
                        "aws:PrincipalArn": f"arn:{stack.partition}:iam::{stack.account}:role/cdk-*-lookup-role-*"
                    }
                },
            )
        )
        # The policy must outlive a stack deletion with the bucket it guards: retained recordings without the TLS-only
        # and lookup-role denies would be readable by any principal ReadOnlyAccess reaches.
        assert self.bucket.policy is not None  # enforce_ssl created it
        self.bucket.policy.apply_removal_policy(RemovalPolicy.RETAIN)
        acknowledge(
            self.bucket,
            "S1",
            "Server access logs would need a second log bucket per environment. This bucket is private and "
            f"TLS-only, only the egress IAM user may write to it, and objects expire after {expiration_days} days. "
            "Per-object audit, if required, belongs to an account-level CloudTrail trail with S3 data events, "
            "which this app does not own.",
        )
