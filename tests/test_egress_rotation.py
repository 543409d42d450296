"""`callsaver-infra rotate-egress-key` end to end: the real synthesized Storage and IAM templates of `local` are
deployed and updated (serial 1 -> 2) by CloudFormation on moto's server on 127.0.0.1 with the project's extension
(real AWS is unreachable here), and LiveKit is the local stand-in speaking LiveKit's Twirp protocol on 127.0.0.1
(LiveKit Cloud is unreachable here)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from livekit.protocol import sip as proto_sip

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EnvNames, IamOutputs
from callsaver_infra.dev.livekit_local import LocalLiveKitServer
from callsaver_infra.dev.rehearsal import moto_ext  # noqa: F401  # registers the extension before the server starts
from callsaver_infra.ops.rotate_egress_key import (
    EXIT_DONE,
    EXIT_REFUSED,
    EXIT_WAITING,
    Rotation,
    RotationOptions,
    upload_key_ids,
)
from tests.helpers import Synthesized, synthesize

LIVEKIT_KEY, LIVEKIT_SECRET = "APIrotationtest", "fake-livekit-secret-for-rotation-tests-0000"


def _with_serial(config: EnvironmentConfig, serial: int) -> EnvironmentConfig:
    return EnvironmentConfig.model_validate({**config.model_dump(), "egress_writer": {"access_key_serial": serial}})


@pytest.fixture(scope="module")
def templates(
    synthesized: Synthesized, environments: dict[str, EnvironmentConfig], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The local environment's Storage template and its IAM template at serials 1 and 2, as synthesized (serial 1
    from the run's synth of every environment, which the tests only read)."""
    local = environments["local"]
    assert local.egress_writer.access_key_serial == 1
    names = EnvNames("local")
    two = synthesize([_with_serial(local, 2)], tmp_path_factory.mktemp("serial2"))
    return {
        "storage": synthesized.template_json(names.storage_stack),
        "iam1": synthesized.template_json(names.iam_stack),
        "iam2": two.template_json(names.iam_stack),
    }


@pytest.fixture
def world(
    moto_endpoint: str,
    templates: dict[str, Any],
    environments: dict[str, EnvironmentConfig],
) -> Iterator[dict[str, Any]]:
    """Storage and IAM stacks at serial 1, the LiveKit key pair in Secrets Manager, a LiveKit with config's rule."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    config = environments["local"]
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

    def aws(service: str) -> Any:
        return boto3.client(service, region_name=config.region, endpoint_url=moto_endpoint, **creds)

    # What `cdk bootstrap` leaves behind and the templates' BootstrapVersion parameter reads.
    aws("ssm").put_parameter(Name=f"/cdk-bootstrap/{config.bootstrap.qualifier}/version", Value="30", Type="String")
    names = EnvNames("local")
    for stack, template in ((names.storage_stack, templates["storage"]), (names.iam_stack, templates["iam1"])):
        aws("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
    for ref, value in (("backend/LIVEKIT_API_KEY", LIVEKIT_KEY), ("backend/LIVEKIT_API_SECRET", LIVEKIT_SECRET)):
        aws("secretsmanager").create_secret(Name=names.secret(ref), SecretString=value)
    lk = LocalLiveKitServer(LIVEKIT_KEY, LIVEKIT_SECRET, s3_endpoint_url=moto_endpoint).start()
    lk.add_inbound_trunk(proto_sip.SIPInboundTrunkInfo(name="trunk", numbers=["+15550100002"]))
    rule_id = "SDR_inbound"
    lk.add_dispatch_rule(_rule("inbound", agent=config.livekit.worker_name), rule_id=rule_id)
    try:
        yield {"aws": aws, "lk": lk, "rule": rule_id, "endpoint": moto_endpoint, "config": config}
    finally:
        lk.stop()


async def _clear_egress(url: str, rule_id: str, rule: proto_sip.SIPDispatchRuleInfo) -> None:
    """What an operator does in the dashboard: the rule no longer records (UpdateSIPDispatchRule, replace)."""
    from livekit import api

    rule.room_config.ClearField("egress")
    rule.sip_dispatch_rule_id = rule_id
    lk = api.LiveKitAPI(url, LIVEKIT_KEY, LIVEKIT_SECRET)
    try:
        await lk.sip.update_dispatch_rule(rule_id, rule)
    finally:
        await lk.aclose()


def _rule(name: str, agent: str | None = None) -> proto_sip.SIPDispatchRuleInfo:
    from livekit.protocol import agent_dispatch as proto_dispatch

    rule = proto_sip.SIPDispatchRuleInfo(
        name=name,
        rule=proto_sip.SIPDispatchRule(
            dispatch_rule_individual=proto_sip.SIPDispatchRuleIndividual(room_prefix="call")
        ),
    )
    if agent:  # the environment's rules are the ones dispatching its agent
        rule.room_config.agents.append(proto_dispatch.RoomAgentDispatch(agent_name=agent))
    return rule


def _rotate(world: dict[str, Any], serial: int, *, dry_run: bool = False) -> tuple[int, str]:
    lines: list[str] = []
    # The push's --verify records 0.2 s, not 3 s, and polls every 0.02 s, not 0.25 s: the local LiveKit's egress is
    # active within 0.05 s and uploads to moto in tens of milliseconds.
    options = RotationOptions(
        dry_run=dry_run,
        livekit_url=world["lk"].url,
        s3_endpoint_url=world["endpoint"],
        verify_seconds=0.2,
        verify_poll_seconds=0.02,
    )
    code = Rotation(_with_serial(world["config"], serial), options, world["aws"], lines.append).run()
    return code, "\n".join(lines)


def _deploy_serial_2(world: dict[str, Any], templates: dict[str, Any]) -> None:
    world["aws"]("cloudformation").update_stack(
        StackName=EnvNames("local").iam_stack,
        TemplateBody=json.dumps(templates["iam2"]),
        Parameters=[{"ParameterKey": "BootstrapVersion", "UsePreviousValue": True}],
    )


def _held_key(world: dict[str, Any]) -> str:
    with world["lk"].lock:
        keys = upload_key_ids(world["lk"].dispatch_rules[world["rule"]])
    assert len(keys) == 1
    return keys.pop()


def _iam_keys(world: dict[str, Any]) -> dict[str, str]:
    listed = world["aws"]("iam").list_access_keys(UserName=EnvNames("local").egress_user)["AccessKeyMetadata"]
    return {k["AccessKeyId"]: k["Status"] for k in listed}


def _call_is_recorded(world: dict[str, Any]) -> bool:
    from callsaver_infra.dev.rehearsal.lifecycle import call_and_hang_up

    info = call_and_hang_up(world["lk"], world["rule"], LIVEKIT_KEY, LIVEKIT_SECRET)
    return bool(info is not None and info.status == 3)  # EGRESS_COMPLETE


def test_rotation_keeps_the_old_key_until_livekit_holds_the_new_one(
    world: dict[str, Any], templates: dict[str, Any]
) -> None:
    # First run on a fresh deploy: pushes the key, nothing to retire.
    code, out = _rotate(world, 1)
    assert code == EXIT_DONE, out
    first = _held_key(world)
    assert _iam_keys(world) == {first: "Active"} and _call_is_recorded(world)

    # Serial bumped in config but not deployed yet: the command waits, nothing changes.
    code, out = _rotate(world, 2)
    assert code == EXIT_WAITING and "holds key serial 1" in out and "make deploy ENV=local" in out, out

    # The deploy creates the new key and keeps the old one; LiveKit still holds the old one, which still works.
    _deploy_serial_2(world, templates)
    keys = _iam_keys(world)
    assert len(keys) == 2 and keys[first] == "Active" and _held_key(world) == first
    assert _call_is_recorded(world)

    code, out = _rotate(world, 2, dry_run=True)
    assert code == EXIT_DONE and "would push key" in out and "would delete" in out, out
    assert _held_key(world) == first and len(_iam_keys(world)) == 2  # a dry run changes nothing

    code, out = _rotate(world, 2)
    assert code == EXIT_DONE, out
    second = _held_key(world)
    outputs = world["aws"]("cloudformation").describe_stacks(StackName=EnvNames("local").iam_stack)["Stacks"][0]
    deployed = {o["OutputKey"]: o["OutputValue"] for o in outputs["Outputs"]}[IamOutputs.ACCESS_KEY_ID]
    assert second == deployed != first
    assert _iam_keys(world) == {second: "Active"}
    assert _call_is_recorded(world)
    assert f"deleted ****{first[-4:]}" in out

    # Re-running a finished rotation changes nothing and says so.
    code, out = _rotate(world, 2)
    assert code == EXIT_DONE and "has only key" in out and "every dispatch rule holds key" in out, out


def test_retiring_is_refused_while_another_dispatch_rule_uses_the_old_key(
    world: dict[str, Any], templates: dict[str, Any]
) -> None:
    assert _rotate(world, 1)[0] == EXIT_DONE
    first = _held_key(world)
    # A rule outside config's dispatch_rule_ids, set up by hand with the same egress settings.
    stray = proto_sip.SIPDispatchRuleInfo()
    with world["lk"].lock:
        stray.CopyFrom(world["lk"].dispatch_rules[world["rule"]])
    stray.name = "added by hand"
    stray.room_config.ClearField("agents")  # not one of the environment's rules: push-egress leaves it alone
    stray.inbound_numbers.append("+15550100999")  # LiveKit refuses two rules for the same numbers
    stray_id = world["lk"].add_dispatch_rule(stray, rule_id="SDR_byhand")
    _deploy_serial_2(world, templates)

    code, out = _rotate(world, 2)
    assert code == EXIT_REFUSED, out
    assert f"dispatch rule {stray_id} uploads with ****{first[-4:]}" in out
    assert _iam_keys(world)[first] == "Active"  # not deleted
    assert _held_key(world) != first  # config's rule was moved to the new key

    asyncio.run(_clear_egress(world["lk"].url, stray_id, stray))  # the operator stops the stray rule recording

    code, out = _rotate(world, 2)
    assert code == EXIT_DONE, out
    assert first not in _iam_keys(world)


def test_upload_key_ids_finds_keys_in_every_output_kind() -> None:
    from livekit.protocol import egress as proto_egress

    rule = proto_sip.SIPDispatchRuleInfo()
    room = rule.room_config.egress.room
    room.file_outputs.add().s3.access_key = "AKIAFILE"
    room.segment_outputs.add().s3.access_key = "AKIASEGMENT"
    rule.room_config.egress.tracks.s3.access_key = "AKIATRACKS"
    rule.room_config.egress.participant.file_outputs.add().s3.access_key = "AKIAPARTICIPANT"
    assert isinstance(room, proto_egress.RoomCompositeEgressRequest)
    assert upload_key_ids(rule) == {"AKIAFILE", "AKIASEGMENT", "AKIATRACKS", "AKIAPARTICIPANT"}


def test_cli_wires_the_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from callsaver_infra.ops.cli import build_parser

    args = build_parser().parse_args(["rotate-egress-key", "--env", "staging", "--dry-run"])
    assert (args.command, args.env, args.dry_run) == ("rotate-egress-key", "staging", True)


def test_retiring_is_refused_while_agent_tasks_started_with_the_old_injected_secret(
    moto_endpoint: str, environments: dict[str, EnvironmentConfig]
) -> None:
    """An agent deployment that injects the egress secret and started before the rotation rewrote it still signs
    with the old key; a deployment started afterwards does not."""
    from callsaver_infra.ops.rotate_egress_key import DeployedKey

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    config = environments["local"]
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

    def aws(service: str) -> Any:
        return boto3.client(service, region_name=config.region, endpoint_url=moto_endpoint, **creds)

    names = EnvNames("local")
    arn = aws("secretsmanager").create_secret(Name=names.egress_credentials_secret, SecretString="{}")["ARN"]
    aws("ecs").create_cluster(clusterName=names.agent_cluster)
    task = aws("ecs").register_task_definition(
        family="agent",
        containerDefinitions=[
            {"name": "agent", "image": "x", "memory": 512, "secrets": [{"name": "EGRESS", "valueFrom": arn}]}
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    aws("ecs").create_service(
        cluster=names.agent_cluster, serviceName=names.agent_service, taskDefinition=task, desiredCount=1
    )
    key = DeployedKey(2, "AKIDFAKENEWKEY000001", arn, "AKIDFAKENEWKEY000001", "fake")
    rotation = Rotation(config, RotationOptions(), aws, lambda line: None)
    assert rotation._agent_users({"AKIDFAKEOLDKEY000001"}, key) == []  # started after the secret was written
    time.sleep(0.002)  # the rewrite is dated at least a millisecond after the deployment (both in milliseconds)
    aws("secretsmanager").put_secret_value(SecretId=arn, SecretString='{"accessKeyId": "AKIDFAKENEWKEY000001"}')
    users = rotation._agent_users({"AKIDFAKEOLDKEY000001"}, key)
    assert len(users) == 1 and "injects the egress secret and started before it was rewritten" in users[0]
    aws("ecs").update_service(cluster=names.agent_cluster, service=names.agent_service, forceNewDeployment=True)
    assert rotation._agent_users({"AKIDFAKEOLDKEY000001"}, key) == []
