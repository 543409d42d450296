"""SessionBucket: the S3 bucket LiveKit egress uploads call recordings to."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from callsaver_infra.app.nag import NIST, Ack, acknowledge, acknowledge_all
from callsaver_infra.app.names import RECORDING_METRICS_FILTER_ID

# LiveKit egress uploads in parts; a part left by a crashed egress is invisible and billed until aborted.
ABORT_INCOMPLETE_UPLOAD_DAYS = 1
# Versioning keeps an overwritten or deleted recording as a noncurrent version; one day is enough to undo a
# mistake and keeps the data-minimisation promise (expiration_days + 1 at most).
NONCURRENT_VERSION_DAYS = 1
# The object reads the reader allowlist governs (HeadObject is authorized as s3:GetObject).
OBJECT_READ_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion"]


class SessionBucket(Construct):
    """A private, TLS-only, versioned bucket encrypted with its own KMS key, whose recordings expire, which only
    named readers may read, and which no `cdk destroy` can delete.

    `reader` (role and managed policy) is the identity the backend assumes to make presigned playback URLs; the
    bucket policy cannot see which principals hold a managed policy, so it exempts the role by ARN, and holding the
    policy without assuming the role reads nothing."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket_name: str,
        expiration_days: int,
        recording_prefix: str,
        key_alias: str,
        reader_name: str,
        healthcheck_reader_arn: str,
        healthcheck_prefix: str,
        break_glass_role_arns: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # Each read of a stack attribute is a round trip to jsii's Node process: read them once.
        region, partition, account = stack.region, stack.partition, stack.account
        # One key per environment: revoking or scheduling the deletion of staging's key never touches production.
        self.key = kms.Key(
            self,
            "Key",
            alias=key_alias,
            description=f"Encrypts the call recordings in s3://{bucket_name}",
            enable_key_rotation=True,
            # Deleting the key would make every recording (and every retained noncurrent version) unreadable.
            removal_policy=RemovalPolicy.RETAIN,
        )
        # The alias outlives a stack deletion with its key: `adopt-retained` finds the key by it.
        alias = self.key.node.find_child("Alias")
        assert isinstance(alias, kms.Alias)
        alias.apply_removal_policy(RemovalPolicy.RETAIN)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            # A bucket key cuts KMS requests (and their cost) by a factor of the objects per key period.
            bucket_key_enabled=True,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireRecordings",
                    expiration=Duration.days(expiration_days),
                    abort_incomplete_multipart_upload_after=Duration.days(ABORT_INCOMPLETE_UPLOAD_DAYS),
                    noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_DAYS),
                ),
                # Expiring a current version leaves a delete marker; once its noncurrent version is gone, drop it.
                s3.LifecycleRule(id="RemoveExpiredDeleteMarkers", expired_object_delete_marker=True),
            ],
            # Recordings are evidence of calls: a stack deletion or replacement must never take them along.
            removal_policy=RemovalPolicy.RETAIN,
            auto_delete_objects=False,
            # S3 request metrics (PUTs, 4xx errors) of the recordings, for the Monitoring stack's upload alarms.
            # A filter can only include (prefix, tags, access point), never exclude: with no static prefix in the
            # egress filepath template it covers the whole bucket, push-egress --verify's _healthcheck/ too.
            metrics=[s3.BucketMetrics(id=RECORDING_METRICS_FILTER_ID, prefix=recording_prefix or None)],
        )
        objects = self.bucket.arn_for_objects("*")
        self.reader_policy = iam.ManagedPolicy(
            self,
            "ReaderPolicy",
            managed_policy_name=reader_name,
            description=f"Read call recordings of s3://{bucket_name} (only effective on the role {reader_name})",
            statements=[
                iam.PolicyStatement(sid="ReadRecordings", actions=["s3:GetObject"], resources=[objects]),
                iam.PolicyStatement(
                    sid="DecryptRecordings",
                    actions=["kms:Decrypt"],
                    resources=[self.key.key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
                ),
            ],
        )
        acknowledge(
            self.reader_policy,
            "IAM5",
            "Playback URLs are made for any recording, whose keys are named by egress at upload time, so the read "
            "grant covers this bucket's objects; it is GetObject only (no list, write or delete) on one bucket.",
            finding=f"Resource::{self.bucket.arn_for_objects('*')}",
        )
        self.reader_role = iam.Role(
            self,
            "ReaderRole",
            role_name=reader_name,
            description=f"The backend assumes this role to make presigned playback URLs for s3://{bucket_name}",
            # The account decides by IAM policy who may assume it (the backend's identity needs sts:AssumeRole on
            # this ARN); every assumption is a CloudTrail management event naming the caller.
            assumed_by=iam.AccountRootPrincipal(),
            managed_policies=[self.reader_policy],
            max_session_duration=Duration.hours(1),
        )
        # The reader by its fixed name, not a GetAtt: the retained policy must stand alone in `adopt-retained`'s
        # import template, where the role (not retained) does not exist yet.
        reader_arn = f"arn:{partition}:iam::{account}:role/{reader_name}"
        readers = [reader_arn, healthcheck_reader_arn, *break_glass_role_arns]
        anyone = iam.AnyPrincipal()  # one object for the four denies: each jsii object costs a round trip
        # enforce_ssl created the bucket policy: the denies go into its document in one call, which is what
        # add_to_resource_policy does per statement (3 round trips each, its result struct read property by property).
        policy = self.bucket.policy
        assert policy is not None
        policy.document.add_statements(
            # Deny by default: an s3:GetObject grant anywhere in the account (ReadOnlyAccess, AdministratorAccess,
            # s3:*) reads nothing here unless the caller is one of these roles.
            iam.PolicyStatement(
                sid="DenyRecordingReadsExceptReaders",
                effect=iam.Effect.DENY,
                principals=[anyone],
                actions=OBJECT_READ_ACTIONS,
                resources=[objects],
                conditions={"ArnNotLike": {"aws:PrincipalArn": readers}},
            ),
            # The deploy hook's --verify reads its own test recording (HeadObject), never a call's.
            iam.PolicyStatement(
                sid="DenyHealthcheckReaderOutsideHealthcheck",
                effect=iam.Effect.DENY,
                principals=[anyone],
                actions=OBJECT_READ_ACTIONS,
                not_resources=[self.bucket.arn_for_objects(f"{healthcheck_prefix}*")],
                conditions={"ArnLike": {"aws:PrincipalArn": healthcheck_reader_arn}},
            ),
            # The CDK bootstrap lookup roles carry ReadOnlyAccess (s3:List*, s3:GetObject) and are assumable from
            # CI: they must neither list recordings (keys carry room names, i.e. callers' numbers) nor read them.
            iam.PolicyStatement(
                sid="DenyCdkLookupRoles",
                effect=iam.Effect.DENY,
                principals=[anyone],
                actions=["s3:GetObject*", "s3:List*"],
                resources=[self.bucket.bucket_arn, objects],
                conditions={
                    "ArnLike": {"aws:PrincipalArn": f"arn:{partition}:iam::{account}:role/cdk-*-lookup-role-*"}
                },
            ),
            # SSE-C would store a recording under a key only its uploader holds: neither readable nor auditable.
            iam.PolicyStatement(
                sid="DenyCustomerProvidedKeys",
                effect=iam.Effect.DENY,
                principals=[anyone],
                actions=["s3:PutObject"],
                resources=[objects],
                conditions={"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}},
            ),
        )
        # The policy must outlive a stack deletion with the bucket it guards: retained recordings without the TLS-only
        # and reader denies would be readable by any principal ReadOnlyAccess reaches.
        policy.apply_removal_policy(RemovalPolicy.RETAIN)
        acknowledge_all(
            self.bucket,
            [
                Ack(
                    "S1",
                    "Server access logs are delivered best-effort and without the caller's role session. Every read of "
                    "a recording is logged instead as a CloudTrail S3 data event by the stack's ReadAuditTrail "
                    "(docs/security.md); only the RecordingReader and break-glass roles may read, only the egress IAM "
                    f"user may write, and objects expire after {expiration_days} days.",
                ),
                Ack(
                    "S3BucketLoggingEnabled",
                    "Reads are audited per object and per caller by the stack's CloudTrail trail of S3 data events "
                    "(ReadAuditTrail), which unlike server access logs names the caller's role session and is "
                    "delivered reliably; writes come only from the egress IAM user.",
                    pack=NIST,
                ),
                Ack(
                    "S3BucketReplicationEnabled",
                    "Recordings are personal data kept for a bounded time: a replica would be a second copy to "
                    "protect, audit and expire. Versioning (noncurrent versions kept one day), RETAIN and termination "
                    "protection cover accidental overwrite and deletion; losing a recording does not stop the service.",
                    pack=NIST,
                ),
            ],
        )
