"""check_egress_key against moto's server on 127.0.0.1 (real AWS is unreachable here) with moto's IAM enforcement on
(`/moto-api/reset-auth`): the upload is signed with the egress key alone, so moto checks its signature against
IAM and the egress user's policy, as S3 would."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from callsaver_infra.ops.push_egress.egress_key_check import (
    CHECK_DEPLOYED,
    CHECK_IAM,
    CHECK_UPLOAD,
    EgressKeyCheckFailed,
    check_egress_key,
)

REGION = "us-west-1"
BUCKET = "callsaver-sessions-local"
USER = "callsaver-livekit-egress-local"


def _post(endpoint: str, path: str, body: str | None = None) -> None:
    data = body.encode() if body is not None else None
    # text/plain: a form content type would make the server read the body as a form and the number as empty.
    headers = {"Content-Type": "text/plain"}
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}{path}", data=data, headers=headers, method="POST"))


@pytest.fixture
def aws(moto_endpoint: str) -> Iterator[dict[str, Any]]:
    """A bucket, the egress user with its PutObject policy and key, and an admin user; then IAM enforcement on."""
    _post(moto_endpoint, "/moto-api/reset")
    boot = {"endpoint_url": moto_endpoint, "region_name": REGION, "aws_access_key_id": "boot"}
    iam = boto3.client("iam", aws_secret_access_key="boot", **boot)
    s3 = boto3.client("s3", aws_secret_access_key="boot", **boot)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    iam.create_user(UserName=USER)
    statement = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
    iam.put_user_policy(
        UserName=USER,
        PolicyName="LiveKitEgressS3Access",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
    )
    key = iam.create_access_key(UserName=USER)["AccessKey"]
    iam.create_user(UserName="operator")
    admin = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="operator", PolicyName="admin", PolicyDocument=json.dumps(admin))
    op = iam.create_access_key(UserName="operator")["AccessKey"]
    # The body is the number of requests still let through unauthenticated.
    _post(moto_endpoint, "/moto-api/reset-auth", "0")
    creds = {"aws_access_key_id": op["AccessKeyId"], "aws_secret_access_key": op["SecretAccessKey"]}
    try:
        yield {
            "endpoint": moto_endpoint,
            "key": key,
            "iam": boto3.client("iam", endpoint_url=moto_endpoint, region_name=REGION, **creds),
            "s3": boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION, **creds),
        }
    finally:
        _post(moto_endpoint, "/moto-api/reset-auth", "inf")


def _check(aws: dict[str, Any], **overrides: str) -> Any:
    key = aws["key"]
    kwargs: dict[str, Any] = {
        "access_key_id": key["AccessKeyId"],
        "secret_access_key": key["SecretAccessKey"],
        "deployed_access_key_id": key["AccessKeyId"],
        "user_name": USER,
        "bucket": BUCKET,
        "region": REGION,
        "iam": aws["iam"],
        "s3_endpoint_url": aws["endpoint"],
    }
    return check_egress_key(**{**kwargs, **overrides})


def _objects(aws: dict[str, Any]) -> list[str]:
    return [o["Key"] for o in aws["s3"].list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_the_deployed_key_passes_and_writes_one_health_check_object(aws: dict[str, Any]) -> None:
    result = _check(aws)
    assert result.object_key.startswith("_healthcheck/key-check-")
    assert _objects(aws) == [result.object_key]


def test_a_key_that_differs_from_the_deployed_output_is_refused_before_any_upload(aws: dict[str, Any]) -> None:
    with pytest.raises(EgressKeyCheckFailed) as failed:
        _check(aws, deployed_access_key_id="AKIDFAKEOTHERKEY0000")
    assert failed.value.check == CHECK_DEPLOYED
    assert "EgressAccessKeyId is ****0000" in str(failed.value)
    assert _objects(aws) == []


def test_a_key_iam_does_not_have_is_refused(aws: dict[str, Any]) -> None:
    gone = "AKIDFAKEDELETEDKEY99"
    with pytest.raises(EgressKeyCheckFailed) as failed:
        _check(aws, access_key_id=gone, deployed_access_key_id=gone)
    assert failed.value.check == CHECK_IAM
    assert f"key ****EY99 is not an access key of IAM user {USER}" in str(failed.value)


def test_an_inactive_key_is_refused(aws: dict[str, Any]) -> None:
    aws["iam"].update_access_key(UserName=USER, AccessKeyId=aws["key"]["AccessKeyId"], Status="Inactive")
    with pytest.raises(EgressKeyCheckFailed) as failed:
        _check(aws)
    assert failed.value.check == CHECK_IAM
    assert "is Inactive" in str(failed.value)


def test_a_wrong_secret_fails_the_upload_and_is_never_shown(aws: dict[str, Any]) -> None:
    wrong = "fake-wrong-secret-access-key-000000000000"
    with pytest.raises(EgressKeyCheckFailed) as failed:
        _check(aws, secret_access_key=wrong)
    assert failed.value.check == CHECK_UPLOAD
    assert "SignatureDoesNotMatch" in str(failed.value)
    assert wrong not in str(failed.value) and aws["key"]["SecretAccessKey"] not in str(failed.value)
    assert _objects(aws) == []


def test_a_key_without_put_object_permission_fails_the_upload(aws: dict[str, Any]) -> None:
    aws["iam"].delete_user_policy(UserName=USER, PolicyName="LiveKitEgressS3Access")
    with pytest.raises(EgressKeyCheckFailed) as failed:
        _check(aws)
    assert failed.value.check == CHECK_UPLOAD
    assert "AccessDenied" in str(failed.value)
