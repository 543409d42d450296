"""The lifecycle rehearsal: beyond one fresh deploy, an environment's life on the local endpoint, with the real CDK
CLI deploying real synthesized assemblies: deploy -> operator secrets -> recorded calls -> update (key rotation,
expiry 30 -> 45 days, new image tag) -> destroy -> redeploy over the retained resources (adopt-retained). After
each step: every recording still there, the operator's secret values unchanged, lifecycle days as configured, the
bucket policy present after the destroy. Calls are recorded by the local LiveKit stand-in with the key its dispatch
rule holds, with moto's IAM enforcement on for each of those uploads (`/moto-api/reset-auth`), at every moment of
the rotation; the run prints how many failed (0).

`python -m callsaver_infra.dev.rehearsal.lifecycle [--env local]` (make rehearse-lifecycle). Exit 0 passed, 1 failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callsaver_infra.app import bootstrap
from callsaver_infra.app.config import EnvironmentConfig, load_environments, select_environments
from callsaver_infra.app.names import EnvNames
from callsaver_infra.app.secret_catalog import LIVEKIT_KEY_REF, LIVEKIT_SECRET_REF, SECRETS
from callsaver_infra.dev.rehearsal.runner import (
    VERIFY_SECONDS,
    Background,
    Checks,
    Rehearsal,
    StepFailed,
    check_rehearsable,
)

UPDATED_EXPIRATION_DAYS = 45
UPDATED_IMAGE_TAG = "fedcba9876543210fedcba9876543210fedcba98"  # immutable, like every deployed tag
LIFECYCLE_RULE_ID = "SDR_lifecycle"
# The key of the synth process writing both versions' assemblies, v1 and v2, into the work directory.
VERSIONS = "v1+v2"
SYNTHESIZED = "synthesized "  # the synth process's line once a version's assembly is written
_SYNTHESIZE_VERSIONS = (
    "import sys; from callsaver_infra.dev.rehearsal.lifecycle import synthesize_versions; "
    "synthesize_versions(sys.argv[1], sys.argv[2])"
)


def variant(config: EnvironmentConfig, *, serial: int, expiration_days: int, image_tag: str) -> EnvironmentConfig:
    """config with another key serial, expiry and image tag, validated like a config file."""
    data = config.model_dump()
    data["egress_writer"] = {**data["egress_writer"], "access_key_serial": serial}
    data["storage"] = {**data["storage"], "expiration_days": expiration_days}
    data["agent"] = {**data["agent"], "image_tag": image_tag}
    return EnvironmentConfig.model_validate(data)


def updated(config: EnvironmentConfig) -> EnvironmentConfig:
    """The update step's version of config: the next key serial, a longer expiry, a new image tag."""
    return variant(
        config,
        serial=config.egress_writer.access_key_serial + 1,
        expiration_days=UPDATED_EXPIRATION_DAYS,
        image_tag=UPDATED_IMAGE_TAG,
    )


@dataclass
class LifecycleRehearsal(Rehearsal):
    """The steps of an environment's life, reusing the deploy rehearsal's endpoints, CLI runner and clients."""

    current: EnvironmentConfig | None = None
    operator_values: dict[str, str] = field(default_factory=dict, repr=False)
    recordings: list[str] = field(default_factory=list)
    uploads_ok: int = 0
    uploads_failed: list[str] = field(default_factory=list)
    _done_versions: set[str] = field(default_factory=set, repr=False)
    _synth_output: list[str] = field(default_factory=list, repr=False)

    def run(self) -> int:
        self.out(
            f"Lifecycle rehearsal of {self.config.name!r}: deploy, operator secrets, recorded calls, update "
            "(rotation, expiry, image), destroy, redeploy over retained resources; on a local AWS endpoint and a "
            "local LiveKit server."
        )
        started = time.perf_counter()
        code = self._run_in_workdir("callsaver-lifecycle-")
        self.out(f"Uploads with the key LiveKit holds: {self.uploads_ok} ok, {len(self.uploads_failed)} failed.")
        if code:
            return code
        self.out(f"Lifecycle rehearsal passed in {time.perf_counter() - started:.1f} s.")
        return 0

    def _run_steps(self, stop: Callable[[], None]) -> int:
        try:
            self._step("bootstrap", self._bootstrap)
            self._step("deploy", self._deploy_first)
            self._step("set operator secrets", self._set_operator_secrets)
            self._step("record calls", self._record_calls)
            self._step("update", self._update)
            self._step("destroy", self._destroy)
            self._step("redeploy over retained", self._redeploy)
        except StepFailed:
            stop()
            return 1
        stop()
        return 0

    # -- steps -------------------------------------------------------------------------------------------------

    def _start_synths(self) -> None:
        """Both versions' assemblies (v1: config, v2: the update's), synthesized as app.py would by one Python process
        from the start, while the endpoints start and the bootstraps deploy; _deploy_version waits for them."""
        # The config as this process holds it (not re-read from config/), so both processes deploy the same.
        config_file = self.workdir / "config.json"
        config_file.write_text(self.config.model_dump_json())
        self._synths[VERSIONS] = subprocess.Popen(
            [sys.executable, "-c", _SYNTHESIZE_VERSIONS, str(config_file), str(self.workdir)],
            cwd=self.root, env=self._env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def _bootstrap(self) -> str:
        toolkit = Background(self._bootstrap_toolkit)
        try:
            own = self._bootstrap_environment()
        finally:
            toolkit.result()
        return f"CDKToolkit, {own}"

    def _deploy_first(self) -> str:
        self.current = self.config
        return self._deploy_version("v1")

    def _set_operator_secrets(self) -> str:
        from callsaver_infra.dev.rehearsal.runner import LIVEKIT_API_KEY
        from callsaver_infra.ops.secrets_admin import set_secret

        sm = self._client("secretsmanager")
        for spec in SECRETS:
            if spec.owned_by_stack:
                continue
            if spec.ref == LIVEKIT_KEY_REF:
                value = LIVEKIT_API_KEY
            elif spec.ref == LIVEKIT_SECRET_REF:
                value = self.livekit_secret
            else:
                value = f"fake-{spec.ref.replace('/', '-').lower()}-rehearsal-only"
            set_secret(sm, self.config, spec, value)
            self.operator_values[spec.ref] = value
        c = Checks()
        self._check_retained(c)
        c.raise_if_failed()
        return f"{len(self.operator_values)} operator secrets set; {c.passed} checks"

    def _record_calls(self) -> str:
        from callsaver_infra.ops.rotate_egress_key import Rotation, RotationOptions

        assert self.current is not None
        self._add_rule()
        code = Rotation(self.current, self._rotation_options(RotationOptions), self._client, self._quiet).run()
        if code != 0:
            raise StepFailed(f"rotate-egress-key (first push) exited {code}")
        for _ in range(2):
            self._probe("after the first push")
        c = Checks()
        self._check_retained(c)
        c.raise_if_failed()
        return f"{len(self.recordings)} calls recorded; {c.passed} checks"

    def _update(self) -> str:
        from callsaver_infra.ops.rotate_egress_key import Rotation, RotationOptions

        assert self.current is not None
        new = updated(self.config)
        self._probe("before the update")
        self._deploy_version("v2")
        self.current = new
        self._probe("after the deploy, before the push (LiveKit holds the old key)")
        rotation = Rotation(new, self._rotation_options(RotationOptions), self._client, self._quiet)
        push = rotation.push

        def push_then_probe() -> None:
            push()
            self._probe("after the push, before the old key is retired")

        rotation.push = push_then_probe
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            self._quiet(line)

        rotation.out = keep
        code = rotation.run()
        # The agent's running tasks hold the key ECS injected at their start: the operator does what the refusal
        # says (a new deployment) and runs the command again, which picks up where it stopped. Once is enough: the
        # local endpoint dates secret versions by their write, to the millisecond, as AWS does (moto_ext).
        if code == 2 and any("injects the egress secret" in line for line in lines):
            names = EnvNames(self.config.name)
            self._client("ecs").update_service(
                cluster=names.agent_cluster, service=names.agent_service, forceNewDeployment=True
            )
            rerun = Rotation(new, self._rotation_options(RotationOptions), self._client, self._quiet)
            rerun.out = keep
            code = rerun.run()
        if code != 0:
            raise StepFailed(f"rotate-egress-key exited {code}")
        self._probe("after the old key is retired")
        c = Checks()
        self._check_retained(c)
        names = EnvNames(self.config.name)
        keys = self._client("iam").list_access_keys(UserName=names.egress_user)["AccessKeyMetadata"]
        c.expect("one key left, the one LiveKit holds", [k["AccessKeyId"] for k in keys], [self._held_key()])
        ecs = self._client("ecs")
        service = ecs.describe_services(cluster=names.agent_cluster, services=[names.agent_service])["services"][0]
        task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
        c.expect("new image tag", task["containerDefinitions"][0]["image"].rsplit(":", 1)[-1], UPDATED_IMAGE_TAG)
        c.expect("zero failed uploads during the rotation", self.uploads_failed, [])
        c.raise_if_failed()
        return f"{c.passed} checks; uploads so far {self.uploads_ok} ok, {len(self.uploads_failed)} failed"

    def _destroy(self) -> str:
        self._cdk("destroy", "--all", "--force", "--app", str(self.workdir / "v2"))
        c = Checks()
        self._check_retained(c)
        cfn = self._client("cloudformation")
        live = [
            s["StackName"]
            for s in cfn.list_stacks()["StackSummaries"]
            if s["StackStatus"] != "DELETE_COMPLETE"
            and s["StackName"].endswith(f"-{self.config.name}")
            # The environment's bootstrap stays, as `cdk destroy` leaves CDKToolkit: the redeploy goes through it.
            and s["StackName"] != bootstrap.toolkit_stack_name(self.config)
        ]
        c.expect("no stack of the environment left", live, [])
        logs = self._client("logs")
        group = EnvNames(self.config.name).agent_log_group
        c.expect(
            "agent log group retained",
            [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]],
            [group],
        )
        c.raise_if_failed()
        return f"{c.passed} checks: recordings, secrets, bucket policy and log group retained"

    def _redeploy(self) -> str:
        """adopt-retained (IMPORT change sets for the retained buckets, policy, key, alias, secrets, log group), then
        the deploy."""
        from callsaver_infra.ops.adopt import adopt
        from callsaver_infra.ops.rotate_egress_key import Rotation, RotationOptions

        assert self.current is not None
        assembly = self.workdir / "v2"
        plans = adopt(self.current, assembly, self._client, out=lambda line: None)
        adopted = sum(len(p.resources) for p in plans)
        adopted_types = Counter(r["ResourceType"] for p in plans for r in p.resources)
        outputs = self.workdir / "outputs-redeploy.json"
        self._cdk(
            "deploy", "--all", "--app", str(assembly), "--method=direct", "--require-approval=never",
            "--outputs-file", str(outputs),
        )  # fmt: skip
        self.outputs = json.loads(outputs.read_text())
        code = Rotation(self.current, self._rotation_options(RotationOptions), self._client, self._quiet).run()
        if code != 0:
            raise StepFailed(f"rotate-egress-key (push of the redeployed key) exited {code}")
        self._probe("after the redeploy")
        c = Checks()
        self._check_retained(c)
        # The retained resources: session and read-audit buckets, the session bucket's policy, its KMS key and alias,
        # the 11 secrets, the agent's log group.
        c.expect(
            "imported resources by type",
            dict(adopted_types),
            {
                "AWS::S3::Bucket": 2,
                "AWS::S3::BucketPolicy": 1,
                "AWS::KMS::Key": 1,
                "AWS::KMS::Alias": 1,
                "AWS::SecretsManager::Secret": 11,
                "AWS::Logs::LogGroup": 1,
            },
        )
        c.expect("zero failed uploads", self.uploads_failed, [])
        c.raise_if_failed()
        return f"{adopted} resources adopted, {c.passed} checks"

    # -- helpers -----------------------------------------------------------------------------------------------

    def _synthesized(self, label: str) -> Path:
        """A version's assembly, once the synth process (_start_synths) says it is written: v1 comes before v2."""
        synth = self._synths[VERSIONS]
        assert synth.stdout is not None
        while label not in self._done_versions:
            line = synth.stdout.readline()
            if not line:
                code = synth.wait(timeout=60)
                tail = "\n".join(self._synth_output[-25:])
                raise StepFailed(f"the synth of {label} exited {code} before writing it:\n{tail}")
            self._synth_output.append(line.rstrip())
            if line.startswith(SYNTHESIZED):
                self._done_versions.add(line.removeprefix(SYNTHESIZED).strip())
        return self.workdir / label

    def _deploy_version(self, label: str) -> str:
        """Deploy a version's assembly (v1 or v2, synthesized by _start_synths) with the real CLI."""
        outdir = self._synthesized(label)
        outputs = self.workdir / f"outputs-{label}.json"
        self._cdk(
            "deploy", "--all", "--app", str(outdir), "--method=direct", "--require-approval=never",
            "--outputs-file", str(outputs),
        )  # fmt: skip
        self.outputs = json.loads(outputs.read_text())
        return f"{', '.join(sorted(self.outputs))} ({label})"

    def _rotation_options(self, options_type: Any) -> Any:
        return options_type(
            livekit_url=self.livekit.url, s3_endpoint_url=self.endpoint_url, verify_seconds=VERIFY_SECONDS
        )

    def _quiet(self, line: str) -> None:
        if "stopped" in line or "done   4" in line or "now" in line:
            self.out(f"           {line.strip()}")

    def _add_rule(self) -> None:
        from livekit.protocol import agent_dispatch as proto_dispatch
        from livekit.protocol import room as proto_room
        from livekit.protocol import sip as proto_sip

        # The project's inbound trunk and the environment's rule, found by the agent it dispatches.
        self.livekit.add_inbound_trunk(proto_sip.SIPInboundTrunkInfo(name="lifecycle trunk", numbers=["+15550100002"]))
        self.livekit.add_dispatch_rule(
            proto_sip.SIPDispatchRuleInfo(
                name="lifecycle inbound calls",
                rule=proto_sip.SIPDispatchRule(
                    dispatch_rule_individual=proto_sip.SIPDispatchRuleIndividual(room_prefix="call")
                ),
                room_config=proto_room.RoomConfiguration(
                    agents=[proto_dispatch.RoomAgentDispatch(agent_name=self.config.livekit.worker_name)]
                ),
            ),
            rule_id=LIFECYCLE_RULE_ID,
        )

    def _held_key(self) -> str:
        from callsaver_infra.ops.rotate_egress_key import upload_key_ids

        rule_id = LIFECYCLE_RULE_ID
        with self.livekit.lock:
            keys = upload_key_ids(self.livekit.dispatch_rules[rule_id])
        return next(iter(keys)) if len(keys) == 1 else ""

    def _auth(self, remaining: str) -> None:
        # The body is how many requests moto still lets through unauthenticated: "0" enforces IAM from now on.
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset-auth",
            data=remaining.encode(),
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10)

    def _probe(self, moment: str) -> None:
        """One call through the dispatch rule, recorded by LiveKit with the key it holds, with IAM enforced."""
        from livekit.protocol import egress as proto_egress

        from callsaver_infra.dev.rehearsal.runner import LIVEKIT_API_KEY

        self._auth("0")
        try:
            info = call_and_hang_up(self.livekit, LIFECYCLE_RULE_ID, LIVEKIT_API_KEY, self.livekit_secret)
        finally:
            self._auth("inf")
        if info is not None and info.status == proto_egress.EGRESS_COMPLETE:
            self.uploads_ok += 1
            self.recordings += [f.filename for f in info.file_results]
        else:
            detail = info.error if info is not None else "no egress started"
            self.uploads_failed.append(f"{moment}: {detail}")
            self.out(f"           upload FAILED {moment}: {detail}")

    def _check_retained(self, c: Checks) -> None:
        """What must survive every step: recordings, operator values, lifecycle days, the bucket policy."""
        assert self.current is not None
        s3, sm = self._client("s3"), self._client("secretsmanager")
        bucket = self.config.storage.bucket_name
        listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        present = {o["Key"] for o in listed}
        c.expect("every recording still there", [k for k in self.recordings if k not in present], [])
        names = EnvNames(self.config.name)
        changed = [
            ref
            for ref, value in self.operator_values.items()
            if sm.get_secret_value(SecretId=names.secret(ref))["SecretString"] != value
        ]
        c.expect("operator secret values unchanged", changed, [])  # names only, never a value
        c.expect("one recording per recorded call", len(self.recordings), self.uploads_ok)
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        c.expect(
            "lifecycle days as configured",
            # The recordings' rule; the bucket's other rule drops expired delete markers (versioning) and has no days.
            [r.get("Expiration", {}).get("Days") for r in rules if r.get("ID") == "ExpireRecordings"],
            [self.current.storage.expiration_days],
        )
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        c.expect(
            "bucket policy denies non-TLS requests",
            any(s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}} for s in policy["Statement"]),
            True,
        )


def call_and_hang_up(livekit: Any, rule_id: str, api_key: str, api_secret: str) -> Any:
    """A call through rule_id: LiveKit creates the room and starts the rule's automatic egress; once it records, the
    caller hangs up (DeleteRoom through the Twirp API), which ends the recording and uploads it. Returns the final
    EgressInfo, or None when the call started no recording."""
    import asyncio

    from livekit import api
    from livekit.protocol import egress as proto_egress

    room, egress_id = livekit.simulate_inbound_call(rule_id)
    if egress_id is None:
        return None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with livekit.lock:
            if livekit.egresses[egress_id].status != proto_egress.EgressStatus.EGRESS_STARTING:
                break
        time.sleep(0.02)

    async def delete_room() -> None:
        async with api.LiveKitAPI(livekit.url, api_key, api_secret) as lkapi:
            await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))

    asyncio.run(delete_room())
    return livekit.wait_for_egress(egress_id, timeout=15)


def synthesize(config: EnvironmentConfig, outdir: Path) -> None:
    """One environment's stacks, top-level as with `-c env=`, with cdk.json's context and the cdk-nag gate, and the
    built-in CloudFormation validation through app.py's memo (.cache/cfn-validate/): the same findings, without
    starting the validator when a template was validated before."""
    from aws_cdk import App

    from callsaver_infra.app.environment import add_environment
    from callsaver_infra.app.nag import enable_policy_checks
    from callsaver_infra.app.validation_memo import PROJECT_MEMO_DIR, enable_memoized_validation

    root = Path(__file__).resolve().parents[3]
    context = json.loads((root / "cdk.json").read_text())["context"]
    app = App(context=context, outdir=str(outdir), analytics_reporting=False, builtin_cloud_formation_validation=False)
    add_environment(app, config)
    enable_memoized_validation(app, root / PROJECT_MEMO_DIR, enable_policy_checks)
    app.synth()


def synthesize_versions(config_file: str, workdir: str) -> None:
    """The lifecycle's two assemblies, <workdir>/v1 (config) and <workdir>/v2 (the update's), in one process."""
    config = EnvironmentConfig.model_validate_json(Path(config_file).read_text())
    synthesize(config, Path(workdir) / "v1")
    print(f"{SYNTHESIZED}v1", flush=True)  # the deploy of v1 starts now, while v2 is synthesized
    synthesize(updated(config), Path(workdir) / "v2")
    print(f"{SYNTHESIZED}v2", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m callsaver_infra.dev.rehearsal.lifecycle [--env local]`."""
    parser = argparse.ArgumentParser(prog="python -m callsaver_infra.dev.rehearsal.lifecycle", description=__doc__)
    parser.add_argument("--env", default="local", help="environment on the local fake account (default: local)")
    args = parser.parse_args(argv)
    config = select_environments(load_environments(Path("config")), args.env)[0]
    try:
        check_rehearsable(config)
    except StepFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return LifecycleRehearsal(config, Path.cwd()).run()


if __name__ == "__main__":
    sys.exit(main())
