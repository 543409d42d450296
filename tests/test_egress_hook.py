"""`callsaver-infra push-egress`, the post-deploy hook that writes the recording settings into LiveKit.

LiveKit Cloud and AWS are unreachable from here. LiveKit is a LocalLiveKitServer on 127.0.0.1 speaking LiveKit's
Twirp protocol (the real livekit-api client talks to it); AWS (CloudFormation, Secrets Manager, S3) is moto's
server on 127.0.0.1, reached through boto3's standard AWS_ENDPOINT_URL. Every command run checks that no secret
reaches stdout, stderr or the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from livekit import api
from livekit.api.twirp_client import ServerError

from callsaver_infra.app.config import load_environment
from callsaver_infra.app.secret_catalog import PLACEHOLDER
from callsaver_infra.dev.livekit_local import LISTING_MODES, LocalLiveKitServer
from callsaver_infra.ops import push_egress as egress_hook
from callsaver_infra.ops.cli import EXIT_ERROR, EXIT_NOT_READY, EXIT_OK, main
from callsaver_infra.ops.push_egress import (
    PROBE_ATTRIBUTE,
    VERIFY_PAGE_URL,
    EgressCredentials,
    LiveKitCredentials,
    LiveKitSession,
    Redactor,
    RetryPolicy,
    RulePlan,
    api_url,
    mask_key,
    render_diff,
)
from tests.helpers import CONFIG_DIR, OperatorAws
from tests.helpers import hang_up as shared_hang_up

ENV = "local"
# --verify records 0.2 s instead of its default 3 s: the local LiveKit's egress is active within 0.05 s, so the
# recording still starts, records, stops and uploads.
SHORT_VERIFY = ("--verify-seconds", "0.2")
REGION = "us-west-1"
BUCKET = "callsaver-sessions-local"
API_KEY = "APIfakekeyNotReal01"
API_SECRET = "test-livekit-secret-not-real-0123456789abcdef"
ACCESS_KEY_ID = "AKIDFAKE0000EXAMPLE1"
SECRET_ACCESS_KEY = "FAKEsecretAccessKeyNotReal0000000000000"
OLD_SECRET_ACCESS_KEY = "FAKEoldSecretAccessKeyNotReal111111111"
# Strings that must never be printed or logged; the access key id may appear only as its last 4 characters.
NEVER_SHOWN = (API_SECRET, SECRET_ACCESS_KEY, OLD_SECRET_ACCESS_KEY, ACCESS_KEY_ID, API_KEY)
STORAGE_STACK, IAM_STACK = f"Callsaver-Storage-{ENV}", f"Callsaver-IAM-{ENV}"
EGRESS_SECRET = f"callsaver/{ENV}/egress/s3-access-key"
AGENT = "callsaver-agent-local"  # livekit.worker_name of config/local.toml


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def aws(operator_aws: OperatorAws) -> OperatorAws:
    return operator_aws


@pytest.fixture
def lk(aws: OperatorAws) -> Iterator[LocalLiveKitServer]:
    """The local LiveKit server; its egress uploads go to moto (the requests carry no endpoint, as in real envs)."""
    with LocalLiveKitServer(API_KEY, API_SECRET, s3_endpoint_url=aws.endpoint, fault_delay=2.0) as server:
        yield server


def deploy(
    aws: OperatorAws,
    tmp_path: Path,
    *,
    bucket: bool = True,
    livekit_key: str | None = API_KEY,
    livekit_secret: str | None = API_SECRET,
    egress_secret: str | None = None,
    drop: tuple[str, str | None] | None = None,
) -> Path:
    """Create what `make deploy ENV=local` creates (bucket, secrets) and write its outputs file.

    drop=(stack, None) leaves a stack out of the outputs file, drop=(stack, key) one output.
    """
    if bucket:
        aws.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    value = egress_secret or json.dumps({"accessKeyId": ACCESS_KEY_ID, "secretAccessKey": SECRET_ACCESS_KEY})
    arn = aws.secrets.create_secret(Name=EGRESS_SECRET, SecretString=value)["ARN"]
    for ref, secret in (("LIVEKIT_API_KEY", livekit_key), ("LIVEKIT_API_SECRET", livekit_secret)):
        if secret is not None:
            aws.secrets.create_secret(Name=f"callsaver/{ENV}/backend/{ref}", SecretString=secret)
    outputs: dict[str, dict[str, str]] = {
        STORAGE_STACK: {
            "SessionBucketName": BUCKET,
            "SessionBucketArn": f"arn:aws:s3:::{BUCKET}",
            "SessionBucketRegion": REGION,
        },
        IAM_STACK: {
            "EgressUserName": f"callsaver-livekit-egress-{ENV}",
            "EgressAccessKeyId": ACCESS_KEY_ID,
            "EgressCredentialsSecretArn": arn,
        },
    }
    if drop is not None:
        stack, key = drop
        if key is None:
            del outputs[stack]
        else:
            del outputs[stack][key]
    path = tmp_path / f"cdk.outputs.{ENV}.json"
    path.write_text(json.dumps(outputs, indent=2))
    return path


def create_stacks(aws: OperatorAws, outputs_file: Path) -> None:
    """Create the stacks in moto's CloudFormation with the same outputs (tiny templates of literal outputs)."""
    for stack, outputs in json.loads(outputs_file.read_text()).items():
        template = {
            "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
        aws.cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(template))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return str(value)


def config_dir(tmp_path: Path, **egress: Any) -> Path:
    """config/local.toml with [call_recording] keys replaced, in its own directory."""
    data = tomllib.loads((CONFIG_DIR / f"{ENV}.toml").read_text())
    data["call_recording"] = {**data["call_recording"], **egress}
    lines = [f"{k} = {_toml(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml(v)}" for k, v in values.items()]
    directory = tmp_path / "config"
    directory.mkdir(exist_ok=True)
    (directory / f"{ENV}.toml").write_text("\n".join(lines) + "\n")
    load_environment(directory / f"{ENV}.toml")  # the test's config itself must be valid
    return directory


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_hook(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, configs: Path, *args: str) -> Run:
    """Run `callsaver-infra push-egress --env local ...` in-process; fail if a secret shows up anywhere."""
    caplog.set_level(logging.INFO)
    capsys.readouterr()
    code = main(["--config-dir", str(configs), "push-egress", "--env", ENV, *args])
    captured = capsys.readouterr()
    for text in (captured.out, captured.err, caplog.text):
        for secret in NEVER_SHOWN:
            assert secret not in text
    return Run(code, captured.out, captured.err)


def seeded_rule(*, egress: api.RoomEgress | None = None, agent: str = AGENT, **fields: Any) -> api.SIPDispatchRuleInfo:
    """An inbound rule dispatching `agent` (the local environment's by default), as an operator would create it."""
    defaults: dict[str, Any] = {
        "name": "callsaver-inbound",
        "trunk_ids": ["ST_trunkfake01"],
        "rule": api.SIPDispatchRule(dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="call")),
        "room_config": api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent)] if agent else []),
    }
    rule = api.SIPDispatchRuleInfo(**{**defaults, **fields})
    if egress is not None:
        rule.room_config.egress.CopyFrom(egress)
    return rule


def expected_egress(bucket: str = BUCKET, filepath: str = "{room_name}/{time}") -> api.RoomCompositeEgressRequest:
    """What the hook must write, spelled out independently of the hook's own builder."""
    return api.RoomCompositeEgressRequest(
        audio_only=True,
        file_outputs=[
            api.EncodedFileOutput(
                file_type=api.EncodedFileType.OGG,
                filepath=filepath,
                s3=api.S3Upload(access_key=ACCESS_KEY_ID, secret=SECRET_ACCESS_KEY, region=REGION, bucket=bucket),
            )
        ],
    )


def old_egress() -> api.RoomEgress:
    egress = expected_egress(bucket="callsaver-old-console-bucket", filepath="calls/{room_name}")
    egress.file_outputs[0].s3.secret = OLD_SECRET_ACCESS_KEY
    return api.RoomEgress(room=egress)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def hang_up(lk: LocalLiveKitServer, room: str, egress_id: str) -> None:
    shared_hang_up(lk, room, egress_id, API_KEY, API_SECRET)


def updates(lk: LocalLiveKitServer) -> int:
    return lk.methods_called().count("UpdateSIPDispatchRule")


# --------------------------------------------------------------------------- pushing


def test_end_to_end_outputs_file_push_record_then_no_change(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """Deployed outputs (the cdk outputs file) -> hook -> the rule holds exactly the expected settings, a call
    through it is recorded into the bucket, and a second run changes nothing."""
    outputs = deploy(aws, tmp_path)
    rule_id = lk.add_dispatch_rule(seeded_rule())
    configs = config_dir(tmp_path)
    url = ["--livekit-url", lk.url, "--outputs-file", str(outputs)]

    first = run_hook(capsys, caplog, configs, *url)
    assert first.code == EXIT_OK, first.err
    stored = lk.dispatch_rules[rule_id]
    assert stored.room_config.egress.room == expected_egress()
    s3 = stored.room_config.egress.room.file_outputs[0].s3
    assert (s3.endpoint, s3.force_path_style) == ("", False), "no endpoint may reach a real environment's rule"
    assert f'dispatch rule {rule_id} "callsaver-inbound": updated' in first.out
    assert f'inbound calls through {rule_id} "callsaver-inbound" are recorded by LiveKit' in first.out
    assert updates(lk) == 3, "probe attribute set and removed (nothing showed whether listing blanks), one replace"
    assert PROBE_ATTRIBUTE not in stored.attributes

    room, egress_id = lk.simulate_inbound_call(rule_id)
    assert egress_id is not None
    hang_up(lk, room, egress_id)
    info = lk.wait_for_egress(egress_id)
    assert api.EgressStatus.Name(info.status) == "EGRESS_COMPLETE", info.error
    key = info.file_results[0].filename
    assert key.startswith(f"{room}/") and key.endswith(".ogg")
    assert aws.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 0

    second = run_hook(capsys, caplog, configs, *url)
    assert second.code == EXIT_OK, second.err
    assert "LiveKit already holds these settings; nothing changed" in second.out
    assert "no change" in second.out
    assert updates(lk) == 3, "an unchanged rule must not be written again"
    assert lk.dispatch_rules[rule_id] is stored


def test_end_to_end_outputs_from_cloudformation(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """Without --outputs-file the outputs come from CloudFormation DescribeStacks; the rule then holds exactly the
    expected settings, and a second run reports no change."""
    create_stacks(aws, deploy(aws, tmp_path))
    rule_id = lk.add_dispatch_rule(seeded_rule())
    configs = config_dir(tmp_path)

    first = run_hook(capsys, caplog, configs, "--livekit-url", lk.url)
    assert first.code == EXIT_OK, first.err
    assert "outputs from CloudFormation in account 123456789012, us-west-1" in first.out
    assert lk.dispatch_rules[rule_id].room_config.egress.room == expected_egress()

    second = run_hook(capsys, caplog, configs, "--livekit-url", lk.url)
    assert second.code == EXIT_OK and "no change" in second.out
    assert updates(lk) == 3


def test_every_other_field_of_the_rule_is_preserved(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """The rule is read, changed only in room_config.egress.room, and written back whole."""
    rich = seeded_rule(
        name="callsaver-main-line",
        metadata='{"tenant": "callsaver"}',
        hide_phone_number=True,
        krisp_enabled=True,
        room_preset="",
        media_encryption=api.SIPMediaEncryption.SIP_MEDIA_ENCRYPT_ALLOW,
    )
    rich.trunk_ids.append("ST_trunkfake02")
    rich.inbound_numbers.extend(["+15550100001", "+15550100002"])
    rich.numbers.append("+15550109999")
    rich.attributes.update({"team": "voice", "tier": "gold"})
    rich.rule.dispatch_rule_individual.pin = "1234"
    rich.rule.dispatch_rule_individual.no_randomness = False
    rich.room_config.empty_timeout = 30
    rich.room_config.departure_timeout = 10
    rich.room_config.max_participants = 4
    rich.room_config.metadata = "room-meta"
    rich.room_config.agents.append(api.RoomAgentDispatch(agent_name="another-agent", metadata="{}"))
    rich.room_config.egress.CopyFrom(old_egress())
    rule_id = lk.add_dispatch_rule(rich)
    before = api.SIPDispatchRuleInfo()
    before.CopyFrom(lk.dispatch_rules[rule_id])
    outputs = deploy(aws, tmp_path)

    result = run_hook(
        capsys,
        caplog,
        config_dir(tmp_path),
        "--livekit-url",
        lk.url,
        "--outputs-file",
        str(outputs),
    )
    assert result.code == EXIT_OK, result.err
    after = api.SIPDispatchRuleInfo()
    after.CopyFrom(lk.dispatch_rules[rule_id])
    assert after.room_config.egress.room == expected_egress()
    for rule in (before, after):
        rule.room_config.egress.ClearField("room")
        rule.ClearField("updated_at")  # set by LiveKit on every write
    assert after == before


def test_s3_endpoint_url_is_pushed_only_when_given(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """--s3-endpoint-url (local rehearsal) adds S3Upload.endpoint and path-style addressing."""
    outputs = deploy(aws, tmp_path)
    rule_id = lk.add_dispatch_rule(seeded_rule())
    result = run_hook(
        capsys,
        caplog,
        config_dir(tmp_path),
        "--livekit-url",
        lk.url,
        "--outputs-file",
        str(outputs),
        "--s3-endpoint-url",
        aws.endpoint,
    )
    assert result.code == EXIT_OK, result.err
    s3 = lk.dispatch_rules[rule_id].room_config.egress.room.file_outputs[0].s3
    assert (s3.endpoint, s3.force_path_style) == (aws.endpoint, True)


def test_dry_run_shows_a_masked_diff_and_pushes_nothing(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """--dry-run prints the change as a diff: the access key as its last 4 characters, secrets never."""
    rule_id = lk.add_dispatch_rule(seeded_rule(egress=old_egress()))
    before = lk.dispatch_rules[rule_id]
    outputs = deploy(aws, tmp_path)

    result = run_hook(
        capsys,
        caplog,
        config_dir(tmp_path),
        "--livekit-url",
        lk.url,
        "--outputs-file",
        str(outputs),
        "--dry-run",
    )
    assert result.code == EXIT_OK, result.err
    out = result.out
    assert f'dispatch rule {rule_id} "callsaver-inbound": room_config.egress.room' in out
    assert '  -file_outputs[0].s3.bucket: "callsaver-old-console-bucket"\n' in out
    assert f'  +file_outputs[0].s3.bucket: "{BUCKET}"\n' in out
    assert '  -file_outputs[0].filepath: "calls/{room_name}"\n' in out
    assert '  +file_outputs[0].filepath: "{room_name}/{time}"\n' in out
    assert "  -file_outputs[0].s3.secret: <hidden, old>\n" in out
    assert "  +file_outputs[0].s3.secret: <hidden, new>\n" in out
    assert f"   file_outputs[0].s3.access_key: ****{ACCESS_KEY_ID[-4:]}\n" in out
    assert "dry run: would update 1 of 1 dispatch rule(s); nothing was pushed" in out
    # run_hook already checked that neither secret nor the whole access key id was printed.
    assert updates(lk) == 0
    assert lk.dispatch_rules[rule_id] is before


def test_auto_egress_off_pushes_nothing(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """With auto_egress = false the hook never contacts LiveKit, not even to read the rule, and the LiveKit key may
    still be the placeholder (a first deploy)."""
    rule_id = lk.add_dispatch_rule(seeded_rule())
    outputs = deploy(aws, tmp_path, livekit_key=PLACEHOLDER, livekit_secret=PLACEHOLDER)
    configs = config_dir(tmp_path, auto_egress=False)

    result = run_hook(capsys, caplog, configs, "--livekit-url", lk.url, "--outputs-file", str(outputs))
    assert result.code == EXIT_OK, result.err
    assert "recording of inbound calls is off" in result.out and "nothing is pushed to LiveKit" in result.out
    assert lk.methods_called() == []
    assert not lk.dispatch_rules[rule_id].room_config.HasField("egress")


# --------------------------------------------------------------------------- failures: nothing pushed


@pytest.mark.parametrize(
    "drop",
    [(IAM_STACK, None), (STORAGE_STACK, "SessionBucketRegion"), (IAM_STACK, "EgressCredentialsSecretArn")],
)
@pytest.mark.parametrize("source", ["outputs-file", "cloudformation"])
def test_stack_or_output_missing(
    aws: OperatorAws,
    lk: LocalLiveKitServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: Any,
    drop: tuple[str, str | None],
    source: str,
) -> None:
    """A stack not deployed or an output missing (outputs from the file or from CloudFormation) names both and
    pushes nothing."""
    outputs = deploy(aws, tmp_path, drop=drop)
    lk.add_dispatch_rule(seeded_rule())
    args = ["--livekit-url", lk.url]
    if source == "outputs-file":
        args += ["--outputs-file", str(outputs)]
    else:
        create_stacks(aws, outputs)
    result = run_hook(capsys, caplog, config_dir(tmp_path), *args)
    assert result.code == EXIT_NOT_READY
    stack, key = drop
    # From CloudFormation the message adds the stack's status: "stack X (status CREATE_COMPLETE) has no output Y".
    expected = (
        rf"stack {stack} is not deployed" if key is None else rf"stack {stack}( \(status \w+\))? has no output {key}"
    )
    assert re.search(expected, result.err), result.err
    assert "make deploy ENV=local" in result.err
    assert lk.methods_called() == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"livekit_key": None},
            "secret callsaver/local/backend/LIVEKIT_API_KEY does not exist: deploy Callsaver-Secrets-local, then "
            "run: callsaver-infra secrets set --env local backend/LIVEKIT_API_KEY",
        ),
        (
            {"livekit_key": PLACEHOLDER},
            "secret callsaver/local/backend/LIVEKIT_API_KEY is still the placeholder: set it with: "
            "callsaver-infra secrets set --env local backend/LIVEKIT_API_KEY",
        ),
        (
            {"livekit_secret": PLACEHOLDER},
            "secret callsaver/local/backend/LIVEKIT_API_SECRET is still the placeholder: set it with: "
            "callsaver-infra secrets set --env local backend/LIVEKIT_API_SECRET",
        ),
    ],
)
def test_livekit_secret_missing_or_placeholder(
    aws: OperatorAws,
    lk: LocalLiveKitServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: Any,
    overrides: dict[str, Any],
    expected: str,
) -> None:
    """An unset LiveKit key names the secret and the command that sets it; LiveKit is never contacted."""
    outputs = deploy(aws, tmp_path, **overrides)
    lk.add_dispatch_rule(seeded_rule())
    result = run_hook(
        capsys,
        caplog,
        config_dir(tmp_path),
        "--livekit-url",
        lk.url,
        "--outputs-file",
        str(outputs),
    )
    assert result.code == EXIT_NOT_READY
    assert result.err == f"error: {expected}\n"
    assert lk.methods_called() == []


def test_egress_secret_not_json_is_reported_without_its_value(
    aws: OperatorAws, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """A malformed egress credentials secret is named, never quoted."""
    outputs = deploy(aws, tmp_path, egress_secret=f"accessKeyId={ACCESS_KEY_ID} secret={SECRET_ACCESS_KEY}")
    result = run_hook(capsys, caplog, config_dir(tmp_path), "--outputs-file", str(outputs))
    assert result.code == EXIT_ERROR
    assert f"secret:{EGRESS_SECRET}" in result.err
    assert "is not JSON with non-empty accessKeyId and secretAccessKey" in result.err


def test_livekit_unreachable_retries_then_names_the_url(
    aws: OperatorAws, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """Nothing listens on the URL (a closed local port): bounded retries, then the URL."""
    outputs = deploy(aws, tmp_path)
    url = closed_port_url()
    result = run_hook(capsys, caplog, config_dir(tmp_path), "--livekit-url", url, "--outputs-file", str(outputs))
    assert result.code == EXIT_ERROR
    assert f"LiveKit at {url} is unreachable" in result.err
    assert "(ListSIPDispatchRule, 3 attempt(s) with backoff)" in result.err
    assert "check livekit.url in config/local.toml" in result.err and "nothing was pushed" in result.err


def test_livekit_timing_out_retries_then_gives_up(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """Every answer held past --timeout: three bounded attempts, then an error naming the URL; nothing pushed."""
    outputs = deploy(aws, tmp_path)
    rule_id = lk.add_dispatch_rule(seeded_rule())
    lk.inject_fault("ListSIPDispatchRule", "timeout", count=3)
    result = run_hook(
        capsys,
        caplog,
        config_dir(tmp_path),
        "--livekit-url",
        lk.url,
        "--outputs-file",
        str(outputs),
        "--timeout",
        "0.3",
    )
    assert result.code == EXIT_ERROR
    assert f"LiveKit at {lk.url} did not answer within 0.3 s (ListSIPDispatchRule, 3 attempt(s)" in result.err
    assert lk.methods_called() == ["ListSIPDispatchRule"] * 3
    assert not lk.dispatch_rules[rule_id].room_config.HasField("egress")


def test_transient_failures_are_retried(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """A 503 and a timeout, then an answer: the hook retries and succeeds."""
    outputs = deploy(aws, tmp_path)
    rule_id = lk.add_dispatch_rule(seeded_rule())
    lk.inject_fault("ListSIPDispatchRule", "unavailable")
    lk.inject_fault("UpdateSIPDispatchRule", "timeout")
    result = run_hook(
        capsys,
        caplog,
        config_dir(tmp_path),
        "--livekit-url",
        lk.url,
        "--outputs-file",
        str(outputs),
        "--timeout",
        "0.3",
    )
    assert result.code == EXIT_OK, result.err
    # List (503), List, probe set (held past the timeout), probe set, probe read, probe removed, replace, read back.
    assert lk.methods_called() == ["ListSIPDispatchRule"] * 2 + [
        "UpdateSIPDispatchRule",
        "UpdateSIPDispatchRule",
        "ListSIPDispatchRule",
        "UpdateSIPDispatchRule",
        "UpdateSIPDispatchRule",
        "ListSIPDispatchRule",
    ]
    assert lk.dispatch_rules[rule_id].room_config.egress.room == expected_egress()


@pytest.mark.parametrize("method", ["ListSIPDispatchRule", "UpdateSIPDispatchRule"])
def test_livekit_5xx_gives_up_after_bounded_retries(
    aws: OperatorAws,
    lk: LocalLiveKitServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: Any,
    method: str,
) -> None:
    """LiveKit answering 500 three times: the status is reported and the rule is untouched."""
    outputs = deploy(aws, tmp_path)
    rule_id = lk.add_dispatch_rule(seeded_rule())
    lk.inject_fault(method, "internal", count=3)
    result = run_hook(
        capsys,
        caplog,
        config_dir(tmp_path),
        "--livekit-url",
        lk.url,
        "--outputs-file",
        str(outputs),
    )
    assert result.code == EXIT_ERROR
    assert f"LiveKit at {lk.url} answered 500 internal: internal error (injected fault) ({method}" in result.err
    assert "LiveKit is failing on its side" in result.err and "nothing was pushed" in result.err
    assert lk.methods_called().count(method) == 3
    assert not lk.dispatch_rules[rule_id].room_config.HasField("egress")


def test_wrong_livekit_secret_is_401_naming_the_secret(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """A key pair LiveKit refuses (401) is not retried, and the message names the secret holding the key."""
    outputs = deploy(aws, tmp_path, livekit_secret="test-livekit-secret-WRONG-not-real-000000")
    lk.add_dispatch_rule(seeded_rule())
    result = run_hook(
        capsys,
        caplog,
        config_dir(tmp_path),
        "--livekit-url",
        lk.url,
        "--outputs-file",
        str(outputs),
    )
    assert "test-livekit-secret-WRONG-not-real-000000" not in result.out + result.err
    assert result.code == EXIT_ERROR
    # LiveKit answers a bad signature with a plain-text 401 (pkg/service/auth.go), not a Twirp error.
    assert "refused ListSIPDispatchRule: 401 (the token was not accepted)" in result.err
    assert "secret callsaver/local/backend/LIVEKIT_API_KEY" in result.err
    assert "callsaver-infra secrets set --env local backend/LIVEKIT_API_KEY" in result.err
    assert lk.methods_called() == ["ListSIPDispatchRule"]


@pytest.mark.parametrize("status", [401, 403])
def test_permission_denied_names_the_secret(status: int) -> None:
    """401 "permissions denied" (LiveKit's way) and 403 permission_denied are reported alike, without retrying.

    No server needed: the call itself raises the LiveKit client's ServerError, as it does for a live answer.
    """
    attempts = []

    async def denied(_: api.LiveKitAPI) -> None:
        attempts.append(1)
        code = "unauthenticated" if status == 401 else "permission_denied"
        raise ServerError(code, "permissions denied", status=status)

    async def scenario() -> str:
        creds = LiveKitCredentials(API_KEY, API_SECRET)
        async with LiveKitSession("wss://example.invalid", creds, env="staging", redact=Redactor()) as session:
            with pytest.raises(egress_hook.HookError) as caught:
                await session.call("ListSIPDispatchRule", denied)
        return str(caught.value)

    message = asyncio.run(scenario())
    assert f"LiveKit at https://example.invalid refused ListSIPDispatchRule: {status}" in message
    assert "permissions denied" in message and "secret callsaver/staging/backend/LIVEKIT_API_KEY" in message
    assert attempts == [1]


def test_dispatch_rule_not_found_lists_the_rules_that_exist(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """A configured rule id LiveKit does not have: the message lists every rule (id and name); nothing pushed."""
    outputs = deploy(aws, tmp_path)
    first = lk.add_dispatch_rule(seeded_rule(name="main-line"))
    second = lk.add_dispatch_rule(seeded_rule(name="", trunk_ids=["ST_trunkfake09"]))
    result = run_hook(
        capsys,
        caplog,
        config_dir(tmp_path, dispatch_rule_ids=[first, "SDR_doesnotexist"]),
        "--livekit-url",
        lk.url,
        "--outputs-file",
        str(outputs),
    )
    assert result.code == EXIT_ERROR
    assert "dispatch rule SDR_doesnotexist (call_recording.dispatch_rule_ids in config/local.toml) does not exist" in (
        result.err
    )
    assert f'{first} "main-line": agents {AGENT}; ST_trunkfake01; belongs to local' in result.err
    assert f"{second} (no name): agents {AGENT}; ST_trunkfake09" in result.err
    assert "nothing was pushed" in result.err
    assert updates(lk) == 0
    assert not lk.dispatch_rules[first].room_config.HasField("egress")


# --------------------------------------------------------------------------- --verify


def test_verify_records_a_web_page_into_healthcheck(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """--verify starts an audio-only web egress (it needs no participant) with the pushed bucket, region and key,
    stops it once active (the stand-in models egress's start rules), and finds the file under _healthcheck/ with
    HeadObject."""
    outputs = deploy(aws, tmp_path)
    lk.add_dispatch_rule(seeded_rule())
    verify = ("--outputs-file", str(outputs), "--verify", *SHORT_VERIFY)
    result = run_hook(capsys, caplog, config_dir(tmp_path), "--livekit-url", lk.url, *verify)
    assert result.code == EXIT_OK, result.err
    keys = [o["Key"] for o in aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="_healthcheck/verify-").get("Contents", [])]
    assert len(keys) == 1 and re.fullmatch(r"_healthcheck/verify-\d{8}T\d{6}Z-[0-9a-f]{6}\.ogg", keys[0]), keys
    # Before pushing, the key itself wrote one tiny object (push-egress's key check).
    checks = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="_healthcheck/key-check-").get("KeyCount", 0)
    assert checks == 1 and "egress key checked: it is the deployed key and uploaded" in result.out
    assert f"verify: ok: s3://{BUCKET}/{keys[0]} written by egress EG_" in result.out
    (egress,) = lk.egresses.values()
    assert egress.web.url == VERIFY_PAGE_URL and egress.web.audio_only
    s3 = egress.web.file_outputs[0].s3
    assert (s3.bucket, s3.region) == (BUCKET, REGION)
    assert s3.access_key != ACCESS_KEY_ID and s3.secret != SECRET_ACCESS_KEY, "EgressInfo must mask credentials"


def test_the_old_empty_room_verify_fails_against_the_strict_stand_in(aws: OperatorAws, lk: LocalLiveKitServer) -> None:
    """The verify this hook used to run (a room composite of an empty room, stopped after a few seconds) ends
    EGRESS_ABORTED with nothing uploaded, as on LiveKit Cloud: nobody publishes, so egress never starts (the
    stand-in models livekit/egress's start rules)."""
    aws.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    settings = egress_hook.EgressSettings(
        BUCKET, REGION, "{room_name}", EgressCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), s3_endpoint_url=aws.endpoint
    )

    async def old_verify() -> api.EgressInfo:
        async with api.LiveKitAPI(lk.url, API_KEY, API_SECRET) as lkapi:
            await lkapi.room.create_room(api.CreateRoomRequest(name="_healthcheck-old"))
            request = egress_hook.room_composite_request(
                settings, filepath="_healthcheck/{time}", room_name="_healthcheck-old"
            )
            started = await lkapi.egress.start_room_composite_egress(request)
            await asyncio.sleep(0.3)
            await lkapi.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
            return await asyncio.to_thread(lk.wait_for_egress, started.egress_id)

    info = asyncio.run(old_verify())
    assert api.EgressStatus.Name(info.status) == "EGRESS_ABORTED"
    assert aws.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_verify_reports_the_egress_error(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """With the bucket gone, --verify fails with LiveKit's own egress error string."""
    outputs = deploy(aws, tmp_path, bucket=False)
    configs = config_dir(tmp_path, auto_egress=False)
    result = run_hook(
        capsys, caplog, configs, "--livekit-url", lk.url, "--outputs-file", str(outputs), "--verify", *SHORT_VERIFY
    )
    assert result.code == EXIT_ERROR
    assert "--verify failed: egress EG_" in result.err
    assert "ended EGRESS_FAILED: S3 upload failed: " in result.err and "NoSuchBucket" in result.err
    assert "UpdateSIPDispatchRule" not in lk.methods_called()


def test_verify_object_missing_names_bucket_and_key() -> None:
    """An egress that reports COMPLETE while S3 has no object: the failure names the bucket and the key.

    No server: a session double answers the three egress calls with LiveKit's messages."""

    class Session:
        url = "https://example.invalid"

        def __init__(self) -> None:
            self.status = api.EgressStatus.EGRESS_STARTING

        async def call(self, what: str, fn: Any, *, retry: bool = True) -> Any:
            if what == "StartWebEgress":
                return api.EgressInfo(egress_id="EG_fake", status=self.status)
            if what == "StopEgress":
                self.status = api.EgressStatus.EGRESS_COMPLETE
                return api.EgressInfo(egress_id="EG_fake", status=api.EgressStatus.EGRESS_ENDING)
            self.status = {api.EgressStatus.EGRESS_STARTING: api.EgressStatus.EGRESS_ACTIVE}.get(
                self.status, self.status
            )
            info = api.EgressInfo(egress_id="EG_fake", status=self.status)
            if self.status == api.EgressStatus.EGRESS_COMPLETE:
                info.file_results.append(api.FileInfo(filename="_healthcheck/verify-x.ogg"))
            return api.ListEgressResponse(items=[info])

    settings = egress_hook.EgressSettings(
        BUCKET, REGION, "{room_name}", EgressCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    )
    result = asyncio.run(
        egress_hook.verify_egress(
            Session(),
            settings,
            lambda b, k: False,
            redact=Redactor(),  # type: ignore[arg-type]
            record_seconds=0.01,
        )
    )
    assert not result.ok
    assert f"reported s3://{BUCKET}/_healthcheck/verify-x.ogg written, but S3 has no such object" in result.detail


def test_dry_run_and_verify_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    """--verify writes a test object, so it cannot be part of a dry run."""
    with pytest.raises(SystemExit) as exited:
        main(["--config-dir", str(CONFIG_DIR), "push-egress", "--env", ENV, "--dry-run", "--verify"])
    assert exited.value.code == EXIT_ERROR
    assert "not allowed with argument" in capsys.readouterr().err


def test_verify_seconds_sets_how_long_verify_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """--verify-seconds reaches the hook's options; without it --verify records its default 3 s."""
    seen: list[egress_hook.HookOptions] = []
    monkeypatch.setattr(egress_hook, "run_hook", lambda config, options, aws: seen.append(options))
    base = ["--config-dir", str(CONFIG_DIR), "push-egress", "--env", ENV, "--verify"]
    assert main([*base, "--verify-seconds", "0.2"]) == EXIT_OK
    assert main(base) == EXIT_OK
    assert [o.verify_seconds for o in seen] == [0.2, egress_hook.VERIFY_RECORD_SECONDS]
    assert egress_hook.VERIFY_RECORD_SECONDS == 3.0


def test_verify_seconds_needs_verify_and_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --verify the option would do nothing: refused, as is a length that is not in (0, 300]."""
    assert main(["--config-dir", str(CONFIG_DIR), "push-egress", "--env", ENV, "--verify-seconds", "1"]) == EXIT_ERROR
    assert "--verify-seconds sets how long --verify records: give it with --verify" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["--config-dir", str(CONFIG_DIR), "push-egress", "--env", ENV, "--verify", "--verify-seconds", "0"])
    assert exited.value.code == EXIT_ERROR
    assert "'0' is not a number of seconds between 0 and 300" in capsys.readouterr().err


# --------------------------------------------------------------------------- pure pieces


def test_credentials_and_settings_never_show_secrets_in_repr() -> None:
    """Objects holding secrets mask them in repr and str (as in a traceback or a debug print)."""
    egress = EgressCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    livekit = LiveKitCredentials(API_KEY, API_SECRET)
    settings = egress_hook.EgressSettings(BUCKET, REGION, "{room_name}", egress)
    desired = egress_hook.room_composite_request(settings)
    plan = RulePlan(seeded_rule(sip_dispatch_rule_id="SDR_abc"), desired, egress_hook.credential_fingerprint(egress))
    for text in (repr(egress), str(egress), repr(livekit), str(livekit), repr(settings), repr(plan)):
        for secret in NEVER_SHOWN:
            assert secret not in text
    assert "****PLE1" in repr(egress) and "****al01" in repr(livekit)


def test_render_diff_of_a_rule_without_recording() -> None:
    """A rule with no automatic egress diffs from "(no automatic recording)" to the full settings."""
    creds = EgressCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    settings = egress_hook.EgressSettings(BUCKET, REGION, "{room_name}/{time}", creds)
    desired = egress_hook.room_composite_request(settings)
    plan = RulePlan(seeded_rule(sip_dispatch_rule_id="SDR_abc"), desired, egress_hook.credential_fingerprint(creds))
    assert plan.changed
    text = render_diff(plan)
    assert text.splitlines()[:3] == [
        'dispatch rule SDR_abc "callsaver-inbound": room_config.egress.room',
        "  --- in LiveKit now",
        "  +++ after push",
    ]
    assert "  -(no automatic recording)" in text
    assert "  +audio_only: true" in text and '  +file_outputs[0].file_type: "OGG"' in text
    assert "  +file_outputs[0].s3.secret: <hidden, new>" in text
    assert SECRET_ACCESS_KEY not in text and ACCESS_KEY_ID not in text


def test_small_helpers() -> None:
    """URL conversion, key masking, backoff schedule and the redactor."""
    assert api_url("wss://callsaver-d8dm5v36.livekit.cloud") == "https://callsaver-d8dm5v36.livekit.cloud"
    assert api_url("ws://127.0.0.1:7880") == "http://127.0.0.1:7880"
    assert api_url("http://127.0.0.1:7880") == "http://127.0.0.1:7880"
    assert mask_key(ACCESS_KEY_ID) == "****PLE1" and mask_key("short") == "****"
    assert [RetryPolicy().delay(n) for n in range(3)] == [0.5, 1.0, 2.0]
    redact = Redactor()
    redact.add_egress(EgressCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    assert redact(f"bad {SECRET_ACCESS_KEY} for {ACCESS_KEY_ID}") == "bad <hidden> for ****PLE1"


# --------------------------------------------------------------------------- listing modes: what LiveKit may mask


def rich_rule(*, foreign_credentials: bool) -> api.SIPDispatchRuleInfo:
    """A rule with every field an operator may set beside the recording: metadata, attributes, an agent with its
    metadata, trunks, numbers, a PIN, room settings, optionally a track egress with its own credentials, and a field
    this client does not know (number 999), which must survive byte for byte."""
    rule = seeded_rule(
        name="callsaver-main-line",
        metadata='{"tenant": "callsaver"}',
        hide_phone_number=True,
        krisp_enabled=True,
    )
    rule.trunk_ids.append("ST_trunkfake02")
    rule.inbound_numbers.append("+15550100001")
    rule.numbers.append("+15550109999")
    rule.attributes.update({"team": "voice"})
    rule.rule.dispatch_rule_individual.pin = "1234"
    rule.room_config.empty_timeout = 30
    rule.room_config.metadata = "room-meta"
    rule.room_config.agents[0].metadata = '{"greeting": "hello"}'
    if foreign_credentials:
        tracks = api.AutoTrackEgress(
            filepath="tracks/{room_name}",
            s3=api.S3Upload(access_key="AKIDFAKEOTHERKEY0001", secret="FAKEotherSecretNotReal000000", bucket="other"),
        )
        rule.room_config.egress.tracks.CopyFrom(tracks)
    rule.MergeFromString(b"\xba\x3e\x07unknown")  # field 999, wire type 2: "unknown"
    return rule


def stored_unowned(lk: LocalLiveKitServer, rule_id: str) -> bytes:
    return egress_hook.unowned_part(lk.dispatch_rules[rule_id]).SerializeToString(deterministic=True)


def rotate(aws: OperatorAws, outputs: Path, key_id: str, secret: str) -> None:
    """A new access key, as an IAM stack update after egress_writer.access_key_serial was bumped leaves it."""
    aws.secrets.put_secret_value(
        SecretId=EGRESS_SECRET, SecretString=json.dumps({"accessKeyId": key_id, "secretAccessKey": secret})
    )
    data = json.loads(outputs.read_text())
    data[IAM_STACK]["EgressAccessKeyId"] = key_id
    outputs.write_text(json.dumps(data))


@pytest.fixture(params=LISTING_MODES)
def listing(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def masked_lk(aws: OperatorAws, listing: str) -> Iterator[LocalLiveKitServer]:
    """The local LiveKit server listing rules in one of the three ways LiveKit might (see livekit_local)."""
    with LocalLiveKitServer(API_KEY, API_SECRET, s3_endpoint_url=aws.endpoint, listing=listing) as server:
        yield server


def test_each_listing_mode_push_then_nothing_changed_then_rotation(
    aws: OperatorAws, masked_lk: LocalLiveKitServer, listing: str, tmp_path: Path, capsys: Any, caplog: Any
) -> None:
    """In every listing mode: a first push, a second that changes nothing (the key id, masked in two modes, is
    compared with the push receipt), a rotation that rewrites; the rule's other fields never change.

    In the blanking mode the first push is refused until the operator confirms the rule's sensitive fields are
    empty (--accept-blanked-fields), since a listing that blanks them cannot tell empty from erased.
    """
    lk = masked_lk
    outputs = deploy(aws, tmp_path)
    rule_id = lk.add_dispatch_rule(seeded_rule())
    before = stored_unowned(lk, rule_id)
    args = ["--livekit-url", lk.url, "--outputs-file", str(outputs)]
    configs = config_dir(tmp_path)
    if listing == "redacted":
        refused = run_hook(capsys, caplog, configs, *args)
        assert refused.code == EXIT_ERROR
        assert "LiveKit's listing blanks the fields it marks sensitive" in refused.out
        assert f"--accept-blanked-fields {rule_id}" in refused.out
        assert not lk.dispatch_rules[rule_id].room_config.HasField("egress")
        args += ["--accept-blanked-fields", rule_id]

    first = run_hook(capsys, caplog, configs, *args)
    assert first.code == EXIT_OK, first.err
    assert lk.dispatch_rules[rule_id].room_config.egress.room == expected_egress()
    assert stored_unowned(lk, rule_id) == before
    writes = updates(lk)

    second = run_hook(capsys, caplog, configs, *args)
    assert second.code == EXIT_OK, second.err
    assert "LiveKit already holds these settings; nothing changed" in second.out
    assert updates(lk) == writes

    rotate(aws, outputs, "AKIDFAKE0000EXAMPLE2", "FAKEnewSecretAccessKeyNotReal22222222")
    third = run_hook(capsys, caplog, configs, *args)
    assert third.code == EXIT_OK, third.err
    assert f'dispatch rule {rule_id} "callsaver-inbound": updated' in third.out
    s3 = lk.dispatch_rules[rule_id].room_config.egress.room.file_outputs[0].s3
    assert (s3.access_key, s3.secret) == ("AKIDFAKE0000EXAMPLE2", "FAKEnewSecretAccessKeyNotReal22222222")
    assert stored_unowned(lk, rule_id) == before


def test_rich_rule_is_kept_byte_for_byte_or_refused(
    aws: OperatorAws, masked_lk: LocalLiveKitServer, listing: str, tmp_path: Path, capsys: Any, caplog: Any
) -> None:
    """A rule with metadata, attributes, agents' metadata, another auto-egress output with its own credentials and
    an unknown field: pushed and unchanged byte for byte where the listing shows them, refused (nothing written,
    exit non-zero, the masked field named) where it masks or blanks them."""
    lk = masked_lk
    outputs = deploy(aws, tmp_path)
    rule_id = lk.add_dispatch_rule(rich_rule(foreign_credentials=True))
    before = stored_unowned(lk, rule_id)
    result = run_hook(capsys, caplog, config_dir(tmp_path), "--livekit-url", lk.url, "--outputs-file", str(outputs))
    assert stored_unowned(lk, rule_id) == before
    assert b"unknown" in before
    if listing == "unmasked":
        assert result.code == EXIT_OK, result.err
        assert lk.dispatch_rules[rule_id].room_config.egress.room == expected_egress()
        return
    assert result.code == EXIT_ERROR
    assert f'dispatch rule {rule_id} "callsaver-main-line": refused, nothing pushed to it' in result.out
    if listing == "placeholders":
        assert "room_config.egress.tracks.s3: access_key, secret came back masked ({access_key})" in result.out
    assert "1 dispatch rule(s) refused" in result.err
    assert not lk.dispatch_rules[rule_id].room_config.egress.HasField("room")


def test_a_refused_rule_leaves_the_others_pushed(
    aws: OperatorAws, aws_lk_placeholders: LocalLiveKitServer, tmp_path: Path, capsys: Any, caplog: Any
) -> None:
    """Two rules of the environment, one with masked foreign credentials: that one is refused and named, the other
    is pushed and reported, and the exit code is non-zero (LiveKit lists with egress placeholders)."""
    lk = aws_lk_placeholders
    outputs = deploy(aws, tmp_path)
    masked = lk.add_dispatch_rule(rich_rule(foreign_credentials=True))
    plain = lk.add_dispatch_rule(seeded_rule(name="second-line", trunk_ids=["ST_trunkfake07"]))
    result = run_hook(capsys, caplog, config_dir(tmp_path), "--livekit-url", lk.url, "--outputs-file", str(outputs))
    assert result.code == EXIT_ERROR
    assert f'dispatch rule {plain} "second-line": updated' in result.out
    assert f'{masked} "callsaver-main-line": refused' in result.out
    assert f"already updated: {plain}" in result.err
    assert lk.dispatch_rules[plain].room_config.egress.room == expected_egress()


@pytest.fixture
def aws_lk_placeholders(aws: OperatorAws) -> Iterator[LocalLiveKitServer]:
    with LocalLiveKitServer(API_KEY, API_SECRET, s3_endpoint_url=aws.endpoint, listing="placeholders") as server:
        yield server


def test_a_rule_changed_behind_the_hooks_back_is_an_error_naming_the_field() -> None:
    """The read-back check: any field outside room_config.egress.room that differs after the write is named."""
    before = rich_rule(foreign_credentials=False)
    after = api.SIPDispatchRuleInfo()
    after.CopyFrom(before)
    after.metadata = ""
    after.room_config.egress.room.CopyFrom(expected_egress())
    after.updated_at.GetCurrentTime()
    assert egress_hook.changed_fields(before, after) == ["metadata"]
    assert egress_hook.changed_fields(before, before) == []


# --------------------------------------------------------------------------- which rules: the agent decides


def test_no_rule_dispatches_the_agent_prints_the_inventory_and_pushes_nothing(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: Any, caplog: Any
) -> None:
    """No rule dispatches callsaver-agent-local: exit non-zero, nothing written, every rule listed with its agents,
    owner and recording, and what to do."""
    outputs = deploy(aws, tmp_path)
    other = lk.add_dispatch_rule(seeded_rule(name="someone-else", agent="another-agent", egress=old_egress()))
    bare = lk.add_dispatch_rule(seeded_rule(name="no-agent", agent="", trunk_ids=["ST_trunkfake05"]))
    result = run_hook(capsys, caplog, config_dir(tmp_path), "--livekit-url", lk.url, "--outputs-file", str(outputs))
    assert result.code == EXIT_ERROR
    assert f"no SIP dispatch rule of the project at {lk.url} dispatches agent '{AGENT}'" in result.err
    assert "nothing was pushed" in result.err and f"add '{AGENT}' to the rule's agents" in result.err
    assert (
        f'{other} "someone-else": agents another-agent; ST_trunkfake01; belongs to no environment; records to '
        "s3://callsaver-old-console-bucket/calls/{room_name} (us-west-1, key ****PLE1)" in result.err
    )
    assert f'{bare} "no-agent": agents no agent; ST_trunkfake05; belongs to no environment; not recorded' in result.err
    assert updates(lk) == 0


def test_a_rule_dispatching_two_environments_agents_is_refused(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: Any, caplog: Any
) -> None:
    """A rule that dispatches this environment's agent and another environment's (same project): nothing pushed."""
    outputs = deploy(aws, tmp_path)
    configs = config_dir(tmp_path)
    other = tomllib.loads((configs / f"{ENV}.toml").read_text())
    text = (configs / f"{ENV}.toml").read_text()
    (configs / "qa.toml").write_text(
        text.replace(other["livekit"]["worker_name"], "callsaver-agent-qa")
        .replace(BUCKET, "callsaver-sessions-qa")
        .replace(f'qualifier = "{other["bootstrap"]["qualifier"]}"', 'qualifier = "cqa"')
    )
    rule = seeded_rule()
    rule.room_config.agents.append(api.RoomAgentDispatch(agent_name="callsaver-agent-qa"))
    rule_id = lk.add_dispatch_rule(rule)
    result = run_hook(capsys, caplog, configs, "--livekit-url", lk.url, "--outputs-file", str(outputs))
    assert result.code == EXIT_ERROR
    assert f'dispatch rule {rule_id} "callsaver-inbound" dispatches the agents of local and qa' in result.err
    assert updates(lk) == 0


# --------------------------------------------------------------------------- fail closed


def test_local_only_flags_are_refused_for_a_real_environment(capsys: pytest.CaptureFixture[str]) -> None:
    """--livekit-url / --s3-endpoint-url would send signed requests and the egress key to any host: staging and
    production refuse them before reading anything."""
    for command in ("push-egress", "rotate-egress-key"):
        for flag in ("--livekit-url", "--s3-endpoint-url"):
            code = main(["--config-dir", str(CONFIG_DIR), command, "--env", "staging", flag, "http://127.0.0.1:9"])
            err = capsys.readouterr().err
            assert code == EXIT_ERROR, (command, flag)
            assert f"{flag} are for the local rehearsal and tests only (account 123456789012)" in err
            assert "environment staging is account 836347236108" in err


def test_an_egress_secret_other_than_the_deployed_key_is_not_pushed(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: Any, caplog: Any
) -> None:
    """The secret holds a key id the IAM stack did not output (stale, or edited by hand): nothing is pushed."""
    outputs = deploy(aws, tmp_path)
    lk.add_dispatch_rule(seeded_rule())
    data = json.loads(outputs.read_text())
    data[IAM_STACK]["EgressAccessKeyId"] = "AKIDFAKE0000EXAMPLE9"
    outputs.write_text(json.dumps(data))
    result = run_hook(capsys, caplog, config_dir(tmp_path), "--livekit-url", lk.url, "--outputs-file", str(outputs))
    assert result.code == EXIT_ERROR
    assert "egress key check 'matches the deployed key' failed: the egress secret holds key ****PLE1" in result.err
    assert "the deployed output EgressAccessKeyId is ****PLE9" in result.err
    assert "nothing may be pushed to LiveKit" in result.err
    assert lk.methods_called() == []


def test_a_key_that_cannot_upload_is_not_pushed(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: Any, caplog: Any
) -> None:
    """The key is the deployed one, but a PutObject signed with it fails (here: the bucket is gone): nothing is
    pushed and the message names the failed check."""
    outputs = deploy(aws, tmp_path, bucket=False)
    lk.add_dispatch_rule(seeded_rule())
    result = run_hook(capsys, caplog, config_dir(tmp_path), "--livekit-url", lk.url, "--outputs-file", str(outputs))
    assert result.code == EXIT_ERROR
    assert "egress key check 'uploads' failed: PutObject to s3://callsaver-sessions-local/_healthcheck/key-check-" in (
        result.err
    )
    assert "NoSuchBucket" in result.err
    assert lk.methods_called() == []
