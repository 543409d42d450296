"""Which SIP dispatch rules belong to which environment, and what each records: shared by push-egress and status.

An environment's inbound rules are the rules whose `room_config.agents` dispatch its agent (`livekit.worker_name`),
narrowed by `call_recording.dispatch_rule_ids` / `dispatch_rule_names` when config sets them. A rule is found by
what it does, not by an id copied into config, so a rule recreated in the dashboard is still found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from livekit import api

from callsaver_infra.app.config import EnvironmentConfig


def mask_key(value: str) -> str:
    """An access key or API key as output may show it: its last 4 characters only."""
    return "****" + value[-4:] if len(value) > 8 else "****"


def rule_label(rule: api.SIPDispatchRuleInfo) -> str:
    """`SDR_x "name"`, the way every message names a rule."""
    return f'{rule.sip_dispatch_rule_id} "{rule.name}"' if rule.name else f"{rule.sip_dispatch_rule_id} (no name)"


def dispatched_agents(rule: api.SIPDispatchRuleInfo) -> tuple[str, ...]:
    """The agent names a rule dispatches into the rooms it creates (`room_config.agents`)."""
    if not rule.HasField("room_config"):
        return ()
    return tuple(a.agent_name for a in rule.room_config.agents if a.agent_name)


def current_room_egress(rule: api.SIPDispatchRuleInfo) -> api.RoomCompositeEgressRequest | None:
    """The rule's automatic room egress, or None when calls through it are not recorded automatically."""
    if (
        rule.HasField("room_config")
        and rule.room_config.HasField("egress")
        and rule.room_config.egress.HasField("room")
    ):
        return rule.room_config.egress.room
    return None


def selects(config: EnvironmentConfig, rule: api.SIPDispatchRuleInfo) -> bool:
    """True if rule is one of config's environment's inbound rules."""
    if config.livekit.worker_name not in dispatched_agents(rule):
        return False
    hook = config.call_recording
    if not hook.narrowed:
        return True
    return rule.sip_dispatch_rule_id in hook.dispatch_rule_ids or rule.name in hook.dispatch_rule_names


def owners(envs: Iterable[EnvironmentConfig], rule: api.SIPDispatchRuleInfo) -> list[str]:
    """The environments (of the rule's LiveKit project) that select rule, by name."""
    return sorted(env.name for env in envs if selects(env, rule))


@dataclass(frozen=True)
class RuleSelection:
    """The rules an environment records, and why config's narrowing could not be met (empty when it could)."""

    rules: tuple[api.SIPDispatchRuleInfo, ...]
    problems: tuple[str, ...] = field(default=())


def select_rules(
    config: EnvironmentConfig,
    rules: Sequence[api.SIPDispatchRuleInfo],
    project_envs: Iterable[EnvironmentConfig] = (),
) -> RuleSelection:
    """config's inbound rules among rules; project_envs (other environments of the same project) flag shared rules."""
    agent = config.livekit.worker_name
    hook = config.call_recording
    problems: list[str] = []
    by_id = {r.sip_dispatch_rule_id: r for r in rules}
    names = {r.name for r in rules}
    where = f"config/{config.name}.toml"
    for rule_id in hook.dispatch_rule_ids:
        rule = by_id.get(rule_id)
        if rule is None:
            problems.append(f"dispatch rule {rule_id} (call_recording.dispatch_rule_ids in {where}) does not exist")
        elif agent not in dispatched_agents(rule):
            problems.append(
                f"dispatch rule {rule_label(rule)} (call_recording.dispatch_rule_ids in {where}) does not dispatch "
                f"agent {agent!r}: its calls would not reach this environment's agent; add {agent!r} to its agents"
            )
    for name in hook.dispatch_rule_names:
        if name not in names:
            problems.append(f'no dispatch rule is named "{name}" (call_recording.dispatch_rule_names in {where})')
    chosen = [r for r in rules if selects(config, r)]
    others = [e for e in project_envs if e.name != config.name and e.livekit.url == config.livekit.url]
    for rule in chosen:
        shared = owners(others, rule)
        if shared:
            problems.append(
                f"dispatch rule {rule_label(rule)} dispatches the agents of {config.name} and {', '.join(shared)}: "
                "calls through it would be answered by either environment and recorded by whichever pushed last; "
                "give the rule one environment's agent"
            )
    return RuleSelection(tuple(chosen), tuple(problems))


def recording_summary(rule: api.SIPDispatchRuleInfo) -> str:
    """Where calls through rule are recorded, credentials shown as the key id's last 4 characters at most."""
    egress = current_room_egress(rule)
    if egress is None:
        return "not recorded automatically"
    parts = []
    for output in egress.file_outputs:
        kind = output.WhichOneof("output")
        if kind == "s3":
            s3 = output.s3
            region = s3.region or "no region"
            parts.append(f"s3://{s3.bucket}/{output.filepath} ({region}, key {shown_key(s3.access_key)})")
        else:
            parts.append(f"{kind or 'no storage'}: {output.filepath}")
    return "records to " + "; ".join(parts) if parts else "room egress without file output"


def shown_key(value: str) -> str:
    """A key id as a listing returned it: masked to its last 4, or said to be masked/blank by LiveKit."""
    if not value:
        return "blank in listing"
    if looks_masked(value):
        return "masked in listing"
    return mask_key(value)


# The placeholders livekit/protocol egress/redact.go writes over upload credentials (utils.Redact).
REDACT_PLACEHOLDERS = frozenset(
    {"{access_key}", "{secret}", "{external_id}", "{session_token}", "{credentials}", "{account_name}", "{account_key}"}
)
# utils/redact.go RedactIdentifier: "{abc...xyz}", up to three characters kept at each end.
_REDACTED_IDENTIFIER = re.compile(r"^\{[^{}]{0,3}\.\.\.[^{}]{0,3}\}$")


def looks_masked(value: str) -> bool:
    """True for the forms LiveKit masks a value with: the placeholders of livekit/protocol egress/redact.go
    (`{access_key}`, `{secret}`, ...), `{abc...xyz}` (utils/redact.go RedactIdentifier), `<redacted (N bytes)>`
    (the protos' logger.redact_format), `{...}` query values, or asterisks as consoles show secrets. A filepath
    template such as `{room_name}/{time}` is not a mask."""
    v = value.strip()
    return (
        v in REDACT_PLACEHOLDERS
        or bool(_REDACTED_IDENTIFIER.fullmatch(v))
        or (len(v) >= 3 and set(v) == {"*"})
        or v.startswith("<redacted")
        or "={...}" in v
    )
