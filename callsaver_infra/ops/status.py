"""`callsaver-infra status`: a read-only check of an environment's whole recording chain, one line per check.

The seed's manual checklist as code: the five stacks, the secrets, the agent service, the LiveKit project's inbound
trunks and dispatch rules (which environment each belongs to, where each records), LiveKit's recent egresses, and
the newest recording in the bucket. Every line is ok or says what to do. Nothing is written anywhere, and no secret
is printed: values are only compared, and every text that could quote LiveKit or AWS goes through a `Redactor`.

The checks come in groups (`GROUPS`); each group runs on its own, so one that cannot reach its service (LiveKit
down, a missing permission) fails its own lines while the others still print. A new group (e.g. CloudWatch alarms)
is one function `(StatusContext) -> list[Check]` added to `GROUPS`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from livekit import api

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import (
    EGRESS_CREDENTIALS_REF,
    HEALTHCHECK_PREFIX,
    AgentOutputs,
    EnvNames,
    IamOutputs,
    StorageOutputs,
)
from callsaver_infra.ops import push_egress
from callsaver_infra.ops.push_egress import (
    EgressCredentials,
    HookError,
    LiveKitCredentials,
    LiveKitSession,
    NotReadyError,
    PushReceipt,
    Redactor,
    api_url,
    credential_fingerprint,
    read_egress_credentials,
    read_livekit_credentials,
)
from callsaver_infra.ops.push_egress.dispatch_rules import (
    current_room_egress,
    dispatched_agents,
    looks_masked,
    mask_key,
    owners,
    recording_summary,
    rule_label,
    select_rules,
)
from callsaver_infra.ops.secrets_admin import SecretsError, secret_statuses

# Stack states in which a stack is deployed and its last operation succeeded.
_STACK_OK = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})
RECENT_EGRESSES = 5
# A recording bucket keeps 30 days of calls; listing more than this many keys to find the newest would be slow.
MAX_LISTED_OBJECTS = 100_000

_FAILED_EGRESS = (api.EgressStatus.EGRESS_FAILED, api.EgressStatus.EGRESS_LIMIT_REACHED)


class StatusError(Exception):
    """Something status needs cannot be read as given (e.g. the outputs file); the message says why."""


@dataclass(frozen=True)
class Check:
    """One line of the report: ok, or what is wrong (detail) and the exact command that fixes it (fix)."""

    group: str
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class StatusOptions:
    """The status command line."""

    outputs_file: Path | None = None
    livekit_url: str | None = None
    s3_endpoint_url: str | None = None
    timeout: float = push_egress.DEFAULT_TIMEOUT_SECONDS


@dataclass
class StatusContext:
    """What every group reads: the environment, its project's other environments, AWS clients, shared lookups."""

    config: EnvironmentConfig
    project_envs: tuple[EnvironmentConfig, ...]
    aws: Callable[[str], Any]
    options: StatusOptions
    redact: Redactor = field(default_factory=Redactor)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    _stacks: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    outputs_problem: str | None = None
    egress_fingerprint: str | None = None  # of the egress secret's key pair, once read and matching the IAM stack
    _outputs: dict[str, dict[str, str]] | None = None
    _clients: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> EnvNames:
        return EnvNames(self.config.name)

    @property
    def livekit_url(self) -> str:
        """The LiveKit server API URL status talks to."""
        return api_url(self.options.livekit_url or self.config.livekit.url)

    def client(self, service: str) -> Any:
        """One boto3 client per service, in the environment's region."""
        if service not in self._clients:
            self._clients[service] = self.aws(service)
        return self._clients[service]

    def stack(self, name: str) -> dict[str, Any] | None:
        """CloudFormation DescribeStacks of name (cached), or None when it is not deployed."""
        if name not in self._stacks:
            try:
                self._stacks[name] = self.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
            except ClientError as e:
                if e.response["Error"]["Code"] == "ValidationError" and "does not exist" in str(e):
                    self._stacks[name] = None
                else:
                    raise
        return self._stacks[name]

    def output(self, stack: str, key: str) -> str | None:
        """A stack output, from --outputs-file when given (as push-egress reads them), else from CloudFormation;
        None when it cannot be read (the stacks group reports why, in `outputs_problem`)."""
        if self._outputs is None:
            try:
                self._outputs = self._read_outputs()
            except (ClientError, BotoCoreError, StatusError) as e:
                self.outputs_problem = self.redact(f"AWS: {e}" if not isinstance(e, StatusError) else str(e))
                self._outputs = {}
        return self._outputs.get(stack, {}).get(key) or None

    def _read_outputs(self) -> dict[str, dict[str, str]]:
        path = self.options.outputs_file
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise StatusError(f"outputs file {path} cannot be read as JSON ({type(e).__name__})") from None
            if not isinstance(data, dict):
                raise StatusError(f"outputs file {path} is not a JSON object of stacks; cdk deploy writes it")
            return {k: {o: str(v) for o, v in vs.items()} for k, vs in data.items() if isinstance(vs, dict)}
        outputs: dict[str, dict[str, str]] = {}
        n = self.names
        for name in (n.storage_stack, n.iam_stack, n.secrets_stack, n.agent_stack):
            described = self.stack(name)
            if described is not None:
                outputs[name] = {o["OutputKey"]: o.get("OutputValue", "") for o in described.get("Outputs", [])}
        return outputs

    @property
    def bucket(self) -> str:
        """The deployed recording bucket (config's name until the Storage stack says otherwise)."""
        return self.output(self.names.storage_stack, StorageOutputs.BUCKET_NAME) or self.config.storage.bucket_name

    @property
    def deployed_key_id(self) -> str | None:
        """The egress access key id the IAM stack deployed (output EgressAccessKeyId), or None if unknown."""
        return self.output(self.names.iam_stack, IamOutputs.ACCESS_KEY_ID)


Group = Callable[[StatusContext], list[Check]]


@dataclass(frozen=True)
class DeployedKey:
    """What status knows of the deployed egress key: its id (IAM output), the fingerprint of the pair the egress
    secret holds, and push-egress's receipt (rule id -> fingerprint of the pair last pushed into that rule), which
    alone can date a key that LiveKit masks in its listing."""

    key_id: str | None = None
    fingerprint: str | None = None
    receipt: Mapping[str, str] | None = None


# --------------------------------------------------------------------------- AWS groups


def aws_account_checks(ctx: StatusContext) -> list[Check]:
    """The credentials belong to the environment's account (otherwise every other AWS line would mislead)."""
    account = ctx.client("sts").get_caller_identity()["Account"]
    if account != ctx.config.account:
        return [
            Check(
                "aws",
                "credentials",
                False,
                f"your AWS credentials are for account {account}; config/{ctx.config.name}.toml says "
                f"{ctx.config.account}",
                f"use credentials for {ctx.config.account} (e.g. AWS_PROFILE=<profile for {ctx.config.account}>)",
            )
        ]
    return [Check("aws", "credentials", True, f"account {account}, region {ctx.config.region}")]


def stack_checks(ctx: StatusContext) -> list[Check]:
    """The environment's stacks are deployed and their last operation completed."""
    n = ctx.names
    deploy = f"make deploy ENV={ctx.config.name}"
    checks = []
    for name in (n.storage_stack, n.iam_stack, n.secrets_stack, n.agent_stack, n.monitoring_stack):
        described = ctx.stack(name)
        if described is None:
            # After a destroy the retained bucket and secrets block a plain deploy: adopt them first.
            adopt = f"callsaver-infra adopt-retained --env {ctx.config.name} (only after a destroy), then {deploy}"
            checks.append(Check("stacks", name, False, "not deployed", adopt))
            continue
        state = described["StackStatus"]
        events = f"aws cloudformation describe-stack-events --stack-name {name} --region {ctx.config.region}"
        if state in _STACK_OK:
            checks.append(Check("stacks", name, True, state))
        elif state.endswith("_IN_PROGRESS"):
            checks.append(Check("stacks", name, False, f"{state}: an operation is running; check again when done"))
        else:
            reason = described.get("StackStatusReason")
            detail = f"{state}" + (f" ({reason})" if reason else "") + ": the last deploy failed; see its events"
            checks.append(Check("stacks", name, False, ctx.redact(detail), f"{events}, then {deploy}"))
    ctx.output(n.storage_stack, StorageOutputs.BUCKET_NAME)  # reads every output once, from the file or the stacks
    if ctx.outputs_problem is not None:
        checks.append(Check("stacks", "outputs", False, ctx.outputs_problem, deploy))
    elif ctx.options.outputs_file is not None:
        checks.append(Check("stacks", "outputs", True, f"read from {ctx.options.outputs_file}"))
    return checks


def secret_checks(ctx: StatusContext) -> list[Check]:
    """Every secret exists and is set (no placeholder), and the egress key secret matches the IAM stack."""
    env = ctx.config.name
    checks = []
    for s in secret_statuses(ctx.client("secretsmanager"), ctx.config):
        fix = {
            "missing": f"make deploy ENV={env}",
            "differs": f"make deploy ENV={env}",
            "placeholder": f"callsaver-infra secrets set --env {env} {s.spec.ref}",
        }.get(s.state, "")
        # secrets_admin's detail is "<state>: <what to do>"; the command goes into `fix` instead.
        checks.append(Check("secrets", s.spec.ref, s.ok, s.detail if s.ok else s.detail.split(": ", 1)[0], fix))
    checks.append(_egress_secret_check(ctx))
    return checks


def _egress_secret_check(ctx: StatusContext) -> Check:
    n = ctx.names
    ref = EGRESS_CREDENTIALS_REF
    arn = ctx.output(n.iam_stack, IamOutputs.CREDENTIALS_SECRET_ARN) or n.egress_credentials_secret
    deploy = f"make deploy ENV={ctx.config.name}"
    try:
        creds: EgressCredentials = read_egress_credentials(ctx.client("secretsmanager"), ctx.config, arn)
    except HookError as e:
        # The hook's message already ends in what to do (deploy, or issue a new key); it never quotes the value.
        return Check("secrets", ref, False, ctx.redact(str(e)))
    ctx.redact.add_egress(creds)
    deployed = ctx.deployed_key_id
    shown = mask_key(creds.access_key_id)
    if deployed is None:
        return Check("secrets", ref, True, f"key {shown} (the IAM stack's key id is unknown)")
    if creds.access_key_id != deployed:
        return Check(
            "secrets",
            ref,
            False,
            f"holds key {shown}, but {n.iam_stack} output {IamOutputs.ACCESS_KEY_ID} is {mask_key(deployed)}",
            deploy,
        )
    ctx.egress_fingerprint = credential_fingerprint(creds)
    return Check("secrets", ref, True, f"key {shown}, as deployed by {n.iam_stack}")


def agent_checks(ctx: StatusContext) -> list[Check]:
    """The agent service runs its desired tasks and its last deployment completed (ECS DescribeServices)."""
    n = ctx.names
    cluster = ctx.output(n.agent_stack, AgentOutputs.CLUSTER_NAME) or n.agent_cluster
    service_name = ctx.output(n.agent_stack, AgentOutputs.SERVICE_NAME) or n.agent_service
    where = f"{service_name} in {cluster}"
    try:
        described = ctx.client("ecs").describe_services(cluster=cluster, services=[service_name])
    except ClientError as e:
        if e.response["Error"]["Code"] != "ClusterNotFoundException":
            raise
        described = {"services": []}
    services = [s for s in described.get("services", []) if s.get("status") == "ACTIVE"]
    if not services:
        return [Check("agent", "service", False, f"{where} does not exist", f"make deploy ENV={ctx.config.name}")]
    service = services[0]
    events = (
        f"aws ecs describe-services --cluster {cluster} --services {service_name} --region {ctx.config.region} "
        "--query 'services[0].events[:5]'"
    )
    logs = f"aws logs tail {n.agent_log_group} --since 1h --region {ctx.config.region}"
    running, desired = service.get("runningCount", 0), service.get("desiredCount", 0)
    tasks_ok = desired > 0 and running >= desired
    checks = [
        Check(
            "agent",
            "tasks",
            tasks_ok,
            f"{running} running of {desired} desired ({where})",
            "" if tasks_ok else f"{events}; {logs}",
        )
    ]
    deployments = service.get("deployments", [])
    latest = next((d for d in deployments if d.get("status") == "PRIMARY"), deployments[0] if deployments else None)
    if latest is None:
        checks.append(Check("agent", "deployment", False, "no deployment listed", events))
        return checks
    state = latest.get("rolloutState", "unknown")
    reason = latest.get("rolloutStateReason", "")
    detail = f"last deployment {state}" + (f": {reason}" if reason and state != "COMPLETED" else "")
    if state == "COMPLETED":
        checks.append(Check("agent", "deployment", True, detail))
    elif state == "IN_PROGRESS":
        checks.append(Check("agent", "deployment", False, f"{detail} (check again in a few minutes)", events))
    else:
        checks.append(Check("agent", "deployment", False, ctx.redact(detail), f"{logs}; {events}"))
    return checks


def recording_checks(ctx: StatusContext) -> list[Check]:
    """The newest recording under the recording prefix (not _healthcheck/) and its age, listed with your credentials."""
    bucket = ctx.bucket
    prefix = ctx.config.call_recording.recording_prefix
    where = f"s3://{bucket}/{prefix}"
    newest: dict[str, Any] | None = None
    listed = 0
    try:
        pages = ctx.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["Key"].startswith(HEALTHCHECK_PREFIX):
                    continue
                if newest is None or obj["LastModified"] > newest["LastModified"]:
                    newest = obj
            listed += page.get("KeyCount", 0)
            if listed >= MAX_LISTED_OBJECTS:
                break
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code == "NoSuchBucket":
            return [
                Check(
                    "recordings",
                    "newest",
                    False,
                    f"bucket {bucket} does not exist",
                    f"make deploy ENV={ctx.config.name}",
                )
            ]
        if code in ("AccessDenied", "403"):
            return [
                Check(
                    "recordings",
                    "newest",
                    False,
                    f"your AWS credentials may not list {where} (AccessDenied)",
                    f"use credentials with s3:ListBucket on {bucket}",
                )
            ]
        raise
    if newest is None:
        return [
            Check(
                "recordings",
                "newest",
                False,
                f"no recording under {where} yet (test recordings under {HEALTHCHECK_PREFIX} do not count)",
                f"place a test call to the environment's number; callsaver-infra push-egress --env "
                f"{ctx.config.name} --verify checks the upload path",
            )
        ]
    age = ctx.now - newest["LastModified"]
    capped = f" (newest of the first {listed} keys)" if listed >= MAX_LISTED_OBJECTS else ""
    return [
        Check(
            "recordings",
            "newest",
            True,
            f"s3://{bucket}/{newest['Key']}, {format_age(age.total_seconds())} old{capped}",
        )
    ]


def format_age(seconds: float) -> str:
    """A short human age: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


# --------------------------------------------------------------------------- LiveKit group


def livekit_checks(ctx: StatusContext) -> list[Check]:
    """The LiveKit project's inbound trunks, dispatch rules and recent egresses, through one API session."""
    try:
        creds = read_livekit_credentials(ctx.client("secretsmanager"), ctx.config)
    except NotReadyError as e:
        return [Check("livekit", "API key", False, ctx.redact(str(e)))]
    ctx.redact.add_livekit(creds)
    return asyncio.run(_livekit_checks(ctx, creds))


async def _livekit_checks(ctx: StatusContext, creds: LiveKitCredentials) -> list[Check]:
    async with LiveKitSession(
        ctx.livekit_url,
        creds,
        env=ctx.config.name,
        redact=ctx.redact,
        timeout=ctx.options.timeout,
        retry=push_egress.DEFAULT_RETRY,
    ) as session:
        # Dispatch rules first: when they cannot be listed LiveKit is unreachable or refuses the key, and the
        # other calls would only repeat the failure (and its retries).
        try:
            rules = await session.list_dispatch_rules()
        except HookError as e:
            skipped = f"not checked: LiveKit at {session.url} could not list the dispatch rules"
            return [
                Check("trunks", "list", False, skipped),
                Check("dispatch rules", "list", False, str(e)),
                Check("egresses", "list", False, skipped),
            ]
        for rule in rules:
            _register_rule_secrets(ctx.redact, rule)
        trunks: list[api.SIPInboundTrunkInfo] | None
        try:
            response = await session.call(
                "ListSIPInboundTrunk", lambda lk: lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
            )
            trunks = list(response.items)
            trunk_error = ""
        except HookError as e:
            trunks, trunk_error = None, str(e)
        try:
            listed = await session.call("ListEgress", lambda lk: lk.egress.list_egress(api.ListEgressRequest()))
            egresses: list[api.EgressInfo] | None = list(listed.items)
            egress_error = ""
        except HookError as e:
            egresses, egress_error = None, str(e)
    checks = (
        trunk_checks(ctx.config, ctx.project_envs, rules, trunks)
        if trunks is not None
        else [Check("trunks", "list", False, trunk_error)]
    )
    checks += rule_checks(
        ctx.config,
        ctx.project_envs,
        rules,
        bucket=ctx.bucket,
        deployed=DeployedKey(ctx.deployed_key_id, ctx.egress_fingerprint, _push_receipt(ctx)),
        s3_endpoint_url=ctx.options.s3_endpoint_url,
    )
    checks += (
        egress_checks(ctx.config, egresses, ctx.bucket, ctx.redact)
        if egresses is not None
        else [Check("egresses", "list", False, egress_error)]
    )
    return checks


def _push_receipt(ctx: StatusContext) -> Mapping[str, str] | None:
    # push-egress's SSM receipt; unreadable (no ssm:GetParameter, no credentials) means "unknown", never a failure.
    try:
        receipt = PushReceipt(ctx.client("ssm"), ctx.names.egress_push_receipt).load()
    except (ClientError, BotoCoreError):
        return None
    return receipt.entries if receipt.readable else None


def _register_rule_secrets(redact: Redactor, rule: api.SIPDispatchRuleInfo) -> None:
    # A rule may hold an older key pair than the deployed one; LiveKit's answers must never show that either.
    egress = current_room_egress(rule)
    for output in egress.file_outputs if egress is not None else ():
        if output.HasField("s3"):
            redact.add(output.s3.secret)
            redact.add(output.s3.session_token)
            redact.add(output.s3.access_key, mask_key(output.s3.access_key))


def _owner_text(envs: Sequence[str], rule: api.SIPDispatchRuleInfo) -> str:
    if envs:
        return ("environment " if len(envs) == 1 else "environments ") + ", ".join(envs)
    agents = dispatched_agents(rule)
    return "no environment (" + (f"dispatches {', '.join(agents)}" if agents else "dispatches no agent") + ")"


def _rules_taking(trunk_id: str, rules: Iterable[api.SIPDispatchRuleInfo]) -> list[api.SIPDispatchRuleInfo]:
    # A rule without trunk_ids takes calls from every trunk (livekit/protocol sip/sip.go, rule matching).
    return [r for r in rules if not r.trunk_ids or trunk_id in r.trunk_ids]


def trunk_checks(
    config: EnvironmentConfig,
    project_envs: Sequence[EnvironmentConfig],
    rules: Sequence[api.SIPDispatchRuleInfo],
    trunks: Sequence[api.SIPInboundTrunkInfo],
) -> list[Check]:
    """One line per inbound trunk (its numbers and the environments its calls reach), and whether any reaches config's
    environment."""
    checks = []
    mine = [r for r in rules if config.name in owners(project_envs, r)]
    reaching_mine = []
    for trunk in sorted(trunks, key=lambda t: t.sip_trunk_id):
        label = f'{trunk.sip_trunk_id} "{trunk.name}"' if trunk.name else trunk.sip_trunk_id
        numbers = ", ".join(trunk.numbers) or "any number"
        taking = _rules_taking(trunk.sip_trunk_id, rules)
        envs = sorted({e for r in taking for e in owners(project_envs, r)})
        if _rules_taking(trunk.sip_trunk_id, mine):
            reaching_mine.append(trunk.sip_trunk_id)
        reach = f"calls reach {', '.join(envs)}" if envs else "its calls reach no environment's agent"
        rule_ids = ", ".join(r.sip_dispatch_rule_id for r in taking) or "no dispatch rule"
        checks.append(Check("trunks", label, True, f"{numbers}; {reach} (rules: {rule_ids})"))
    if mine and not reaching_mine:
        checks.append(
            Check(
                "trunks",
                "inbound path",
                False,
                f"no inbound trunk feeds {config.name}'s dispatch rules "
                f"({', '.join(r.sip_dispatch_rule_id for r in mine)}): its number receives no calls",
                "add the trunk to the rule's trunk_ids (or clear them) in the LiveKit dashboard or with lk sip "
                "dispatch update",
            )
        )
    elif not trunks:
        checks.append(Check("trunks", "list", True, "the project has no inbound trunk"))
    return checks


def rule_checks(
    config: EnvironmentConfig,
    project_envs: Sequence[EnvironmentConfig],
    rules: Sequence[api.SIPDispatchRuleInfo],
    *,
    bucket: str,
    deployed: DeployedKey,
    s3_endpoint_url: str | None = None,
) -> list[Check]:
    """One line per dispatch rule of the project: whose it is and where it records; config's own rules are checked
    against the deployed bucket and key id (a key id LiveKit masked in the listing is unknown, never stale)."""
    env = config.name
    push = f"callsaver-infra push-egress --env {env}"
    checks = []
    for rule in sorted(rules, key=lambda r: r.sip_dispatch_rule_id):
        rule_owners = owners(project_envs, rule)
        detail = f"{_owner_text(rule_owners, rule)}; {recording_summary(rule)}"
        if env not in rule_owners:
            checks.append(_foreign_rule_check(config, rule, rule_owners, detail, bucket))
            continue
        problems, notes = _own_rule_problems(config, rule, bucket, deployed, s3_endpoint_url)
        detail += "".join(f" ({note})" for note in notes)
        if problems:
            checks.append(Check("dispatch rules", rule_label(rule), False, f"{detail}: {'; '.join(problems)}", push))
        else:
            checks.append(Check("dispatch rules", rule_label(rule), True, detail))
    selection = select_rules(config, rules, project_envs)
    for problem in selection.problems:
        checks.append(Check("dispatch rules", "selection", False, problem))
    if not selection.rules and config.call_recording.auto_egress:
        agent = config.livekit.worker_name
        checks.append(
            Check(
                "dispatch rules",
                "selection",
                False,
                f"no dispatch rule dispatches agent {agent!r}: no inbound call reaches {env}'s agent or is recorded",
                f"add {agent!r} to the inbound rule's agents (room_config.agents, LiveKit dashboard), then {push}",
            )
        )
    return checks


def _foreign_rule_check(
    config: EnvironmentConfig, rule: api.SIPDispatchRuleInfo, rule_owners: Sequence[str], detail: str, bucket: str
) -> Check:
    # Another environment's (or nobody's) calls recorded into this environment's bucket: the cross-environment leak
    # that disjoint rule selections exist to prevent, and a key push-egress --env <this env> never refreshes.
    egress = current_room_egress(rule)
    outputs = egress.file_outputs if egress is not None else ()
    if not any(o.HasField("s3") and o.s3.bucket == bucket for o in outputs):
        return Check("dispatch rules", rule_label(rule), True, detail)
    fix = (
        " and ".join(f"callsaver-infra push-egress --env {owner}" for owner in rule_owners)
        if rule_owners
        else "remove the rule's room_config.egress in the LiveKit dashboard, or add this environment's agent to it"
    )
    problem = f"records into {config.name}'s bucket {bucket} but does not dispatch {config.name}'s agent"
    return Check("dispatch rules", rule_label(rule), False, f"{detail}: {problem}", fix)


def _own_rule_problems(
    config: EnvironmentConfig,
    rule: api.SIPDispatchRuleInfo,
    bucket: str,
    deployed: DeployedKey,
    s3_endpoint_url: str | None,
) -> tuple[list[str], list[str]]:
    """(problems, notes) of one of config's own rules."""
    egress = current_room_egress(rule)
    if egress is None:
        return (["not recorded"] if config.call_recording.auto_egress else []), []
    problems: list[str] = []
    notes: list[str] = []
    if not egress.file_outputs:
        problems.append("its room egress writes no file")
    for output in egress.file_outputs:
        kind = output.WhichOneof("output")
        if kind != "s3":
            problems.append(f"records to {kind or 'no storage'}, not S3")
            continue
        s3 = output.s3
        if s3.bucket != bucket:
            problems.append(f"records to bucket {s3.bucket}, not {config.name}'s {bucket}")
        if s3.endpoint != (s3_endpoint_url or ""):
            problems.append(f"uploads through endpoint {s3.endpoint or 'AWS'}, expected {s3_endpoint_url or 'AWS'}")
        key = s3.access_key
        if key and not looks_masked(key):
            if deployed.key_id and key != deployed.key_id:
                problems.append(
                    f"stale key id {mask_key(key)}: the deployed key (IAM output {IamOutputs.ACCESS_KEY_ID}) is "
                    f"{mask_key(deployed.key_id)}; uploads fail once the old key is deleted"
                )
            continue
        # The listing hides the key id, so it is unknown, unless push-egress's receipt says what it last pushed.
        pushed = (deployed.receipt or {}).get(rule.sip_dispatch_rule_id)
        if pushed is None or deployed.fingerprint is None:
            notes.append("the key it holds is unknown: no push receipt to judge by")
        elif pushed == deployed.fingerprint:
            notes.append("the push receipt shows the deployed key was pushed last")
        else:
            problems.append(
                "stale key: the push receipt shows another key pair than the deployed one was pushed last "
                "(the key was rotated since)"
            )
    return problems, notes


def _request_buckets(info: api.EgressInfo) -> set[str]:
    buckets = set()
    for kind in ("room_composite", "web", "participant", "track_composite"):
        if info.HasField(kind):
            request = getattr(info, kind)
            outputs = list(request.file_outputs) + ([request.file] if request.HasField("file") else [])
            buckets |= {o.s3.bucket for o in outputs if o.HasField("s3")}
    if info.HasField("track") and info.track.HasField("file") and info.track.file.HasField("s3"):
        buckets.add(info.track.file.s3.bucket)
    # The newer StartEgress request (which the agent may use for outbound calls): storage per request or output.
    if info.HasField("egress"):
        storages = [info.egress.storage] + [o.storage for o in info.egress.outputs if o.HasField("storage")]
        buckets |= {st.s3.bucket for st in storages if st.HasField("s3")}
    return buckets


def egress_checks(
    config: EnvironmentConfig, egresses: Sequence[api.EgressInfo], bucket: str, redact: Redactor
) -> list[Check]:
    """The most recent egresses into the environment's bucket, newest first, and how each ended (errors redacted).

    A failed egress is a problem only until a later one completes: then it is history.
    """
    ours = sorted(
        (e for e in egresses if bucket in _request_buckets(e)),
        key=lambda e: e.started_at or e.updated_at,
        reverse=True,
    )[:RECENT_EGRESSES]
    if not ours:
        return [Check("egresses", "recent", True, f"LiveKit lists no egress into s3://{bucket} (it keeps recent ones)")]
    checks = []
    completed_later = False
    for info in ours:
        status = api.EgressStatus.Name(info.status)
        files = [r.filename for r in info.file_results if r.filename]
        # A web egress records a page, not a room (its URL may carry a token, so it is not shown).
        source = f"room {info.room_name}" if info.room_name else "web egress" if info.HasField("web") else "no room"
        where = f"{source}, started {_time(info.started_at or info.updated_at)}" + (
            f", file {files[0]}" if files else ""
        )
        if info.status in _FAILED_EGRESS:
            detail = f"{status}: {redact(info.error or '(no error text)')} ({where})"
            if completed_later:
                checks.append(Check("egresses", info.egress_id, True, f"{detail}; a later egress completed"))
            else:
                fix = f"callsaver-infra push-egress --env {config.name} --verify"
                checks.append(Check("egresses", info.egress_id, False, detail, fix))
        else:
            note = " (ended before any audio arrived)" if info.status == api.EgressStatus.EGRESS_ABORTED else ""
            checks.append(Check("egresses", info.egress_id, True, f"{status}{note} ({where})"))
        completed_later = completed_later or info.status == api.EgressStatus.EGRESS_COMPLETE
    return checks


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ns else "unknown"


def alarm_checks(ctx: StatusContext) -> list[Check]:
    """The Monitoring stack's alarms and their states (CloudWatch DescribeAlarms); an alarm in ALARM fails."""
    n = ctx.names
    expected = [a for a in n.alarms if a != n.alarm_no_recording or ctx.config.monitoring.max_hours_without_recording]
    described = ctx.client("cloudwatch").describe_alarms(AlarmNames=expected)
    found = {a["AlarmName"]: a for a in [*described.get("MetricAlarms", []), *described.get("CompositeAlarms", [])]}
    checks = []
    for name in expected:
        alarm = found.get(name)
        if alarm is None:
            checks.append(Check("alarms", name, False, "does not exist", f"make deploy ENV={ctx.config.name}"))
            continue
        state = alarm.get("StateValue", "unknown")
        if state == "ALARM":
            # The description says what to check first (which command, which log group).
            detail = f"ALARM since {alarm.get('StateUpdatedTimestamp', '?')}: {alarm.get('StateReason', '')}"
            checks.append(Check("alarms", name, False, detail, alarm.get("AlarmDescription", "")))
        else:
            checks.append(Check("alarms", name, True, "OK" if state == "OK" else f"{state} (no data yet)"))
    return checks


# --------------------------------------------------------------------------- running and reporting


# The report's groups, in order. Each is (name, function); a group that raises a known error fails one line.
GROUPS: tuple[tuple[str, Group], ...] = (
    ("aws", aws_account_checks),
    ("stacks", stack_checks),
    ("secrets", secret_checks),
    ("agent", agent_checks),
    ("livekit", livekit_checks),
    ("recordings", recording_checks),
    ("alarms", alarm_checks),
)


def check_local_overrides(config: EnvironmentConfig, options: StatusOptions) -> None:
    """Refuse --livekit-url / --s3-endpoint-url for any environment not on the local fake account, as push-egress
    does (HookError)."""
    push_egress.check_local_overrides(
        config, push_egress.HookOptions(livekit_url=options.livekit_url, s3_endpoint_url=options.s3_endpoint_url)
    )


def run_status(ctx: StatusContext, groups: Sequence[tuple[str, Group]] = GROUPS) -> list[Check]:
    """Run every group; a group that fails on AWS, LiveKit or a secret fails its own line and the rest still run."""
    checks: list[Check] = []
    for name, group in groups:
        try:
            checks += group(ctx)
        except (ClientError, BotoCoreError) as e:
            checks.append(Check(name, "AWS", False, ctx.redact(f"AWS: {e}")))
        except (HookError, SecretsError, StatusError) as e:
            checks.append(Check(name, "error", False, ctx.redact(str(e))))
    # Redact once more at the edge: a secret registered late (e.g. read by the LiveKit group) may sit in an
    # earlier line's text.
    return [Check(c.group, c.name, c.ok, ctx.redact(c.detail), ctx.redact(c.fix)) for c in checks]


def format_report(ctx: StatusContext, checks: Sequence[Check]) -> str:
    """The human report: a header, one line per check under its group, and a summary."""
    c = ctx.config
    lines = [f"Status of {c.name} (account {c.account}, {c.region}; LiveKit {ctx.livekit_url}):"]
    width = max((len(check.name) for check in checks), default=0)
    group = None
    for check in checks:
        if check.group != group:
            group = check.group
            lines.append(group)
        text = check.detail + (f" -> run: {check.fix}" if check.fix and not check.ok else "")
        lines.append(f"  {'ok' if check.ok else 'FAIL':<4}  {check.name:<{width}}  {text}")
    bad = sum(not check.ok for check in checks)
    lines.append(f"all {len(checks)} checks ok" if not bad else f"{bad} of {len(checks)} checks need attention")
    return "\n".join(lines)


def report_json(ctx: StatusContext, checks: Sequence[Check]) -> str:
    """One JSON document for scripts: the environment, overall ok, and every check."""
    c = ctx.config
    return json.dumps(
        {
            "environment": c.name,
            "account": c.account,
            "region": c.region,
            "livekit_url": ctx.livekit_url,
            "ok": all(check.ok for check in checks),
            "checks": [asdict(check) for check in checks],
        },
        indent=2,
    )
