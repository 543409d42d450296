"""The egress settings, and the plan for each dispatch rule: what the hook writes, the diff, the read-back check."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from livekit import api

from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.ops.push_egress.credentials import EgressCredentials
from callsaver_infra.ops.push_egress.dispatch_rules import (
    current_room_egress,
    dispatched_agents,
    looks_masked,
    mask_key,
    owners,
    recording_summary,
    rule_label,
)
from callsaver_infra.ops.push_egress.masking import masked_fields, without_credentials
from callsaver_infra.ops.push_egress.outputs import DeployedOutputs
from callsaver_infra.ops.push_egress.owned import OWNED_FIELD, unowned_part

# Field names whose values never appear in a diff: credentials of any storage or stream output LiveKit supports.
_HIDDEN_FIELDS = frozenset(
    {"secret", "session_token", "credentials", "account_key", "assume_role_external_id", "password", "urls", "url"}
)


_LAST4_FIELDS = frozenset({"access_key"})


@dataclass(frozen=True, repr=False)
class EgressSettings:
    """Where and how LiveKit records: one audio-only OGG file per room, uploaded to the bucket with the egress key."""

    bucket: str
    region: str
    filepath_template: str
    credentials: EgressCredentials
    s3_endpoint_url: str | None = None  # only for the local rehearsal; real environments use AWS's endpoint

    def __repr__(self) -> str:
        return (
            f"EgressSettings(bucket={self.bucket!r}, region={self.region!r}, "
            f"filepath_template={self.filepath_template!r}, credentials={self.credentials!r})"
        )


def build_settings(
    config: EnvironmentConfig,
    outputs: DeployedOutputs,
    credentials: EgressCredentials,
    *,
    s3_endpoint_url: str | None = None,
) -> EgressSettings:
    """The settings for config's environment, from its deployed outputs and egress key."""
    return EgressSettings(
        bucket=outputs.bucket_name,
        region=outputs.bucket_region,
        filepath_template=config.call_recording.filepath_template,
        credentials=credentials,
        s3_endpoint_url=s3_endpoint_url,
    )


def s3_upload(settings: EgressSettings) -> api.S3Upload:
    """The S3Upload LiveKit signs uploads with; region always set (LiveKit would otherwise have to guess)."""
    upload = api.S3Upload(
        access_key=settings.credentials.access_key_id,
        secret=settings.credentials.secret_access_key,
        region=settings.region,
        bucket=settings.bucket,
    )
    if settings.s3_endpoint_url:
        upload.endpoint = settings.s3_endpoint_url
        upload.force_path_style = True
    return upload


def room_composite_request(
    settings: EgressSettings, *, filepath: str | None = None, room_name: str = ""
) -> api.RoomCompositeEgressRequest:
    """An audio-only room-composite egress writing one OGG file to the bucket (room_name empty for auto-egress)."""
    return api.RoomCompositeEgressRequest(
        room_name=room_name,
        audio_only=True,
        file_outputs=[
            api.EncodedFileOutput(
                file_type=api.EncodedFileType.OGG,
                filepath=settings.filepath_template if filepath is None else filepath,
                s3=s3_upload(settings),
            )
        ],
    )


def with_room_egress(rule: api.SIPDispatchRuleInfo, request: api.RoomCompositeEgressRequest) -> api.SIPDispatchRuleInfo:
    """A copy of rule whose room_config.egress.room is request; every other field stays as it was read."""
    updated = api.SIPDispatchRuleInfo()
    updated.CopyFrom(rule)
    updated.room_config.egress.room.CopyFrom(request)
    return updated


@dataclass(frozen=True, repr=False)
class RulePlan:
    """What the hook would do to one dispatch rule: nothing, write the recording into it, or refuse it."""

    rule: api.SIPDispatchRuleInfo
    desired: api.RoomCompositeEgressRequest
    fingerprint: str
    receipt: str | None = None  # the fingerprint the last push to this rule recorded, if any

    @property
    def rule_id(self) -> str:
        return self.rule.sip_dispatch_rule_id

    @property
    def label(self) -> str:
        return rule_label(self.rule)

    @property
    def key_state(self) -> str:
        """ "same", "different" or "masked": the access key id LiveKit holds, judged only when the listing shows it."""
        current = current_room_egress(self.rule)
        outputs = list(current.file_outputs) if current is not None else []
        if len(outputs) != 1 or outputs[0].WhichOneof("output") != "s3":
            return "different"
        s3 = outputs[0].s3
        if not s3.access_key or looks_masked(s3.access_key):
            return "masked"
        want = self.desired.file_outputs[0].s3
        if s3.access_key != want.access_key:
            return "different"
        # A visible secret that differs is a rewrite too; a masked or blank one proves nothing either way.
        if s3.secret and not looks_masked(s3.secret) and s3.secret != want.secret:
            return "different"
        return "same"

    @property
    def changed(self) -> bool:
        """True unless LiveKit provably holds these settings: every field it never masks equal, and the key id
        equal where the listing shows it, or recorded by the last push where the listing masks it."""
        current = current_room_egress(self.rule)
        if current is None or without_credentials(current) != without_credentials(self.desired):
            return True
        state = self.key_state
        if state == "masked":
            return self.receipt != self.fingerprint
        return state != "same"

    @property
    def refusal(self) -> str | None:
        """Why writing this rule back could damage it (fields outside the hook's own came back masked), or None."""
        found = masked_fields(self.rule)
        if not found:
            return None
        return (
            f"dispatch rule {self.label}: refused, nothing pushed to it: LiveKit listed {'; '.join(found)}. Writing "
            "the rule back (UpdateSIPDispatchRule replaces the whole rule) would store those masked values. Check "
            "the rule in the LiveKit dashboard; remove or re-enter the masked field there, then run push-egress again"
        )

    def updated_rule(self) -> api.SIPDispatchRuleInfo:
        """The whole rule as it is to be written back (UpdateSIPDispatchRule replaces the rule)."""
        return with_room_egress(self.rule, self.desired)

    def __repr__(self) -> str:
        return f"RulePlan({self.label}, changed={self.changed})"


def changed_fields(before: api.SIPDispatchRuleInfo, after: api.SIPDispatchRuleInfo) -> list[str]:
    """Fields outside the hook's own that differ between two listings of one rule (unknown fields included)."""
    old, new = unowned_part(before), unowned_part(after)
    if old.SerializeToString(deterministic=True) == new.SerializeToString(deterministic=True):
        return []
    a, b = _fields(old), _fields(new)
    paths = sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))
    return paths or ["fields unknown to this client"]


def _flatten(value: Any, path: str, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else key, into)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten(item, f"{path}[{index}]", into)
    else:
        into[path] = value


def _fields(message: Message | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if message is not None:
        _flatten(json_format.MessageToDict(message, preserving_proto_field_name=True), "", fields)
    return fields


def _shown(path: str, value: Any, other: Mapping[str, Any], side: str) -> str:
    leaf = path.rsplit(".", 1)[-1].split("[", 1)[0]
    if isinstance(value, str) and looks_masked(value):
        return "<masked by LiveKit>"
    if leaf in _HIDDEN_FIELDS:
        # Equal values look equal; a changed secret shows as a change, without showing either value.
        return "<hidden>" if other.get(path) == value else f"<hidden, {side}>"
    if leaf in _LAST4_FIELDS and isinstance(value, str):
        return mask_key(value)
    return json.dumps(value)


def render_diff(plan: RulePlan) -> str:
    """The planned change of one rule's room_config.egress.room as a unified diff, credentials masked."""
    before, after = _fields(current_room_egress(plan.rule)), _fields(plan.desired)
    old = [f"{p}: {_shown(p, v, after, 'old')}" for p, v in before.items()] or ["(no automatic recording)"]
    new = [f"{p}: {_shown(p, v, before, 'new')}" for p, v in after.items()]
    lines = difflib.unified_diff(
        old, new, fromfile="in LiveKit now", tofile="after push", lineterm="", n=max(len(old), len(new))
    )
    # The hunk header (@@ -1,7 +1,7 @@) means nothing to a reader: the diff always shows the whole request.
    shown = [f"  {line}" for line in lines if not line.startswith("@@")]
    if old == new:
        reason = "the access key LiveKit holds is masked in its listing and the last push recorded another key"
        shown = [f"  (fields LiveKit shows are equal; {reason})"]
    return f"dispatch rule {plan.label}: {OWNED_FIELD}\n" + "\n".join(shown)


def inventory(rules: Sequence[api.SIPDispatchRuleInfo], envs: Sequence[EnvironmentConfig]) -> str:
    """Every rule of the project: which agents it dispatches, which environment it belongs to, what it records."""
    if not rules:
        return "  (the project has no SIP dispatch rules)"
    lines = []
    for rule in rules:
        agents = ", ".join(dispatched_agents(rule)) or "no agent"
        owner = ", ".join(owners(envs, rule)) or "no environment"
        trunks = ", ".join(rule.trunk_ids) or "any trunk"
        lines.append(f"  {rule_label(rule)}: agents {agents}; {trunks}; belongs to {owner}; {recording_summary(rule)}")
    return "\n".join(lines)
