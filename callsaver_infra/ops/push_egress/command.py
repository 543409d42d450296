"""The post-deploy hook (`callsaver-infra push-egress`): make LiveKit record calls into the environment's bucket.

LiveKit has no public API for a project's default egress storage (that is a dashboard-only form). S3 settings reach
LiveKit only inside egress requests, or inside a room's automatic egress, `RoomConfiguration.egress.room` (a
`RoomCompositeEgressRequest`), which a SIP dispatch rule carries as `SIPDispatchRuleInfo.room_config`. So the hook
reads the deployed bucket and the egress access key, builds that request (audio-only, OGG file, S3 upload) and
writes it into the dispatch rules config names, leaving every other field of each rule as it was.

Secrets (the LiveKit API secret, the egress secret access key) live only inside objects whose repr masks them, and
every message that could quote a LiveKit or S3 answer goes through `Redactor` first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import (
    HEALTHCHECK_PREFIX,
    EnvNames,
)
from callsaver_infra.ops.push_egress.credentials import (
    LiveKitCredentials,
    Redactor,
    read_egress_credentials,
    read_livekit_credentials,
)
from callsaver_infra.ops.push_egress.dispatch_rules import (
    mask_key,
    select_rules,
)
from callsaver_infra.ops.push_egress.egress_key_check import EgressKeyCheckFailed, check_egress_key
from callsaver_infra.ops.push_egress.errors import HookError
from callsaver_infra.ops.push_egress.limits import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT_SECONDS,
    VERIFY_POLL_SECONDS,
    VERIFY_RECORD_SECONDS,
    RetryPolicy,
)
from callsaver_infra.ops.push_egress.masking import credential_fingerprint, listing_blanks
from callsaver_infra.ops.push_egress.outputs import outputs_from_cloudformation, outputs_from_file
from callsaver_infra.ops.push_egress.owned import OWNED_FIELD
from callsaver_infra.ops.push_egress.probe import probe_listing_blanks
from callsaver_infra.ops.push_egress.receipt import PushReceipt
from callsaver_infra.ops.push_egress.rules import (
    EgressSettings,
    RulePlan,
    build_settings,
    changed_fields,
    inventory,
    render_diff,
    room_composite_request,
)
from callsaver_infra.ops.push_egress.session import LiveKitSession
from callsaver_infra.ops.push_egress.verify import (
    VERIFY_PAGE_URL,
    VerifyResult,
    s3_object_exists,
    verify_egress,
)

# The fake account of the local environment: only it may point the tools at local endpoints (rehearsal, tests).
LOCAL_ACCOUNT = "123456789012"


@dataclass(frozen=True)
class HookOptions:
    """The push-egress command line."""

    outputs_file: Path | None = None
    dry_run: bool = False
    verify: bool = False
    # How long --verify lets its test egress record (--verify-seconds).
    verify_seconds: float = VERIFY_RECORD_SECONDS
    # How often --verify polls its test egress; not on the command line: only tests against the local stand-in, whose
    # egress starts and uploads in tens of milliseconds, poll faster.
    verify_poll_seconds: float = VERIFY_POLL_SECONDS
    livekit_url: str | None = None
    s3_endpoint_url: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    retry: RetryPolicy = DEFAULT_RETRY
    project_envs: tuple[EnvironmentConfig, ...] = ()  # every environment, to flag rules two of them select
    # Rules whose sensitive fields the operator checked are empty, so a listing that blanks them loses nothing.
    accept_blanked: tuple[str, ...] = ()


def check_local_overrides(config: EnvironmentConfig, options: HookOptions) -> None:
    """--livekit-url and --s3-endpoint-url send signed requests and the egress key elsewhere: local account only."""
    given = [
        flag
        for flag, value in (("--livekit-url", options.livekit_url), ("--s3-endpoint-url", options.s3_endpoint_url))
        if value
    ]
    if given and config.account != LOCAL_ACCOUNT:
        raise HookError(
            f"{' and '.join(given)} are for the local rehearsal and tests only (account {LOCAL_ACCOUNT}); "
            f"environment {config.name} is account {config.account}: leave them out to use livekit.url from "
            f"config/{config.name}.toml and AWS's own S3 endpoint"
        )


def run_hook(
    config: EnvironmentConfig,
    options: HookOptions,
    aws: Callable[[str], Any],
    out: Callable[[str], None] = print,
) -> None:
    """Push (or, dry run, show) the environment's egress settings, then optionally --verify; HookError on failure.

    aws(service) returns a boto3 client for the environment; out prints a line of the report.
    """
    check_local_overrides(config, options)
    redact = Redactor()
    if options.outputs_file is not None:
        outputs = outputs_from_file(options.outputs_file, config)
    else:
        outputs = outputs_from_cloudformation(aws("cloudformation"), config)
    if outputs.bucket_name != config.storage.bucket_name:
        out(
            f"note: the deployed bucket {outputs.bucket_name} differs from storage.bucket_name "
            f"{config.storage.bucket_name} in config/{config.name}.toml; using the deployed one"
        )
    secretsmanager = aws("secretsmanager")
    egress_creds = read_egress_credentials(secretsmanager, config, outputs.credentials_secret_arn)
    redact.add_egress(egress_creds)
    pushing = config.call_recording.auto_egress and not options.dry_run
    try:
        # The key must be the deployed one and able to upload before LiveKit gets it (a dry run writes nothing).
        checked = check_egress_key(
            access_key_id=egress_creds.access_key_id,
            secret_access_key=egress_creds.secret_access_key,
            deployed_access_key_id=outputs.access_key_id,
            user_name=EnvNames(config.name).egress_user,
            bucket=outputs.bucket_name,
            region=outputs.bucket_region,
            iam=None,
            s3_endpoint_url=options.s3_endpoint_url,
            upload=pushing,
        )
    except EgressKeyCheckFailed as e:
        raise HookError(redact(str(e))) from None
    settings = build_settings(config, outputs, egress_creds, s3_endpoint_url=options.s3_endpoint_url)
    out(
        f"{config.name}: recordings go to s3://{settings.bucket}/{settings.filepath_template}.ogg "
        f"({settings.region}), access key {mask_key(egress_creds.access_key_id)} (outputs from {outputs.source})"
    )
    if checked.object_key:
        out(f"egress key checked: it is the deployed key and uploaded s3://{settings.bucket}/{checked.object_key}")
    if not config.call_recording.auto_egress:
        out(
            f"recording of inbound calls is off (call_recording.auto_egress = false in config/{config.name}.toml): "
            "nothing is pushed to LiveKit"
        )
        if not options.verify:
            return
    livekit_creds = read_livekit_credentials(secretsmanager, config)
    redact.add_livekit(livekit_creds)
    url = options.livekit_url or config.livekit.url
    receipt = PushReceipt(aws("ssm"), EnvNames(config.name).egress_push_receipt).load()
    verify_client = aws("s3") if options.verify else None
    result = asyncio.run(
        _talk_to_livekit(config, options, settings, livekit_creds, url, redact, receipt, verify_client, out)
    )
    if result is not None and not result.ok:
        raise HookError(f"--verify failed: {result.detail}")


async def _talk_to_livekit(
    config: EnvironmentConfig,
    options: HookOptions,
    settings: EgressSettings,
    credentials: LiveKitCredentials,
    url: str,
    redact: Redactor,
    receipt: PushReceipt,
    s3: Any,
    out: Callable[[str], None],
) -> VerifyResult | None:
    async with LiveKitSession(
        url, credentials, env=config.name, redact=redact, timeout=options.timeout, retry=options.retry
    ) as session:
        if config.call_recording.auto_egress:
            await _push(config, options, settings, session, receipt, out)
        if s3 is None:
            return None
        out(
            f"verify: recording {VERIFY_PAGE_URL} (web egress, audio only) to s3://{settings.bucket}/{HEALTHCHECK_PREFIX}..."
        )
        result = await verify_egress(
            session,
            settings,
            s3_object_exists(s3),
            redact=redact,
            record_seconds=options.verify_seconds,
            poll_seconds=options.verify_poll_seconds,
        )
        if result.ok:
            out(f"verify: ok: {result.detail}")
        return result


async def _push(
    config: EnvironmentConfig,
    options: HookOptions,
    settings: EgressSettings,
    session: LiveKitSession,
    receipt: PushReceipt,
    out: Callable[[str], None],
) -> None:
    try:
        rules = await session.list_dispatch_rules()
    except HookError as e:
        raise HookError(f"{e}; nothing was pushed") from None
    project = [e for e in options.project_envs if e.livekit.url == config.livekit.url] or [config]
    selection = select_rules(config, rules, project)
    agent = config.livekit.worker_name
    if selection.problems or not selection.rules:
        reasons = list(selection.problems) or [
            f"no SIP dispatch rule of the project at {session.url} dispatches agent {agent!r} "
            f"(livekit.worker_name in config/{config.name}.toml)"
        ]
        raise HookError(
            "\n".join(reasons)
            + f"\nnothing was pushed. Point this environment's inbound rule at its agent: add {agent!r} to the "
            "rule's agents (room_config.agents) in the LiveKit dashboard or with `lk sip dispatch update`, or narrow "
            f"with call_recording.dispatch_rule_ids in config/{config.name}.toml. The project's rules:\n"
            + inventory(rules, project)
        )
    desired = room_composite_request(settings)
    fingerprint = credential_fingerprint(settings.credentials)
    plans = [
        RulePlan(rule, desired, fingerprint, receipt.entries.get(rule.sip_dispatch_rule_id)) for rule in selection.rules
    ]
    blanking = listing_blanks(rules)
    refused: dict[str, str] = {}  # rule id -> why nothing was pushed to it
    writes: list[RulePlan] = []
    for plan in plans:
        if not plan.changed:
            out(f"dispatch rule {plan.label}: LiveKit already holds these settings; nothing changed")
            continue
        reason = plan.refusal
        if reason is None and blanking and plan.rule_id not in options.accept_blanked:
            reason = _blanked_refusal(plan)
        if reason is not None:
            refused[plan.rule_id] = reason
            out(reason)
            continue
        out(render_diff(plan))
        writes.append(plan)
    if options.dry_run:
        summary = (
            f"dry run: would update {len(writes)} of {len(plans)} dispatch rule(s)"
            if writes
            else "dry run: no change needed"
        )
        out(f"{summary}; nothing was pushed")
        if refused:
            raise HookError(f"{len(refused)} dispatch rule(s) would be refused (above)")
        return
    done: list[str] = []
    for plan in writes:
        try:
            probe = blanking is None and plan.rule_id not in options.accept_blanked
            if probe and await probe_listing_blanks(session, plan.rule):
                reason = _blanked_refusal(plan)
                refused[plan.rule_id] = reason
                out(reason)
                continue
            await session.replace_dispatch_rule(plan.updated_rule())
            after = await session.list_dispatch_rules([plan.rule_id])
        except HookError as e:
            raise HookError(f"{e}; {_pushed_so_far(done)}") from None
        done.append(plan.rule_id)
        receipt.entries[plan.rule_id] = fingerprint
        changed = changed_fields(plan.rule, after[0]) if after else ["the rule is gone after the write"]
        if changed:
            raise HookError(
                f"dispatch rule {plan.label}: after the push LiveKit lists other fields than before: "
                f"{', '.join(changed)}. The push writes only {OWNED_FIELD}; check the rule in the LiveKit dashboard "
                f"({_pushed_so_far(done)})"
            )
        out(f"dispatch rule {plan.label}: updated")
    if done:
        receipt.save()
        out(f"pushed egress settings to {len(done)} of {len(plans)} dispatch rule(s)")
    elif not refused:
        out("no change: LiveKit already holds these settings")
    recorded = [p.label for p in plans if p.rule_id not in refused]
    if recorded:
        out(
            f"inbound calls through {', '.join(recorded)} are recorded by LiveKit into s3://{settings.bucket}/; calls "
            "the agent places (outbound) are recorded by the agent itself (docs/push-egress.md)"
        )
    if refused:
        raise HookError(f"{len(refused)} dispatch rule(s) refused (above); {_pushed_so_far(done)}")


def _blanked_refusal(plan: RulePlan) -> str:
    return (
        f"dispatch rule {plan.label}: refused, nothing pushed to it: LiveKit's listing blanks the fields it marks "
        "sensitive (metadata, attributes, agents' metadata, upload credentials), so the hook cannot tell an empty "
        "field from an erased one, and writing the rule back (a whole-rule replace) could erase them. If the "
        "dashboard shows the rule's metadata, attributes and agents' metadata empty, run again with "
        f"--accept-blanked-fields {plan.rule_id}"
    )


def _pushed_so_far(done: Sequence[str]) -> str:
    return f"already updated: {', '.join(done)}" if done else "nothing was pushed"
