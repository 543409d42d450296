"""`callsaver-infra rotate-egress-key`: rotate the egress access key without a moment in which LiveKit holds a key
IAM has deleted.

The IAM stack keeps a replaced key (`UpdateReplacePolicy: Retain` on the access key), so bumping
`egress_writer.access_key_serial` and deploying creates the new key while the old one stays active. This command then
walks the rest from what it reads (nothing is remembered between runs, so it can be re-run after any interruption):

1. deployed   the IAM stack holds the key of config's serial (else: `make deploy ENV=<env>` first)
2. checked    check_egress_key: the secret's key is the deployed one, active in IAM, and can upload
3. pushed     every dispatch rule of the environment (those dispatching its agent) holds the new key (run_hook
              pushes it and records a test web egress)
4. retired    every other key of the egress user is deleted, refused while any dispatch rule or the agent's injected
              credentials still use it
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from google.protobuf.message import Message

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import EnvNames, IamOutputs
from callsaver_infra.ops.push_egress.egress_key_check import EgressKeyCheckFailed, check_egress_key

EXIT_DONE, EXIT_WAITING, EXIT_REFUSED = 0, 1, 2


class RotationBlocked(Exception):
    """A step cannot go ahead; the message says why and what to do. `code` is the command's exit code."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RotationOptions:
    """The command line; the two URLs are for local rehearsals and tests only."""

    dry_run: bool = False
    livekit_url: str | None = None
    s3_endpoint_url: str | None = None
    timeout: float = 10.0
    # How long step 3's push-egress --verify records; None: push-egress's default. The local rehearsal shortens it:
    # a longer recording of the stand-in proves nothing more.
    verify_seconds: float | None = None
    # How often that --verify polls its test egress; None: push-egress's default. Tests only: the local stand-in's
    # egress starts and uploads in tens of milliseconds.
    verify_poll_seconds: float | None = None


@dataclass
class DeployedKey:
    """The IAM stack's current key, as deployed, and the egress secret's content (never printed)."""

    serial: int | None
    output_key_id: str
    secret_arn: str
    secret_key_id: str
    secret_access_key: str = field(repr=False)


def masked(key_id: str) -> str:
    """An access key id as output shows it: its last 4 characters."""
    return "****" + key_id[-4:] if len(key_id) > 8 else "****"


def upload_key_ids(message: Message) -> set[str]:
    """Every S3Upload.access_key anywhere in a protobuf message: file, segment and image outputs of room, participant
    and track egress alike, so no output kind is missed."""
    found: set[str] = set()
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        # ListFields gives a repeated field as a sequence, a singular one as the message itself.
        for item in value if not isinstance(value, Message) else [value]:
            if not isinstance(item, Message):
                continue
            access_key = str(getattr(item, "access_key", "")) if descriptor.message_type.name == "S3Upload" else ""
            if access_key:
                found.add(access_key)
            found |= upload_key_ids(item)
    return found


class Rotation:
    """One run of the rotation: each step reads the live state, acts if needed, and reports where it stands."""

    def __init__(
        self,
        config: EnvironmentConfig,
        options: RotationOptions,
        aws: Callable[[str], Any],
        out: Callable[[str], None] = print,
        push: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.aws = aws
        self.out = out
        self.names = EnvNames(config.name)
        # The push is the hook's own entry point; injectable so tests can count it.
        self.push = push or self._run_hook
        self.will_push: set[str] = set()

    def run(self) -> int:
        """Walk every step; returns the exit code (0 rotation complete, 1 waiting for a deploy, 2 refused)."""
        self.out(
            f"Rotating the egress access key of {self.config.name} "
            f"(serial {self.config.egress_writer.access_key_serial}):"
        )
        try:
            deployed = self._step_deployed()
            self._step_checked(deployed)
            self._step_pushed(deployed)
            self._step_retired(deployed)
        except RotationBlocked as e:
            self.out(f"  stopped: {e}")
            return e.code
        self.out("Rotation complete: LiveKit holds the only key the egress user has." if not self.options.dry_run else
                 "Dry run: nothing was changed.")  # fmt: skip
        return EXIT_DONE

    # -- steps -------------------------------------------------------------------------------------------------

    def _step_deployed(self) -> DeployedKey:
        cfn = self.aws("cloudformation")
        try:
            stack = cfn.describe_stacks(StackName=self.names.iam_stack)["Stacks"][0]
            template = cfn.get_template(StackName=self.names.iam_stack)["TemplateBody"]
        except ClientError as e:
            raise RotationBlocked(
                f"1 deployed: stack {self.names.iam_stack} cannot be read ({e.response['Error']['Code']}); "
                f"deploy it with make deploy ENV={self.config.name} (after a cdk destroy, first "
                f"`callsaver-infra adopt-retained --env {self.config.name}`: docs/runbooks.md)",
                EXIT_WAITING,
            ) from None
        if isinstance(template, str):
            template = json.loads(template)
        serials = [
            r.get("Properties", {}).get("Serial")
            for r in template.get("Resources", {}).values()
            if r.get("Type") == "AWS::IAM::AccessKey"
        ]
        serial = serials[0] if len(serials) == 1 else None
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if serial != self.config.egress_writer.access_key_serial or stack["StackStatus"].endswith("_IN_PROGRESS"):
            raise RotationBlocked(
                f"1 deployed: {self.names.iam_stack} holds key serial {serial} ({stack['StackStatus']}), config/"
                f"{self.config.name}.toml says {self.config.egress_writer.access_key_serial}: run make deploy "
                f"ENV={self.config.name}, then this command again (the old key stays active meanwhile)",
                EXIT_WAITING,
            )
        try:
            output_key_id = outputs[IamOutputs.ACCESS_KEY_ID]
            secret_arn = outputs[IamOutputs.CREDENTIALS_SECRET_ARN]
        except KeyError as e:
            raise RotationBlocked(f"1 deployed: {self.names.iam_stack} has no output {e}", EXIT_WAITING) from None
        value = json.loads(self.aws("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"])
        key = DeployedKey(
            serial, output_key_id, secret_arn, value.get("accessKeyId", ""), value.get("secretAccessKey", "")
        )
        self.out(f"  done   1 deployed  {self.names.iam_stack}: serial {serial}, key {masked(output_key_id)}")
        return key

    def _step_checked(self, key: DeployedKey) -> None:
        if self.options.dry_run:
            self.out("  skip   2 checked   dry run: the test upload would write an object")
            return
        try:
            result = check_egress_key(
                access_key_id=key.secret_key_id,
                secret_access_key=key.secret_access_key,
                deployed_access_key_id=key.output_key_id,
                user_name=self.names.egress_user,
                bucket=self.config.storage.bucket_name,
                region=self.config.region,
                iam=self.aws("iam"),
                s3_endpoint_url=self.options.s3_endpoint_url,
            )
        except EgressKeyCheckFailed as e:
            raise RotationBlocked(f"2 checked: {e}") from None
        self.out(
            f"  done   2 checked   key {masked(key.output_key_id)} is deployed, active, uploads ({result.object_key})"
        )

    def _step_pushed(self, key: DeployedKey) -> None:
        hook = self.config.call_recording
        if not hook.auto_egress:
            self.out("  skip   3 pushed    auto_egress is off: the backend reads the key from the secret per recording")
            return
        from callsaver_infra.ops.push_egress.dispatch_rules import select_rules

        rules = self._rules()
        selection = select_rules(self.config, list(rules.values()))
        if selection.problems:
            raise RotationBlocked("3 pushed: " + "; ".join(selection.problems))
        mine = [r.sip_dispatch_rule_id for r in selection.rules]
        if not mine:
            raise RotationBlocked(
                f"3 pushed: no dispatch rule dispatches agent {self.config.livekit.worker_name!r} "
                f"(livekit.worker_name in config/{self.config.name}.toml)"
            )
        stale = [r for r in mine if key.output_key_id not in upload_key_ids(rules[r])]
        if not stale:
            self.out(f"  done   3 pushed    every dispatch rule holds key {masked(key.output_key_id)}")
            return
        if self.options.dry_run:
            self.will_push = set(stale)  # step 4 of the dry run looks past them: the push would move them
            self.out(f"  todo   3 pushed    would push key {masked(key.output_key_id)} to {', '.join(stale)}")
            return
        self.out(
            f"  now    3 pushed    pushing key {masked(key.output_key_id)} to {', '.join(stale)} (push-egress --verify)"
        )
        self.push()
        rules = self._rules()
        still = [r for r in mine if key.output_key_id not in upload_key_ids(rules[r])]
        if still:
            raise RotationBlocked(f"3 pushed: after the push, {', '.join(still)} still hold another key")
        self.out(f"  done   3 pushed    every dispatch rule holds key {masked(key.output_key_id)}, verify recorded")

    def _step_retired(self, key: DeployedKey) -> None:
        iam = self.aws("iam")
        keys = iam.list_access_keys(UserName=self.names.egress_user)["AccessKeyMetadata"]
        old = sorted(k["AccessKeyId"] for k in keys if k["AccessKeyId"] != key.output_key_id)
        if not old:
            self.out(f"  done   4 retired   {self.names.egress_user} has only key {masked(key.output_key_id)}")
            return
        users = self._users_of(old, key)
        if users:
            raise RotationBlocked("4 retired: refusing to delete a key still in use:\n    " + "\n    ".join(users))
        if self.options.dry_run:
            self.out(f"  todo   4 retired   would delete {', '.join(masked(k) for k in old)} (no one uses it)")
            return
        for key_id in old:
            iam.delete_access_key(UserName=self.names.egress_user, AccessKeyId=key_id)
        self.out(f"  done   4 retired   deleted {', '.join(masked(k) for k in old)}; no dispatch rule or agent used it")

    # -- who still uses an old key ------------------------------------------------------------------------------

    def _users_of(self, old: Iterable[str], key: DeployedKey) -> list[str]:
        from callsaver_infra.ops.push_egress.dispatch_rules import looks_masked

        old = set(old)
        users = []
        if self.config.call_recording.auto_egress or self.options.livekit_url:
            # Every rule LiveKit has, not only config's: a rule added by hand may carry the key too.
            for rule_id, rule in sorted(self._rules().items()):
                if rule_id in self.will_push:
                    continue
                for key_id in sorted(upload_key_ids(rule) & old):
                    users.append(f"dispatch rule {rule_id} uploads with {masked(key_id)}: run push-egress for it")
                if any(looks_masked(k) for k in upload_key_ids(rule)):
                    # Which key a masked listing hides cannot be told: never delete on a guess.
                    users.append(
                        f"dispatch rule {rule_id}: LiveKit's listing masks its key id; check it in the dashboard and "
                        "delete the old key by hand (aws iam delete-access-key) once it is not the one shown"
                    )
        users += self._agent_users(old, key)
        return users

    def _agent_users(self, old: set[str], key: DeployedKey) -> list[str]:
        """Running agent tasks hold what ECS injected at their start: the egress secret injected before the
        rotation wrote it, or an old key id in plain environment, means tasks still sign with an old key."""
        ecs = self.aws("ecs")
        try:
            services = ecs.describe_services(cluster=self.names.agent_cluster, services=[self.names.agent_service])
        except ClientError as e:
            if e.response["Error"]["Code"] == "ClusterNotFoundException":
                return []  # no agent deployed: no task holds anything
            raise
        found = []
        written = None
        for service in services.get("services", []):
            for deployment in service.get("deployments", []):
                task = ecs.describe_task_definition(taskDefinition=deployment["taskDefinition"])["taskDefinition"]
                for container in task.get("containerDefinitions", []):
                    plain = {e.get("value") for e in container.get("environment", [])}
                    if plain & old:
                        found.append(
                            f"agent task definition {task.get('family')} sets an old key id in its environment"
                        )
                    injected = [
                        s
                        for s in container.get("secrets", [])
                        if s.get("valueFrom", "").startswith(key.secret_arn.rsplit("-", 1)[0])
                    ]
                    # A pending task may already have pulled its secrets: count it with the running ones.
                    if injected and deployment.get("runningCount", 0) + deployment.get("pendingCount", 0):
                        if written is None:
                            written = self._secret_written(key.secret_arn)
                        started = deployment.get("createdAt")
                        if written is None or started is None or started < written:
                            found.append(
                                f"agent deployment {deployment.get('id')} injects the egress secret and started before "
                                "it was rewritten: aws ecs update-service --force-new-deployment "
                                f"--cluster {self.names.agent_cluster} --service {self.names.agent_service}"
                            )
        return found

    def _secret_written(self, secret_arn: str) -> Any:
        versions = self.aws("secretsmanager").list_secret_version_ids(SecretId=secret_arn)["Versions"]
        current = [v for v in versions if "AWSCURRENT" in v.get("VersionStages", [])]
        return current[0].get("CreatedDate") if current else None

    # -- LiveKit -------------------------------------------------------------------------------------------------

    def _rules(self) -> dict[str, Any]:
        return asyncio.run(self._list_rules())

    async def _list_rules(self) -> dict[str, Any]:
        from livekit import api

        from callsaver_infra.app.secret_catalog import LIVEKIT_KEY_REF, LIVEKIT_SECRET_REF
        from callsaver_infra.ops.push_egress import api_url

        sm = self.aws("secretsmanager")
        key, secret = (
            sm.get_secret_value(SecretId=self.names.secret(ref))["SecretString"].strip()
            for ref in (LIVEKIT_KEY_REF, LIVEKIT_SECRET_REF)
        )
        url = api_url(self.options.livekit_url or self.config.livekit.url)
        lk = api.LiveKitAPI(url, key, secret, failover=False)
        try:
            listed = await asyncio.wait_for(
                lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest()), timeout=self.options.timeout
            )
        except Exception as e:  # the SDK's errors carry no secret; say which call failed and stop
            raise RotationBlocked(f"cannot list LiveKit's dispatch rules at {url}: {type(e).__name__}: {e}") from None
        finally:
            await lk.aclose()
        return {rule.sip_dispatch_rule_id: rule for rule in listed.items}

    def _run_hook(self) -> None:
        from callsaver_infra.ops import push_egress

        options = push_egress.HookOptions(
            verify=True,
            verify_seconds=self.options.verify_seconds or push_egress.VERIFY_RECORD_SECONDS,
            verify_poll_seconds=self.options.verify_poll_seconds or push_egress.VERIFY_POLL_SECONDS,
            livekit_url=self.options.livekit_url,
            s3_endpoint_url=self.options.s3_endpoint_url,
        )
        try:
            push_egress.run_hook(self.config, options, self.aws, lambda line: self.out(f"           {line}"))
        except push_egress.HookError as e:
            raise RotationBlocked(f"3 pushed: push-egress failed: {e}") from None
