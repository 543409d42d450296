"""Before the egress key goes to LiveKit: is it the deployed key, does IAM have it, and can it upload?

Three checks, in order, each named in the error when it fails. The key id is shown masked, the secret never.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from callsaver_infra.app.names import HEALTHCHECK_PREFIX
from callsaver_infra.ops import aws_clients

CHECK_DEPLOYED = "matches the deployed key"
CHECK_IAM = "exists in IAM"
CHECK_UPLOAD = "uploads"


class EgressKeyCheckFailed(Exception):
    """The egress key must not be pushed; `check` names which check failed."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"egress key check {check!r} failed: {message}; nothing may be pushed to LiveKit")
        self.check = check


@dataclass(frozen=True)
class EgressKeyCheck:
    """What passed: the key id (for masked display) and the health-check object written with it."""

    access_key_id: str
    object_key: str


def _masked(key_id: str) -> str:
    return "****" + key_id[-4:] if len(key_id) > 8 else "****"


def check_egress_key(
    *,
    access_key_id: str,
    secret_access_key: str,
    deployed_access_key_id: str,
    user_name: str,
    bucket: str,
    region: str,
    iam: Any | None,
    s3_endpoint_url: str | None = None,
    upload: bool = True,
) -> EgressKeyCheck:
    """Check the key from the egress secret against the deployed `EgressAccessKeyId` output, IAM, and one tiny
    PutObject under `_healthcheck/` signed with it; raise EgressKeyCheckFailed naming the failed check.

    `iam` is a boto3 IAM client with the operator's (or deploy role's) credentials, or None to skip the IAM check
    (push-egress: the upload proves the key works); the upload uses only the key, and upload=False (a dry run)
    skips it.
    """
    if access_key_id != deployed_access_key_id:
        raise EgressKeyCheckFailed(
            CHECK_DEPLOYED,
            f"the egress secret holds key {_masked(access_key_id)} but the deployed output EgressAccessKeyId is "
            f"{_masked(deployed_access_key_id)} (the secret or the outputs file is stale: redeploy the IAM stack, "
            "or pass the outputs of the last deploy)",
        )
    if iam is None:
        return _upload(access_key_id, secret_access_key, bucket, region, s3_endpoint_url, upload)
    try:
        keys = iam.list_access_keys(UserName=user_name)["AccessKeyMetadata"]
    except ClientError as e:
        raise EgressKeyCheckFailed(
            CHECK_IAM, f"could not list the access keys of IAM user {user_name}: {e.response['Error']['Code']}"
        ) from None
    status = {k["AccessKeyId"]: k["Status"] for k in keys}.get(access_key_id)
    if status is None:
        raise EgressKeyCheckFailed(
            CHECK_IAM,
            f"key {_masked(access_key_id)} is not an access key of IAM user {user_name} (it has "
            f"{', '.join(_masked(k['AccessKeyId']) for k in keys) or 'none'})",
        )
    if status != "Active":
        raise EgressKeyCheckFailed(CHECK_IAM, f"key {_masked(access_key_id)} of {user_name} is {status}")
    return _upload(access_key_id, secret_access_key, bucket, region, s3_endpoint_url, upload)


def _upload(
    access_key_id: str, secret_access_key: str, bucket: str, region: str, s3_endpoint_url: str | None, upload: bool
) -> EgressKeyCheck:
    """One tiny PutObject under _healthcheck/ signed with the key alone (no other credentials)."""
    object_key = f"{HEALTHCHECK_PREFIX}key-check-{access_key_id[-4:]}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    if not upload:
        return EgressKeyCheck(access_key_id=access_key_id, object_key="")
    s3 = aws_clients.client(
        "s3",
        region_name=region,
        endpoint_url=s3_endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
    )
    try:
        s3.put_object(Bucket=bucket, Key=object_key, Body=b"egress key check\n", ContentType="text/plain")
    except ClientError as e:
        raise EgressKeyCheckFailed(
            CHECK_UPLOAD,
            f"PutObject to s3://{bucket}/{object_key} signed with key {_masked(access_key_id)} was refused: "
            f"{e.response['Error']['Code']}",
        ) from None
    except Exception as e:  # botocore connection errors: say what, never dump the request (it is signed)
        if type(e).__module__.startswith("botocore"):
            raise EgressKeyCheckFailed(
                CHECK_UPLOAD, f"PutObject to s3://{bucket}/{object_key} failed: {type(e).__name__}"
            ) from None
        raise
    return EgressKeyCheck(access_key_id=access_key_id, object_key=object_key)
