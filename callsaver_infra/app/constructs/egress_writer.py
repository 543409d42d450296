"""EgressWriter: the IAM identity LiveKit Cloud's managed egress signs its S3 uploads with."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import CfnDeletionPolicy, SecretValue, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from callsaver_infra.app.constructs.secret_namespace import restrict_reads
from callsaver_infra.app.nag import NIST, Ack, acknowledge, acknowledge_all
from callsaver_infra.app.names import EGRESS_SECRET_KEY_ID_FIELD, EGRESS_SECRET_SECRET_FIELD

# What LiveKit egress's S3 uploader calls: PutObject (single and multipart parts, create and complete) and
# AbortMultipartUpload. It sets no ACL and never lists, so s3:PutObjectAcl and s3:ListBucket are not granted:
# ListBucket would let a leaked key enumerate recordings, whose keys carry room names.
EGRESS_S3_ACTIONS = ("s3:PutObject", "s3:AbortMultipartUpload")
# The bucket encrypts with its own KMS key by default. Egress sets no encryption header: its S3 upload builds a
# PutObjectInput of Body, Bucket, ContentType, Key, Metadata, Tagging and ContentDisposition only and hands it to the
# SDK's multipart manager (github.com/livekit/storage s3.go, `upload`; egress pkg/config/storage.go copies no SSE
# field into storage.S3Config, which has none), so S3 applies the bucket default. A multipart upload needs
# GenerateDataKey (CreateMultipartUpload, UploadPart) and Decrypt (CompleteMultipartUpload) on that key.
EGRESS_KMS_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")


class EgressWriter(Construct):
    """An IAM user that may only put objects into one bucket, with its access key kept in Secrets Manager."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        user_name: str,
        policy_name: str,
        bucket_arn: str,
        bucket_region: str,
        key_alias: str,
        access_key_serial: int,
        credentials_secret_name: str,
        credentials_readers: Sequence[str],
    ) -> None:
        super().__init__(scope, construct_id)
        # LiveKit Cloud runs outside our account and takes a static key pair; it cannot assume a role.
        self.user = iam.User(self, "User", user_name=user_name)
        objects_arn = f"{bucket_arn}/*"
        partition = bucket_arn.split(":")[1]
        account = Stack.of(self).account
        keys_arn = f"arn:{partition}:kms:{bucket_region}:{account}:key/*"
        self.policy = iam.Policy(
            self,
            "Policy",
            policy_name=policy_name,
            users=[self.user],
            statements=[
                iam.PolicyStatement(
                    sid="WriteRecordings",
                    actions=list(EGRESS_S3_ACTIONS),
                    resources=[objects_arn],
                ),
                # The key lives in the Storage stack and its id is random: it is named by its alias, which no
                # other key carries, instead of a cross-stack export that would lock the two stacks together.
                # Only through S3 (kms:ViaService): a leaked key pair cannot call KMS directly.
                iam.PolicyStatement(
                    sid="EncryptRecordings",
                    actions=list(EGRESS_KMS_ACTIONS),
                    resources=[keys_arn],
                    conditions={
                        "ForAnyValue:StringEquals": {"kms:ResourceAliases": key_alias},
                        "StringEquals": {"kms:ViaService": f"s3.{bucket_region}.amazonaws.com"},
                    },
                ),
            ],
        )
        acknowledge(
            self.user,
            "IAMUserGroupMembership",
            "LiveKit Cloud signs uploads with a static key pair of exactly one IAM user; a group for one user "
            "would add nothing to review: its only policy is the inline egress policy below.",
            pack=NIST,
        )
        inline_reason = (
            "The egress policy belongs to the one user LiveKit Cloud signs with (it cannot assume a role) and to "
            "nothing else; inline, it is created, changed and deleted with that user and cannot be attached "
            "elsewhere by mistake."
        )
        acknowledge_all(
            self.policy,
            [
                Ack(
                    "IAM5",
                    "Egress names each object at upload time ({room_name}/{time}...), so the grant must cover the "
                    "bucket's objects; it is one bucket and only PutObject/AbortMultipartUpload (no read, list, "
                    "delete).",
                    finding=f"Resource::{objects_arn}",
                ),
                Ack(
                    "IAM5",
                    f"KMS key ids are random, so the grant names the key by its alias ({key_alias}, condition "
                    "kms:ResourceAliases) over the account's keys of the region, and only through S3 "
                    "(kms:ViaService): exactly the session bucket's key, and only GenerateDataKey/Decrypt that "
                    "multipart uploads need.",
                    finding=f"Resource::{keys_arn}",
                ),
                Ack("IAMNoInlinePolicy", inline_reason, pack=NIST),
                Ack("IAMUserNoPolicies", inline_reason, pack=NIST),
            ],
        )
        # Changing the serial replaces the key. The replaced key is retained, not deleted: LiveKit still signs with
        # it until the new one is pushed and verified; `callsaver-infra rotate-egress-key` deletes it afterwards,
        # once no dispatch rule and no agent task uses it. (A stack deletion still deletes the current key.)
        self.access_key = iam.AccessKey(self, "AccessKey", user=self.user, serial=access_key_serial)
        cfn_key = self.access_key.node.default_child
        assert isinstance(cfn_key, iam.CfnAccessKey)
        cfn_key.cfn_options.update_replace_policy = CfnDeletionPolicy.RETAIN
        cfn_key.cfn_options.deletion_policy = CfnDeletionPolicy.DELETE  # said explicitly: destroy deletes the key
        self.credentials_secret = secretsmanager.Secret(
            self,
            "CredentialsSecret",
            secret_name=credentials_secret_name,
            description=f"Access key of IAM user {user_name}, for LiveKit egress uploads (written by CDK).",
            secret_object_value={
                # The key id is not secret; the secret access key is a GetAtt and never appears in a template.
                EGRESS_SECRET_KEY_ID_FIELD: SecretValue.unsafe_plain_text(self.access_key.access_key_id),
                EGRESS_SECRET_SECRET_FIELD: self.access_key.secret_access_key,
            },
        )
        restrict_reads([self.credentials_secret], credentials_readers)
        acknowledge_all(
            self.credentials_secret,
            [
                Ack(
                    "SMG4",
                    "An IAM access key cannot be rotated by Secrets Manager without a rotation Lambda (none in this "
                    "app); it is rotated by bumping egress_writer.access_key_serial in config and deploying, which "
                    "replaces the key and rewrites this secret.",
                ),
                Ack(
                    "SecretsManagerRotationEnabled",
                    "An IAM access key cannot be rotated by Secrets Manager without a rotation Lambda (none in this "
                    "app); it is rotated by bumping egress_writer.access_key_serial and deploying, which replaces key "
                    "and secret.",
                    pack=NIST,
                ),
                Ack(
                    "SecretsManagerUsingKMSKey",
                    "Encrypted with the AWS managed key aws/secretsmanager; who may read is decided by the secret's "
                    "resource policy (deny except the agent's execution role, the deploy hook and break-glass), "
                    "not by a key policy.",
                    pack=NIST,
                ),
            ],
        )
