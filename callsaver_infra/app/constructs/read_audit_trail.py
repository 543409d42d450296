"""ReadAuditTrail: a CloudTrail trail that records every read of a bucket's objects (S3 data events)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_s3 as s3
from constructs import Construct

from callsaver_infra.app.nag import NIST, Ack, acknowledge_all

# How long the read log is kept: a year of "who listened to which call", longer than any recording lives.
AUDIT_LOG_DAYS = 365


class ReadAuditTrail(Construct):
    """A single-region trail with only read data events of `bucket`'s objects (GetObject, HeadObject, ...), no
    management events (the account's default event history keeps those), delivered to its own private bucket.

    Why data events and not KMS Decrypt events: with S3 Bucket Keys, S3 decrypts a bucket-level key once per period
    and KMS's CloudTrail events name the bucket, not the object, so they cannot say which recording was read."""

    def __init__(
        self, scope: Construct, construct_id: str, *, trail_name: str, log_bucket_name: str, bucket: s3.IBucket
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_bucket = s3.Bucket(
            self,
            "LogBucket",
            # Named, so `adopt-retained` finds the retained log bucket after a `cdk destroy`.
            bucket_name=log_bucket_name,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireAuditLogs",
                    expiration=Duration.days(AUDIT_LOG_DAYS),
                    noncurrent_version_expiration=Duration.days(1),
                )
            ],
            # The audit log must outlive the stack, like the recordings it describes.
            removal_policy=RemovalPolicy.RETAIN,
            auto_delete_objects=False,
        )
        acknowledge_all(
            self.log_bucket,
            [
                Ack(
                    "S1",
                    "This bucket holds the CloudTrail log of recording reads; logging access to it would need yet "
                    "another bucket. Only CloudTrail writes to it (its bucket policy), it is private, TLS-only and "
                    "versioned, and CloudTrail's log file validation detects any change to a delivered file.",
                ),
                Ack(
                    "S3BucketLoggingEnabled",
                    "This bucket is itself the audit log of recording reads; logging access to it would need another "
                    "bucket, and only CloudTrail writes to it. Log file validation detects tampering.",
                    pack=NIST,
                ),
                Ack(
                    "S3BucketReplicationEnabled",
                    "The read log is one region's audit record kept 365 days, versioned and retained with the stack; a "
                    "replica would add a second copy of caller identities and object keys (callers' numbers).",
                    pack=NIST,
                ),
                Ack(
                    "S3DefaultEncryptionKMS",
                    "CloudTrail delivers to this bucket with SSE-S3 (encrypted at rest); SSE-KMS would need a key "
                    "policy for CloudTrail. The files hold object keys and caller ARNs, never recording content.",
                    pack=NIST,
                ),
            ],
        )
        self.trail = cloudtrail.Trail(
            self,
            "Trail",
            trail_name=trail_name,
            bucket=self.log_bucket,
            is_multi_region_trail=False,
            include_global_service_events=False,
            management_events=cloudtrail.ReadWriteType.NONE,
            enable_file_validation=True,
            send_to_cloud_watch_logs=False,
        )
        acknowledge_all(
            self.trail,
            [
                Ack(
                    "CloudTrailCloudWatchLogsEnabled",
                    "The trail answers 'who read which recording' after the fact, queried from S3 with Athena; "
                    "CloudWatch delivery would double the cost per event and adds a log group and role for no alarm.",
                    pack=NIST,
                ),
                Ack(
                    "CloudTrailEncryptionEnabled",
                    "Log files are encrypted at rest with SSE-S3 in a private, TLS-only bucket, and hold object keys "
                    "and caller ARNs rather than recordings; a KMS key for the trail would add a key policy to "
                    "maintain.",
                    pack=NIST,
                ),
            ],
        )
        self.trail.add_s3_event_selector(
            [cloudtrail.S3EventSelector(bucket=bucket)],
            read_write_type=cloudtrail.ReadWriteType.READ_ONLY,
            include_management_events=False,
        )
