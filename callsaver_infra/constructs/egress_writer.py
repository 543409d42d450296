"""EgressWriter: the IAM identity LiveKit Cloud's managed egress signs its S3 uploads with."""

from __future__ import annotations

from aws_cdk import CfnDeletionPolicy, SecretValue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from callsaver_infra.nag import acknowledge
from callsaver_infra.names import EGRESS_SECRET_KEY_ID_FIELD, EGRESS_SECRET_SECRET_FIELD

# What LiveKit egress's S3 uploader calls: PutObject (single and multipart parts, create and complete) and
# AbortMultipartUpload. It sets no ACL and never lists, so s3:PutObjectAcl and s3:ListBucket are not granted:
# ListBucket would let a leaked key enumerate recordings, whose keys carry room names.
EGRESS_S3_ACTIONS = ("s3:PutObject", "s3:AbortMultipartUpload")


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
        access_key_serial: int,
        credentials_secret_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        # LiveKit Cloud runs outside our account and takes a static key pair; it cannot assume a role.
        self.user = iam.User(self, "User", user_name=user_name)
        objects_arn = f"{bucket_arn}/*"
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
                )
            ],
        )
        acknowledge(
            self.policy,
            "IAM5",
            "Egress names each object at upload time ({room_name}/{time}...), so the grant must cover the "
            "bucket's objects; it is one bucket and only PutObject/AbortMultipartUpload (no read, list, delete).",
            finding=f"Resource::{objects_arn}",
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
        acknowledge(
            self.credentials_secret,
            "SMG4",
            "An IAM access key cannot be rotated by Secrets Manager without a rotation Lambda (none in this app); "
            "it is rotated by bumping egress.access_key_serial in config and deploying, which replaces the key "
            "and rewrites this secret.",
        )
