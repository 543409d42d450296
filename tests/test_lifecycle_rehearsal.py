"""The lifecycle rehearsal end to end (the pinned CDK CLI, moto's server plus our extension on 127.0.0.1, and the
local LiveKit server speaking LiveKit's Twirp protocol on 127.0.0.1: real AWS and LiveKit Cloud are unreachable
from here), and its upload probe, which must fail for a key IAM no longer has."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from livekit.protocol import sip as proto_sip

from callsaver_infra.app.config import load_environments
from callsaver_infra.dev.livekit_local import LocalLiveKitServer
from callsaver_infra.dev.rehearsal import moto_ext  # noqa: F401  # registers the extension before the server starts
from callsaver_infra.dev.rehearsal.lifecycle import LIFECYCLE_RULE_ID, LifecycleRehearsal
from tests.helpers import CONFIG_DIR, ROOT

STEPS = ("bootstrap", "deploy", "set operator secrets", "record calls", "update", "destroy", "redeploy over retained")


def test_lifecycle_rehearsal_passes_with_zero_failed_uploads() -> None:
    env = {
        "PATH": os.pathsep.join([str(ROOT / "node_modules" / ".bin"), str(Path(sys.executable).parent), os.defpath]),
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "callsaver_infra.dev.rehearsal.lifecycle"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for step in STEPS:
        assert f"  ok     {step} " in result.stdout, step
    assert "Uploads with the key LiveKit holds: 7 ok, 0 failed." in result.stdout
    assert "17 resources adopted" in result.stdout
    assert "rehearsal-only" not in result.stdout + result.stderr  # no operator value is ever printed
    assert not re.search(r"AKIA[0-9A-Z]{16}", result.stdout + result.stderr), "a full access key id was printed"


def test_the_probe_fails_for_a_key_iam_deleted(moto_endpoint: str, tmp_path: Path) -> None:
    """The probe's upload is checked by moto's IAM enforcement: once the held key is deleted, the call's recording
    fails and is counted."""
    config = load_environments(CONFIG_DIR)["local"]
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    admin: dict[str, Any] = {"endpoint_url": moto_endpoint, "region_name": config.region}
    admin |= {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    bucket = config.storage.bucket_name
    boto3.client("s3", **admin).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": config.region}
    )
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="probe-user")
    statement = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    iam.put_user_policy(
        UserName="probe-user",
        PolicyName="put",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
    )
    key = iam.create_access_key(UserName="probe-user")["AccessKey"]
    from callsaver_infra.dev.rehearsal.runner import LIVEKIT_API_KEY

    secret = "fake-probe-secret-0000000000000000"
    lk = LocalLiveKitServer(LIVEKIT_API_KEY, secret, s3_endpoint_url=moto_endpoint).start()
    try:
        rule = proto_sip.SIPDispatchRuleInfo(
            rule=proto_sip.SIPDispatchRule(
                dispatch_rule_individual=proto_sip.SIPDispatchRuleIndividual(room_prefix="call")
            )
        )
        output = rule.room_config.egress.room.file_outputs.add()
        output.filepath = "{room_name}/{time}"
        output.s3.bucket, output.s3.region = bucket, config.region
        output.s3.access_key, output.s3.secret = key["AccessKeyId"], key["SecretAccessKey"]
        output.s3.endpoint, output.s3.force_path_style = moto_endpoint, True
        rule.room_config.egress.room.audio_only = True
        lk.add_inbound_trunk(proto_sip.SIPInboundTrunkInfo(name="trunk", numbers=["+15550100002"]))
        lk.add_dispatch_rule(rule, rule_id=LIFECYCLE_RULE_ID)
        probe = LifecycleRehearsal(config, ROOT, out=lambda line: None)
        probe.endpoint_url, probe.livekit, probe.livekit_secret = moto_endpoint, lk, secret
        probe._probe("with the key")
        assert (probe.uploads_ok, probe.uploads_failed) == (1, [])
        iam.delete_access_key(UserName="probe-user", AccessKeyId=key["AccessKeyId"])
        probe._probe("after the key was deleted")
        assert probe.uploads_ok == 1 and len(probe.uploads_failed) == 1
        assert probe.uploads_failed[0].startswith("after the key was deleted: ")
    finally:
        lk.stop()
