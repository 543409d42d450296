"""`callsaver-infra status`: the read-only check of an environment's whole chain, line by line.

LiveKit Cloud and AWS are unreachable from here. LiveKit is the local stand-in `LocalLiveKitServer` on 127.0.0.1,
speaking LiveKit's Twirp protocol to the real livekit-api client; AWS (STS, CloudFormation, Secrets Manager, ECS,
S3) is moto's server on 127.0.0.1, reached through boto3's standard AWS_ENDPOINT_URL. Every run checks that no
secret reaches stdout, stderr or the log.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from livekit import api

from callsaver_infra.app.config import EnvironmentConfig, load_environments
from callsaver_infra.app.secret_catalog import PLACEHOLDER
from callsaver_infra.dev.livekit_local import LocalLiveKitServer
from callsaver_infra.ops.cli import EXIT_ERROR, EXIT_NOT_READY, EXIT_OK, main
from callsaver_infra.ops.push_egress import EgressCredentials, Redactor, credential_fingerprint
from callsaver_infra.ops.status import Check, DeployedKey, egress_checks, rule_checks, trunk_checks
from tests.helpers import CONFIG_DIR, SEED_AGENT_KEYS, SEED_BACKEND_KEYS, OperatorAws
from tests.helpers import hang_up as shared_hang_up

ENV = "local"
REGION = "us-west-1"
ACCOUNT = "123456789012"
BUCKET = "callsaver-sessions-local"
AGENT = "callsaver-agent-local"
LIVEKIT_URL = "wss://callsaver-d8dm5v36.livekit.cloud"  # config/local.toml's livekit.url, written out
API_KEY = "APIfakeStatusKey0001"
API_SECRET = "test-status-livekit-secret-not-real-0123456789"
ACCESS_KEY_ID = "AKIDFAKESTATUS00KEY1"
SECRET_ACCESS_KEY = "FAKEstatusSecretAccessKeyNotReal000000000"
STALE_KEY_ID = "AKIDFAKESTATUSOLDKEY"
STALE_SECRET = "FAKEstaleSecretAccessKeyNotReal11111111111"
STACKS = tuple(f"Callsaver-{kind}-{ENV}" for kind in ("Storage", "IAM", "Secrets", "Agent", "Monitoring"))
# The Monitoring stack's alarms of config/local.toml (which sets max_hours_without_recording), spelled out.
ALARMS = tuple(
    f"callsaver-{ENV}-{kind}" for kind in ("agent-down", "agent-saturated", "uploads-failing", "no-recording")
)
CLUSTER, SERVICE = f"callsaver-{ENV}", f"callsaver-agent-{ENV}"
# One fake value per operator secret: none may ever be printed.
OPERATOR_VALUES = {
    **{f"agent/{key}": f"fake-status-{key.lower()}-not-real-0000" for key in SEED_AGENT_KEYS},
    "backend/LIVEKIT_API_KEY": API_KEY,
    "backend/LIVEKIT_API_SECRET": API_SECRET,
}
NEVER_SHOWN = (
    API_SECRET,
    API_KEY,
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    STALE_KEY_ID,
    STALE_SECRET,
    *OPERATOR_VALUES.values(),
)


@pytest.fixture
def aws(operator_aws: OperatorAws) -> OperatorAws:
    return operator_aws


@pytest.fixture
def lk(aws: OperatorAws) -> Iterator[LocalLiveKitServer]:
    """The local LiveKit stand-in on 127.0.0.1; its egress uploads go to moto."""
    with LocalLiveKitServer(API_KEY, API_SECRET, s3_endpoint_url=aws.endpoint, fault_delay=2.0) as server:
        yield server


def deploy(aws: OperatorAws, *, placeholder: str | None = None) -> None:
    """What a complete `make deploy ENV=local` leaves behind: the four stacks with their outputs, every secret set
    (placeholder= leaves one at the placeholder), the bucket, and the agent service running 1 of 1 tasks."""
    aws.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    credentials = json.dumps({"accessKeyId": ACCESS_KEY_ID, "secretAccessKey": SECRET_ACCESS_KEY})
    egress_arn = aws.secrets.create_secret(Name=f"callsaver/{ENV}/egress/s3-access-key", SecretString=credentials)[
        "ARN"
    ]
    config_values = {"backend/LIVEKIT_URL": LIVEKIT_URL, "backend/SESSION_S3_BUCKET": BUCKET}
    for ref in [f"backend/{k}" for k in SEED_BACKEND_KEYS] + [f"agent/{k}" for k in SEED_AGENT_KEYS]:
        value = PLACEHOLDER if ref == placeholder else config_values.get(ref) or OPERATOR_VALUES[ref]
        aws.secrets.create_secret(Name=f"callsaver/{ENV}/{ref}", SecretString=value)
    outputs = {
        STACKS[0]: {"SessionBucketName": BUCKET, "SessionBucketRegion": REGION},
        STACKS[1]: {"EgressAccessKeyId": ACCESS_KEY_ID, "EgressCredentialsSecretArn": egress_arn},
        STACKS[2]: {},
        STACKS[3]: {"AgentClusterName": CLUSTER, "AgentServiceName": SERVICE},
        STACKS[4]: {},
    }
    for stack, values in outputs.items():
        template = {
            "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {key: {"Value": value} for key, value in values.items()},
        }
        aws.cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    aws.ecs.create_cluster(clusterName=CLUSTER)
    aws.ecs.register_task_definition(
        family=SERVICE, containerDefinitions=[{"name": "agent", "image": "callsaver-agent:latest", "memory": 2048}]
    )
    aws.ecs.create_service(cluster=CLUSTER, serviceName=SERVICE, taskDefinition=SERVICE, desiredCount=1)
    cloudwatch = boto3.client("cloudwatch", region_name=REGION, endpoint_url=aws.endpoint)
    for alarm in ALARMS:
        cloudwatch.put_metric_alarm(
            AlarmName=alarm,
            AlarmDescription=f"check first: callsaver-infra status --env {ENV}",
            MetricName="RunningTaskCount",
            Namespace="ECS/ContainerInsights",
            Statistic="Minimum",
            Period=60,
            EvaluationPeriods=3,
            Threshold=1,
            ComparisonOperator="LessThanThreshold",
        )


def recording(key_id: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY) -> api.RoomEgress:
    """What push-egress writes into a rule (spelled out here, not built by the code under test)."""
    return api.RoomEgress(
        room=api.RoomCompositeEgressRequest(
            audio_only=True,
            file_outputs=[
                api.EncodedFileOutput(
                    file_type=api.EncodedFileType.OGG,
                    filepath="{room_name}/{time}",
                    s3=api.S3Upload(access_key=key_id, secret=secret, region=REGION, bucket=BUCKET),
                )
            ],
        )
    )


def inbound_rule(name: str, agent: str, number: str, egress: api.RoomEgress | None = None) -> api.SIPDispatchRuleInfo:
    rule = api.SIPDispatchRuleInfo(
        name=name,
        numbers=[number],
        rule=api.SIPDispatchRule(dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="call")),
        room_config=api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent)]),
    )
    if egress is not None:
        rule.room_config.egress.CopyFrom(egress)
    return rule


def seed_livekit(lk: LocalLiveKitServer, *, egress: api.RoomEgress | None = None) -> str:
    """local's recording rule (and production's, which status must attribute to production), one recorded call."""
    rule_id = lk.add_dispatch_rule(inbound_rule("local inbound", AGENT, "+15550100002", egress or recording()))
    lk.add_dispatch_rule(inbound_rule("production inbound", "callsaver-agent", "+15550100003"))
    lk.add_inbound_trunk(api.SIPInboundTrunkInfo(name="twilio", numbers=["+15550100002", "+15550100003"]))
    room, egress_id = lk.simulate_inbound_call(rule_id)
    assert egress_id is not None
    hang_up(lk, room, egress_id)
    assert api.EgressStatus.Name(lk.wait_for_egress(egress_id).status) == "EGRESS_COMPLETE"
    return rule_id


def hang_up(lk: LocalLiveKitServer, room: str, egress_id: str) -> None:
    shared_hang_up(lk, room, egress_id, API_KEY, API_SECRET)


def rule_named(lk: LocalLiveKitServer, name: str) -> str:
    """The report's name of the seeded rule called name: `SDR_... "name"`."""
    with lk.lock:
        (rule_id,) = [r for r, info in lk.dispatch_rules.items() if info.name == name]
    return f'{rule_id} "{name}"'


@dataclass
class Run:
    code: int
    out: str
    err: str

    def line(self, name: str) -> str:
        """The one report line naming `name`."""
        # Report lines are "  ok    <name padded>  <detail>" / "  FAIL  <name padded>  <detail>".
        found = [line for line in self.out.splitlines() if line.startswith("  ") and line[8:].startswith(name + " ")]
        assert len(found) == 1, (name, self.out)
        return found[0]

    def failing(self) -> list[str]:
        return [line for line in self.out.splitlines() if line.startswith("  FAIL")]


def run_status(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, *args: str, env: str = ENV) -> Run:
    """`callsaver-infra status --env local ...` in-process; fails if a secret shows up anywhere."""
    caplog.set_level(logging.INFO)
    capsys.readouterr()
    code = main(["--config-dir", str(CONFIG_DIR), "status", "--env", env, *args])
    captured = capsys.readouterr()
    for text in (captured.out, captured.err, caplog.text):
        for secret in NEVER_SHOWN:
            assert secret not in text
    return Run(code, captured.out, captured.err)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_aws_lines_ok(run: Run) -> None:
    for name in (*STACKS, "agent/OPENAI_API_KEY", "egress/s3-access-key", "tasks", "deployment", "newest"):
        assert run.line(name).startswith("  ok  "), run.out


# --------------------------------------------------------------------------- tests


def test_all_ok(aws: OperatorAws, lk: LocalLiveKitServer, capsys: pytest.CaptureFixture[str], caplog: Any) -> None:
    """A complete deploy, a recording rule and one recorded call: every line ok, exit 0.

    LiveKit is the local stand-in on 127.0.0.1 (Twirp, real livekit-api client); AWS is moto on 127.0.0.1.
    """
    deploy(aws)
    rule_id = seed_livekit(lk)

    run = run_status(capsys, caplog, "--livekit-url", lk.url)

    assert run.out.startswith(f"Status of local (account {ACCOUNT}, {REGION}; LiveKit {lk.url}):\n")
    assert_aws_lines_ok(run)
    assert "CREATE_COMPLETE" in run.line(STACKS[3])
    assert "1 running of 1 desired" in run.line("tasks")
    assert "last deployment COMPLETED" in run.line("deployment")
    own = run.line(f'{rule_id} "local inbound"')
    assert own.startswith("  ok  ")
    assert f"environment local; records to s3://{BUCKET}/{{room_name}}/{{time}} ({REGION}, key ****KEY1)" in own
    other = run.line(rule_named(lk, "production inbound"))
    assert other.startswith("  ok  ") and "environment production; not recorded automatically" in other
    egress_line = [line for line in run.out.splitlines() if "EGRESS_COMPLETE" in line]
    assert len(egress_line) == 1 and egress_line[0].startswith("  ok  ")
    newest = run.line("newest")
    assert f"s3://{BUCKET}/call_" in newest and ".ogg, " in newest and newest.endswith(" s old")
    trunk = run.line(next(iter(lk.inbound_trunks)) + ' "twilio"')
    assert trunk.startswith("  ok  ") and "+15550100002, +15550100003; calls reach local, production" in trunk
    for alarm in ALARMS:
        assert run.line(alarm).startswith("  ok  "), run.out
    assert run.code == EXIT_OK, run.out
    assert run.failing() == []
    assert run.out.rstrip().endswith("checks ok")


def test_an_alarm_in_alarm_fails_with_its_reason_and_what_to_check(
    aws: OperatorAws, lk: LocalLiveKitServer, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """An alarm in ALARM fails its line with CloudWatch's reason and the alarm's description (what to check first);
    a missing alarm says to deploy. AWS (CloudWatch) is moto on 127.0.0.1; LiveKit the local stand-in."""
    deploy(aws)
    seed_livekit(lk)
    cloudwatch = boto3.client("cloudwatch", region_name=REGION, endpoint_url=aws.endpoint)
    cloudwatch.set_alarm_state(AlarmName=ALARMS[0], StateValue="ALARM", StateReason="0 running tasks for 3 minutes")
    cloudwatch.delete_alarms(AlarmNames=[ALARMS[2]])
    run = run_status(capsys, caplog, "--livekit-url", lk.url)
    assert run.code == 1
    down = run.line(ALARMS[0])
    assert down.startswith("  FAIL") and "ALARM since" in down and "0 running tasks for 3 minutes" in down
    assert f"check first: callsaver-infra status --env {ENV}" in run.out
    assert run.line(ALARMS[2]).startswith("  FAIL") and "does not exist" in run.line(ALARMS[2])
    assert run.line(ALARMS[1]).startswith("  ok  ")


def test_placeholder_secret_fails_its_line_with_the_command(
    aws: OperatorAws, lk: LocalLiveKitServer, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """A secret still holding the placeholder: its line fails and names the exact command; exit 1.

    LiveKit is the local stand-in on 127.0.0.1; AWS is moto on 127.0.0.1.
    """
    deploy(aws, placeholder="agent/OPENAI_API_KEY")
    seed_livekit(lk)

    run = run_status(capsys, caplog, "--livekit-url", lk.url)

    assert run.code == EXIT_NOT_READY
    line = run.line("agent/OPENAI_API_KEY")
    assert line.startswith("  FAIL  ")
    assert line.endswith("still the placeholder -> run: callsaver-infra secrets set --env local agent/OPENAI_API_KEY")
    assert run.line("agent/DEEPGRAM_API_KEY").startswith("  ok  ")
    assert PLACEHOLDER not in run.out


def test_rule_with_a_stale_key_id_fails_naming_the_rule(
    aws: OperatorAws, lk: LocalLiveKitServer, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """local's rule still holds the key id before a rotation: status exits 1 and the failing line names the rule.

    LiveKit is the local stand-in on 127.0.0.1; AWS is moto on 127.0.0.1.
    """
    deploy(aws)
    rule_id = seed_livekit(lk, egress=recording(STALE_KEY_ID, STALE_SECRET))

    run = run_status(capsys, caplog, "--livekit-url", lk.url)

    assert run.code == EXIT_NOT_READY
    line = run.line(f'{rule_id} "local inbound"')
    assert line.startswith("  FAIL  ")
    assert "stale key id ****DKEY" in line and "is ****KEY1" in line
    assert line.endswith("-> run: callsaver-infra push-egress --env local")
    assert run.line(rule_named(lk, "production inbound")).startswith("  ok  ")


def test_masked_key_id_is_unknown_not_stale(
    aws: OperatorAws, lk: LocalLiveKitServer, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """A key id LiveKit masks in the listing ({access_key}, livekit/protocol egress/redact.go) or blanks
    (utils/proto.go) cannot be compared, even when the rule holds an old key: the line says so and does not fail.

    LiveKit is the local stand-in on 127.0.0.1; AWS is moto on 127.0.0.1.
    """
    deploy(aws)
    rule_id = seed_livekit(lk, egress=recording(STALE_KEY_ID, STALE_SECRET))
    for listing, shown in (("placeholders", "key masked in listing"), ("redacted", "key blank in listing")):
        lk.listing = listing

        run = run_status(capsys, caplog, "--livekit-url", lk.url)

        line = run.line(f'{rule_id} "local inbound"')
        assert line.startswith("  ok  ") and shown in line and "stale" not in line, run.out
        assert "the key it holds is unknown: no push receipt to judge by" in line


def test_push_receipt_dates_a_masked_key(
    aws: OperatorAws, lk: LocalLiveKitServer, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """Where the listing masks the key id, push-egress's receipt (SSM, rule id -> fingerprint of the pair last
    pushed) decides: the deployed pair's fingerprint is ok, another pair's is a stale key naming the rule.

    LiveKit is the local stand-in on 127.0.0.1 (listing with LiveKit's {access_key} placeholders); AWS is moto.
    """
    deploy(aws)
    rule_id = seed_livekit(lk)
    lk.listing = "placeholders"
    ssm = boto3.client("ssm", region_name=REGION, endpoint_url=aws.endpoint)
    deployed = credential_fingerprint(EgressCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    stale = credential_fingerprint(EgressCredentials(STALE_KEY_ID, STALE_SECRET))
    for pushed, ok in ((deployed, True), (stale, False)):
        ssm.put_parameter(
            Name=f"/callsaver/{ENV}/livekit/egress-push-receipt",
            Value=json.dumps({rule_id: pushed}),
            Type="String",
            Overwrite=True,
        )

        run = run_status(capsys, caplog, "--livekit-url", lk.url)

        line = run.line(f'{rule_id} "local inbound"')
        if ok:
            assert run.code == EXIT_OK, run.out
            assert line.startswith("  ok  ") and "the push receipt shows the deployed key was pushed last" in line
        else:
            assert run.code == EXIT_NOT_READY
            assert line.startswith("  FAIL  ") and "stale key: the push receipt shows another key pair" in line
            assert line.endswith("-> run: callsaver-infra push-egress --env local")


def test_livekit_unreachable_fails_its_lines_with_the_url_and_aws_lines_still_print(
    aws: OperatorAws, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """Nothing listens at the LiveKit URL: the LiveKit lines fail naming the URL tried, every AWS line still prints.

    The URL is a closed port on 127.0.0.1 (no LiveKit server); AWS is moto on 127.0.0.1.
    """
    deploy(aws)
    aws.s3.put_object(Bucket=BUCKET, Key="call_+15550100001_x/20261124T000000.ogg", Body=b"OggS")
    url = closed_port_url()

    run = run_status(capsys, caplog, "--livekit-url", url)

    assert run.code == EXIT_NOT_READY
    assert_aws_lines_ok(run)
    rules = [line for line in run.failing() if "is unreachable" in line]
    assert len(rules) == 1 and f"LiveKit at {url}" in rules[0], run.out
    assert "(ListSIPDispatchRule, 3 attempt(s) with backoff)" in rules[0]
    assert {line.split()[1] for line in run.failing()} == {"list"}, run.out


def test_json_shape(aws: OperatorAws, lk: LocalLiveKitServer, capsys: pytest.CaptureFixture[str], caplog: Any) -> None:
    """--json prints one document: environment, account, region, LiveKit URL, overall ok, and every check.

    LiveKit is the local stand-in on 127.0.0.1; AWS is moto on 127.0.0.1.
    """
    deploy(aws, placeholder="agent/GOOGLE_API_KEY")
    seed_livekit(lk)

    run = run_status(capsys, caplog, "--livekit-url", lk.url, "--json")

    doc = json.loads(run.out)
    assert run.code == EXIT_NOT_READY
    assert set(doc) == {"environment", "account", "region", "livekit_url", "ok", "checks"}
    assert (doc["environment"], doc["account"], doc["region"], doc["livekit_url"]) == (ENV, ACCOUNT, REGION, lk.url)
    assert doc["ok"] is False
    for check in doc["checks"]:
        assert set(check) == {"group", "name", "ok", "detail", "fix"}
        assert isinstance(check["ok"], bool) and check["detail"]
    groups = {c["group"] for c in doc["checks"]}
    assert {"aws", "stacks", "secrets", "agent", "dispatch rules", "trunks", "egresses", "recordings"} <= groups
    google = [c for c in doc["checks"] if c["name"] == "agent/GOOGLE_API_KEY"]
    assert google == [
        {
            "group": "secrets",
            "name": "agent/GOOGLE_API_KEY",
            "ok": False,
            "detail": "still the placeholder",
            "fix": "callsaver-infra secrets set --env local agent/GOOGLE_API_KEY",
        }
    ]
    assert [c["name"] for c in doc["checks"] if c["group"] == "stacks"] == list(STACKS)


def test_nothing_deployed_says_deploy(capsys: pytest.CaptureFixture[str], caplog: Any, aws: OperatorAws) -> None:
    """An empty account: each stack line fails with `make deploy ENV=local` (after adopt-retained if it was
    destroyed); LiveKit is not contacted without its
    key (the LiveKit URL is a closed port on 127.0.0.1; AWS is moto on 127.0.0.1)."""
    run = run_status(capsys, caplog, "--livekit-url", closed_port_url())

    assert run.code == EXIT_NOT_READY
    for stack in STACKS:
        assert run.line(stack).endswith(
            "not deployed -> run: callsaver-infra adopt-retained --env local (only after a destroy), then "
            "make deploy ENV=local"
        )
    assert "secrets set --env local backend/LIVEKIT_API_KEY" in run.line("API key")
    assert run.line("agent/OPENAI_API_KEY").endswith("does not exist -> run: make deploy ENV=local")
    egress_secret = run.line("egress/s3-access-key")
    assert (
        egress_secret.startswith("  FAIL  ") and "does not exist: deploy it with make deploy ENV=local" in egress_secret
    )
    assert run.line("service").endswith("does not exist -> run: make deploy ENV=local")
    assert run.line("newest").endswith(f"bucket {BUCKET} does not exist -> run: make deploy ENV=local")
    assert "is unreachable" not in run.out


def test_local_overrides_are_refused_for_a_real_account(capsys: pytest.CaptureFixture[str], caplog: Any) -> None:
    """--livekit-url / --s3-endpoint-url point a real environment's check at a stand-in: refused before any call."""
    for flag, value in (("--livekit-url", "http://127.0.0.1:9"), ("--s3-endpoint-url", "http://127.0.0.1:9")):
        run = run_status(capsys, caplog, flag, value, env="staging")
        assert run.code == EXIT_ERROR
        assert run.out == ""
        assert f"{flag} are for the local rehearsal and tests only" in run.err
        assert "account 836347236108" in run.err and "123456789012" in run.err


def test_agent_not_running_and_a_failed_egress_fail_their_lines(
    aws: OperatorAws,
    lk: LocalLiveKitServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: Any,
) -> None:
    """0 of 1 tasks running (deployment IN_PROGRESS), and the newest egress FAILED with an error that quotes
    credentials: those lines fail with what to run, and the error is shown with every secret hidden.

    LiveKit is the local stand-in on 127.0.0.1; AWS is moto on 127.0.0.1.
    """
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "0")
    deploy(aws)
    rule_id = seed_livekit(lk)
    with lk.lock:
        (done,) = lk.egresses.values()
        failed = api.EgressInfo()
        failed.CopyFrom(done)
        failed.egress_id = "EG_fakeFailed0001"
        failed.started_at = done.started_at + 1_000_000_000
        failed.status = api.EgressStatus.EGRESS_FAILED
        failed.ClearField("file_results")
        failed.error = f"AccessDenied: key {ACCESS_KEY_ID} secret {SECRET_ACCESS_KEY} signed by {API_SECRET}"
        lk.egresses[failed.egress_id] = failed
        # Another failure just before it (still a problem), and one before the completed egress (history).
        for egress_id, offset in (("EG_fakeFailed0002", 500_000_000), ("EG_fakeFailed0003", -1_000_000_000)):
            other = api.EgressInfo()
            other.CopyFrom(failed)
            other.egress_id, other.started_at, other.error = egress_id, done.started_at + offset, "NoSuchBucket"
            lk.egresses[egress_id] = other

    run = run_status(capsys, caplog, "--livekit-url", lk.url)

    assert run.code == EXIT_NOT_READY
    assert run.line("tasks").startswith("  FAIL  ") and "0 running of 1 desired" in run.line("tasks")
    assert "aws logs tail /callsaver/local/agent" in run.line("tasks")
    deployment = run.line("deployment")
    assert deployment.startswith("  FAIL  ") and "last deployment IN_PROGRESS" in deployment
    line = run.line("EG_fakeFailed0001")
    assert line.startswith("  FAIL  ")
    assert "EGRESS_FAILED: AccessDenied: key ****KEY1 secret <hidden> signed by <hidden>" in line
    assert line.endswith("-> run: callsaver-infra push-egress --env local --verify")
    assert run.line("EG_fakeFailed0002").startswith("  FAIL  ")
    # Newest first: the completed egress after the newer failures, then the failure it made history.
    assert run.line(done.egress_id).startswith("  ok  ")
    assert run.line("EG_fakeFailed0003").startswith("  ok  ")
    assert run.line("EG_fakeFailed0003").endswith("; a later egress completed")
    order = [run.out.index(e) for e in ("EG_fakeFailed0001", "EG_fakeFailed0002", done.egress_id, "EG_fakeFailed0003")]
    assert order == sorted(order)
    assert run.line(f'{rule_id} "local inbound"').startswith("  ok  ")


def test_outputs_file_is_used_for_outputs(
    aws: OperatorAws, lk: LocalLiveKitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    """--outputs-file supplies the outputs (as for push-egress): a rule holding the key id the file names is not
    stale, even when CloudFormation's output says otherwise; a missing file fails the outputs line.

    LiveKit is the local stand-in on 127.0.0.1; AWS is moto on 127.0.0.1.
    """
    deploy(aws)
    rule_id = seed_livekit(lk, egress=recording(STALE_KEY_ID, STALE_SECRET))
    outputs = tmp_path / "cdk.outputs.local.json"
    outputs.write_text(
        json.dumps({STACKS[0]: {"SessionBucketName": BUCKET}, STACKS[1]: {"EgressAccessKeyId": STALE_KEY_ID}})
    )

    run = run_status(capsys, caplog, "--livekit-url", lk.url, "--outputs-file", str(outputs))
    assert (
        run.line("outputs") == f"  ok    {'outputs':<{len(rule_named(lk, 'production inbound'))}}  read from {outputs}"
    )
    assert run.line(f'{rule_id} "local inbound"').startswith("  ok  ")
    # The egress secret holds the CloudFormation key, which the outputs file no longer names.
    assert run.line("egress/s3-access-key").startswith("  FAIL  ")

    missing = run_status(capsys, caplog, "--livekit-url", lk.url, "--outputs-file", str(tmp_path / "nope.json"))
    assert missing.line("outputs").startswith("  FAIL  ") and "nope.json cannot be read" in missing.line("outputs")
    assert missing.line(STACKS[0]).startswith("  ok  ")


# --------------------------------------------------------------------------- rule and trunk attribution (no servers)


def _project() -> tuple[EnvironmentConfig, ...]:
    return tuple(load_environments(CONFIG_DIR).values())


def test_rule_dispatching_two_environments_fails_and_no_rule_says_which_agent() -> None:
    """A rule whose agents are local's and production's fails local's selection naming both; an environment with no
    rule for its agent is told which agent to add."""
    envs = _project()
    local = next(e for e in envs if e.name == ENV)
    shared = inbound_rule("shared", AGENT, "+15550100002", recording())
    shared.sip_dispatch_rule_id = "SDR_shared1"
    shared.room_config.agents.append(api.RoomAgentDispatch(agent_name="callsaver-agent"))

    checks = rule_checks(local, envs, [shared], bucket=BUCKET, deployed=DeployedKey(ACCESS_KEY_ID))
    (line,) = [c for c in checks if c.name == 'SDR_shared1 "shared"']
    assert line.ok and line.detail.startswith("environments local, production; records to")
    (selection,) = [c for c in checks if c.name == "selection"]
    assert not selection.ok and "dispatches the agents of local and production" in selection.detail

    staging = next(e for e in envs if e.name == "staging")
    (none,) = rule_checks(staging, envs, [shared], bucket="callsaver-sessions-staging", deployed=DeployedKey())[1:]
    assert not none.ok and "no dispatch rule dispatches agent 'callsaver-agent-staging'" in none.detail
    assert none.fix.endswith("then callsaver-infra push-egress --env staging")


def test_own_rule_recording_elsewhere_or_not_at_all_fails() -> None:
    """local's rule recording into another bucket, through a custom endpoint, or not at all: each named."""
    envs = _project()
    local = next(e for e in envs if e.name == ENV)
    elsewhere = recording()
    elsewhere.room.file_outputs[0].s3.bucket = "callsaver-old-console-bucket"
    elsewhere.room.file_outputs[0].s3.endpoint = "http://127.0.0.1:9"
    rule = inbound_rule("local inbound", AGENT, "+15550100002", elsewhere)
    rule.sip_dispatch_rule_id = "SDR_local1"
    unrecorded = inbound_rule("local second", AGENT, "+15550100004")
    unrecorded.sip_dispatch_rule_id = "SDR_local2"

    checks = {c.name: c for c in rule_checks(local, envs, [rule, unrecorded], bucket=BUCKET, deployed=DeployedKey())}
    first = checks['SDR_local1 "local inbound"']
    assert not first.ok
    assert f"records to bucket callsaver-old-console-bucket, not local's {BUCKET}" in first.detail
    assert "uploads through endpoint http://127.0.0.1:9, expected AWS" in first.detail
    second = checks['SDR_local2 "local second"']
    assert not second.ok and second.detail.endswith(": not recorded")
    # production's rule recording into local's bucket: local's recordings would mix with production's calls.
    leak = inbound_rule("production inbound", "callsaver-agent", "+15550100003", recording())
    leak.sip_dispatch_rule_id = "SDR_prod1"
    (prod,) = [
        c for c in rule_checks(local, envs, [leak], bucket=BUCKET, deployed=DeployedKey()) if c.name != "selection"
    ]
    assert not prod.ok and prod.name == 'SDR_prod1 "production inbound"'
    assert f"records into local's bucket {BUCKET} but does not dispatch local's agent" in prod.detail
    assert prod.fix == "callsaver-infra push-egress --env production"
    # The same custom endpoint is what --s3-endpoint-url (local rehearsal) expects.
    rehearsal = rule_checks(
        local, envs, [rule], bucket=BUCKET, deployed=DeployedKey(), s3_endpoint_url="http://127.0.0.1:9"
    )
    assert "endpoint" not in rehearsal[0].detail


def test_trunks_show_where_their_calls_go_and_a_missing_inbound_path_fails() -> None:
    """Each trunk lists its numbers and the environments its calls reach; local's rule accepting only a trunk that
    does not exist fails the inbound path."""
    envs = _project()
    local = next(e for e in envs if e.name == ENV)
    prod = inbound_rule("production inbound", "callsaver-agent", "+15550100003")
    prod.sip_dispatch_rule_id = "SDR_prod1"
    mine = inbound_rule("local inbound", AGENT, "+15550100002", recording())
    mine.sip_dispatch_rule_id = "SDR_local1"
    trunk = api.SIPInboundTrunkInfo(sip_trunk_id="ST_twilio1", name="twilio", numbers=["+15550100003"])

    checks = trunk_checks(local, envs, [prod, mine], [trunk])
    assert checks == [
        Check(
            "trunks",
            'ST_twilio1 "twilio"',
            True,
            "+15550100003; calls reach local, production (rules: SDR_prod1, SDR_local1)",
        )
    ]
    mine.trunk_ids.append("ST_gone")
    checks = trunk_checks(local, envs, [prod, mine], [trunk])
    assert checks[0].detail == "+15550100003; calls reach production (rules: SDR_prod1)"
    assert not checks[1].ok and checks[1].name == "inbound path" and "SDR_local1" in checks[1].detail


def test_egresses_into_the_bucket_by_either_request_kind_are_listed_newest_first() -> None:
    """Room-composite egresses (inbound rules), StartEgress requests (which the agent may use for outbound calls) and
    web egresses (push-egress --verify; the page URL is never shown) into the environment's bucket are listed,
    newest first; egresses into other buckets are not."""
    local = next(e for e in _project() if e.name == ENV)
    inbound = api.EgressInfo(
        egress_id="EG_inbound",
        room_name="call_a",
        status=api.EgressStatus.EGRESS_COMPLETE,
        started_at=1_000_000_000,
        room_composite=recording().room,
    )
    outbound = api.EgressInfo(
        egress_id="EG_outbound",
        room_name="call_b",
        status=api.EgressStatus.EGRESS_ACTIVE,
        started_at=2_000_000_000,
        egress=api.StartEgressRequest(
            room_name="call_b", storage=api.StorageConfig(s3=api.S3Upload(bucket=BUCKET, region=REGION))
        ),
    )
    web = api.EgressInfo(
        egress_id="EG_web",
        status=api.EgressStatus.EGRESS_COMPLETE,
        started_at=500_000_000,
        web=api.WebEgressRequest(
            url="https://example.com/?token=not-shown", file_outputs=recording().room.file_outputs
        ),
    )
    other = api.EgressInfo(egress_id="EG_other", status=api.EgressStatus.EGRESS_FAILED, started_at=3_000_000_000)
    other.room_composite.CopyFrom(recording().room)
    other.room_composite.file_outputs[0].s3.bucket = "callsaver-sessions-production"

    checks = egress_checks(local, [web, inbound, other, outbound], BUCKET, Redactor())
    assert [(c.name, c.ok) for c in checks] == [("EG_outbound", True), ("EG_inbound", True), ("EG_web", True)]
    assert checks[0].detail.startswith("EGRESS_ACTIVE (room call_b, started 1970-01-01 00:00:02Z")
    assert checks[2].detail == "EGRESS_COMPLETE (web egress, started 1970-01-01 00:00:00Z)"
