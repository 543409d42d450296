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
import contextlib
import difflib
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from botocore.exceptions import ClientError
from google.protobuf import json_format
from google.protobuf.message import Message
from livekit import api
from livekit.api.twirp_client import ServerError

from callsaver_infra.app.config import HEALTHCHECK_PREFIX, LOCAL_ACCOUNT, EnvironmentConfig
from callsaver_infra.app.names import (
    EGRESS_SECRET_KEY_ID_FIELD,
    EGRESS_SECRET_SECRET_FIELD,
    EnvNames,
    IamOutputs,
    StorageOutputs,
)
from callsaver_infra.app.secret_catalog import PLACEHOLDER
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
from callsaver_infra.ops.push_egress.egress_key_check import EgressKeyCheckFailed, check_egress_key

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 10.0
# How long --verify lets its test egress record before stopping it, and how long it then waits for the upload.
VERIFY_RECORD_SECONDS = 3.0
VERIFY_WAIT_SECONDS = 60.0
_POLL_SECONDS = 0.25

LIVEKIT_KEY_REF = "backend/LIVEKIT_API_KEY"
LIVEKIT_SECRET_REF = "backend/LIVEKIT_API_SECRET"

_FINAL_OK = api.EgressStatus.EGRESS_COMPLETE
_ACTIVE = (api.EgressStatus.EGRESS_STARTING, api.EgressStatus.EGRESS_ACTIVE, api.EgressStatus.EGRESS_ENDING)

# Field names whose values never appear in a diff: credentials of any storage or stream output LiveKit supports.
_HIDDEN_FIELDS = frozenset(
    {"secret", "session_token", "credentials", "account_key", "assume_role_external_id", "password", "urls", "url"}
)
_LAST4_FIELDS = frozenset({"access_key"})


class HookError(Exception):
    """The hook failed; the message says what, where, and what to do. It never contains a secret."""


class NotReadyError(HookError):
    """Something the hook needs is not there yet (a stack, an output, a secret): deploy or set it first."""


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True, repr=False)
class LiveKitCredentials:
    """The LiveKit API key pair the hook signs its requests with."""

    api_key: str
    api_secret: str

    def __repr__(self) -> str:
        return f"LiveKitCredentials(api_key={mask_key(self.api_key)}, api_secret=<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class EgressCredentials:
    """The egress IAM user's access key, as the IAM stack stored it in Secrets Manager."""

    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:
        return f"EgressCredentials(access_key_id={mask_key(self.access_key_id)}, secret_access_key=<hidden>)"

    __str__ = __repr__


class Redactor:
    """Replaces every known secret (and key id) in a text before it is printed or raised."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def add(self, value: str, shown_as: str = "<hidden>") -> None:
        """Register a value to hide; very short values are ignored (they would mangle ordinary words)."""
        if len(value) >= 6:
            self._values[value] = shown_as

    def add_livekit(self, creds: LiveKitCredentials) -> None:
        """Register a LiveKit key pair."""
        self.add(creds.api_secret)
        self.add(creds.api_key, mask_key(creds.api_key))

    def add_egress(self, creds: EgressCredentials) -> None:
        """Register an egress access key."""
        self.add(creds.secret_access_key)
        self.add(creds.access_key_id, mask_key(creds.access_key_id))

    def __call__(self, text: str) -> str:
        # Longest first, so a secret containing another registered value is replaced whole.
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, self._values[value])
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} values)"


def _read_secret(client: Any, secret_id: str) -> str | None:
    try:
        value: str = client.get_secret_value(SecretId=secret_id)["SecretString"]
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code == "ResourceNotFoundException":
            return None
        raise HookError(f"could not read secret {secret_id}: {code}") from None
    return value


def read_livekit_credentials(client: Any, config: EnvironmentConfig) -> LiveKitCredentials:
    """The API key and secret from callsaver/{env}/backend/LIVEKIT_API_KEY and _SECRET; NotReadyError if unset."""
    names = EnvNames(config.name)
    values = []
    for ref in (LIVEKIT_KEY_REF, LIVEKIT_SECRET_REF):
        name = names.secret(ref)
        value = _read_secret(client, name)
        fix = f"callsaver-infra secrets set --env {config.name} {ref}"
        if value is None:
            raise NotReadyError(f"secret {name} does not exist: deploy {names.secrets_stack}, then run: {fix}")
        if value == PLACEHOLDER or not value.strip():
            state = "still the placeholder" if value == PLACEHOLDER else "empty"
            raise NotReadyError(f"secret {name} is {state}: set it with: {fix}")
        values.append(value.strip())
    return LiveKitCredentials(values[0], values[1])


def read_egress_credentials(client: Any, config: EnvironmentConfig, secret_arn: str) -> EgressCredentials:
    """The egress access key from the IAM stack's secret, JSON {"accessKeyId": ..., "secretAccessKey": ...}."""
    names = EnvNames(config.name)
    value = _read_secret(client, secret_arn)
    if value is None:
        raise NotReadyError(
            f"secret {secret_arn} (egress credentials, output {IamOutputs.CREDENTIALS_SECRET_ARN} of "
            f"{names.iam_stack}) does not exist: deploy it with make deploy ENV={config.name}"
        )
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    key_id = data.get(EGRESS_SECRET_KEY_ID_FIELD) if isinstance(data, dict) else None
    secret = data.get(EGRESS_SECRET_SECRET_FIELD) if isinstance(data, dict) else None
    if not (isinstance(key_id, str) and key_id and isinstance(secret, str) and secret):
        # Never quote the value: it is (or contains) the secret access key.
        raise HookError(
            f"secret {secret_arn} is not JSON with non-empty accessKeyId and secretAccessKey: it is written by "
            f"{names.iam_stack}; redeploy it (bump egress.access_key_serial in config/{config.name}.toml to issue "
            "a new key)"
        )
    return EgressCredentials(key_id, secret)


# --------------------------------------------------------------------------- deployed stack outputs


@dataclass(frozen=True)
class DeployedOutputs:
    """What the hook needs from the deployed stacks, and where it was read from."""

    bucket_name: str
    bucket_region: str
    credentials_secret_arn: str
    access_key_id: str
    source: str


def _required_outputs(config: EnvironmentConfig) -> list[tuple[str, str]]:
    names = EnvNames(config.name)
    return [
        (names.storage_stack, StorageOutputs.BUCKET_NAME),
        (names.storage_stack, StorageOutputs.BUCKET_REGION),
        (names.iam_stack, IamOutputs.CREDENTIALS_SECRET_ARN),
        (names.iam_stack, IamOutputs.ACCESS_KEY_ID),
    ]


def _pick_outputs(
    config: EnvironmentConfig, stacks: Mapping[str, Mapping[str, Any]], source: str, status: Mapping[str, str]
) -> DeployedOutputs:
    values = []
    for stack, key in _required_outputs(config):
        outputs = stacks.get(stack)
        if outputs is None:
            raise NotReadyError(
                f"stack {stack} is not deployed ({source} has no such stack): run make deploy ENV={config.name}; "
                f"if the environment was destroyed (its bucket and secrets are retained, so a plain deploy fails), "
                f'first run callsaver-infra adopt-retained --env {config.name} (README, "Redeploying after a '
                'destroy")'
            )
        value = outputs.get(key)
        if not isinstance(value, str) or not value:
            state = f" (status {status[stack]})" if stack in status else ""
            raise NotReadyError(
                f"stack {stack}{state} has no output {key} ({source}): deploy it with make deploy ENV={config.name}"
            )
        values.append(value)
    return DeployedOutputs(values[0], values[1], values[2], values[3], source)


def outputs_from_file(path: Path, config: EnvironmentConfig) -> DeployedOutputs:
    """Outputs from the JSON `cdk deploy --outputs-file` writes: {"StackName": {"OutputKey": "value"}}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotReadyError(
            f"outputs file {path} not found: run make deploy ENV={config.name}, or leave out --outputs-file to "
            "read the outputs from CloudFormation"
        ) from None
    except ValueError as e:
        raise HookError(f"outputs file {path} is not JSON ({e}); it is written by cdk deploy --outputs-file") from None
    if not isinstance(data, dict):
        raise HookError(f"outputs file {path} is not a JSON object of stacks; it is written by cdk deploy")
    stacks = {name: value for name, value in data.items() if isinstance(value, dict)}
    return _pick_outputs(config, stacks, f"outputs file {path}", {})


def outputs_from_cloudformation(client: Any, config: EnvironmentConfig) -> DeployedOutputs:
    """Outputs from CloudFormation DescribeStacks, in the environment's account and region."""
    stacks: dict[str, dict[str, str]] = {}
    status: dict[str, str] = {}
    for stack in dict.fromkeys(stack for stack, _ in _required_outputs(config)):
        try:
            described = client.describe_stacks(StackName=stack)["Stacks"][0]
        except ClientError as e:
            if e.response["Error"]["Code"] == "ValidationError" and "does not exist" in str(e):
                continue  # reported below, naming the stack
            raise HookError(f"CloudFormation DescribeStacks {stack}: {e.response['Error']['Code']}") from None
        status[stack] = described["StackStatus"]
        stacks[stack] = {o["OutputKey"]: o.get("OutputValue", "") for o in described.get("Outputs", [])}
    where = f"CloudFormation in account {config.account}, {config.region}"
    return _pick_outputs(config, stacks, where, status)


# --------------------------------------------------------------------------- the egress settings


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
        filepath_template=config.livekit_egress.filepath_template,
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


# The part of a rule the hook owns and writes. Everything else is the operator's and goes back exactly as read.
OWNED_FIELD = "room_config.egress.room"
# Credentials inside an upload: LiveKit may hand them back masked (egress/redact.go) or blanked (utils/proto.go).
_CREDENTIAL_FIELDS = {
    "S3Upload": ("access_key", "secret", "session_token", "assume_role_external_id"),
    "GCPUpload": ("credentials",),
    "AzureBlobUpload": ("account_name", "account_key"),
    "AliOSSUpload": ("access_key", "secret"),
}


def unowned_part(rule: api.SIPDispatchRuleInfo) -> api.SIPDispatchRuleInfo:
    """The rule without the field the hook owns and without `updated_at` (which every write moves)."""
    part = api.SIPDispatchRuleInfo()
    part.CopyFrom(rule)
    if part.HasField("room_config") and part.room_config.HasField("egress"):
        part.room_config.egress.ClearField("room")
        if not part.room_config.egress.ListFields():
            part.room_config.ClearField("egress")  # "no egress" and "an egress with nothing but ours" are one state
    part.ClearField("updated_at")
    return part


def _walk(message: Message, path: str) -> Iterator[tuple[str, Message, Any, Any]]:
    """(path, message, field descriptor, value) for every set field, depth first; list and map items expanded."""
    for fd, value in message.ListFields():
        here = f"{path}.{fd.name}" if path else fd.name
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            for key in value:
                item = value[key]
                if isinstance(item, Message):
                    yield from _walk(item, f"{here}[{key!r}]")
                else:
                    yield f"{here}[{key!r}]", message, fd, item
        elif fd.is_repeated:
            for index, item in enumerate(value):
                if isinstance(item, Message):
                    yield from _walk(item, f"{here}[{index}]")
                else:
                    yield f"{here}[{index}]", message, fd, item
        elif isinstance(value, Message):
            yield here, message, fd, value
            yield from _walk(value, here)
        else:
            yield here, message, fd, value


def _uploads(message: Message, path: str = "") -> Iterator[tuple[str, Message]]:
    if message.DESCRIPTOR.name in _CREDENTIAL_FIELDS:
        yield path, message
    for here, _, _, value in _walk(message, path):
        if isinstance(value, Message) and value.DESCRIPTOR.name in _CREDENTIAL_FIELDS:
            yield here, value


def _upload_problem(upload: Any) -> str | None:
    """Why an upload's credentials look masked or blanked by a listing, or None if they look real."""
    names = _CREDENTIAL_FIELDS[upload.DESCRIPTOR.name]
    values = {name: getattr(upload, name) for name in names}
    masked = [name for name, value in values.items() if value and looks_masked(value)]
    if masked:
        return f"{', '.join(masked)} came back masked ({values[masked[0]]})"
    if upload.DESCRIPTOR.name == "S3Upload" and not upload.assume_role_arn:
        if values["access_key"] and not values["secret"]:
            return "secret came back empty beside its access_key"
        if values["secret"] and not values["access_key"]:
            return "access_key came back empty beside its secret"
        if upload.bucket and not values["access_key"]:
            return "access_key and secret came back empty (LiveKit Cloud cannot upload without them)"
    elif upload.DESCRIPTOR.name == "GCPUpload" and upload.bucket and not values["credentials"]:
        return "credentials came back empty"
    elif any(values.values()) and not all(values.values()):
        return "one credential came back empty beside the other"
    return None


def masked_fields(rule: api.SIPDispatchRuleInfo) -> list[str]:
    """Fields outside the hook's own that look masked or blanked in this listing: writing them back would damage the
    rule. Masks: `{placeholder}` and `{abc...xyz}` (livekit/protocol egress/redact.go, utils/redact.go), asterisks,
    `<redacted (N bytes)>` (logger.redact_format), an upload secret emptied beside its key id (utils/proto.go)."""
    part = unowned_part(rule)
    found = []
    for path, upload in _uploads(part):
        problem = _upload_problem(upload)
        if problem:
            found.append(f"{path}: {problem}")
    upload_paths = [p for p, _ in _uploads(part)]
    for path, _, _fd, value in _walk(part, ""):
        if isinstance(value, str) and looks_masked(value) and not any(path.startswith(p) for p in upload_paths):
            found.append(f"{path} = {value!r} looks masked")
    return found


def listing_blanks(rules: Sequence[api.SIPDispatchRuleInfo]) -> bool | None:
    """Whether this listing blanks sensitive fields (livekit/protocol utils/proto.go CloneProtoRedacted clears every
    field marked PII or secret): True if an upload anywhere came back with its credentials emptied, False if one
    came back with credentials present (masked or not), None if no rule holds an upload to judge by."""
    verdict: bool | None = None
    for rule in rules:
        for _, upload in _uploads(rule):
            names = _CREDENTIAL_FIELDS[upload.DESCRIPTOR.name]
            if any(getattr(upload, n) for n in names):
                verdict = False if verdict is None else verdict
            elif getattr(upload, "bucket", "") or getattr(upload, "container_name", ""):
                return True
    return verdict


def credential_fingerprint(credentials: EgressCredentials) -> str:
    """A one-way digest of the egress key pair: what the push receipt records instead of the key itself."""
    digest = hashlib.sha256(f"{credentials.access_key_id}\n{credentials.secret_access_key}".encode())
    return "sha256:" + digest.hexdigest()[:32]


def _without_credentials(request: api.RoomCompositeEgressRequest) -> api.RoomCompositeEgressRequest:
    copy = api.RoomCompositeEgressRequest()
    copy.CopyFrom(request)
    for _, upload in _uploads(copy):
        for name in _CREDENTIAL_FIELDS[upload.DESCRIPTOR.name]:
            upload.ClearField(name)
    return copy


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
        if current is None or _without_credentials(current) != _without_credentials(self.desired):
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


# --------------------------------------------------------------------------- LiveKit


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for connection errors, timeouts and 5xx: `attempts` tries, backoff doubling from `backoff`."""

    attempts: int = 3
    backoff_seconds: float = 0.5

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after the failed_attempt-th try (0-based)."""
        return self.backoff_seconds * 2.0**failed_attempt


DEFAULT_RETRY = RetryPolicy()


def api_url(url: str) -> str:
    """The HTTP(S) URL of LiveKit's server API for a WebSocket URL (wss:// -> https://, ws:// -> http://)."""
    if url.startswith("wss://"):
        return "https://" + url.removeprefix("wss://")
    if url.startswith("ws://"):
        return "http://" + url.removeprefix("ws://")
    return url


class LiveKitSession:
    """The LiveKit server API with every call bounded by a timeout and retried; failures become HookError."""

    def __init__(
        self,
        url: str,
        credentials: LiveKitCredentials,
        *,
        env: str,
        redact: Redactor,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.url = api_url(url)
        self._credentials = credentials
        self._env = env
        self._redact = redact
        self._timeout = timeout
        self._retry = retry
        self._api: api.LiveKitAPI | None = None

    def __repr__(self) -> str:
        return f"LiveKitSession({self.url})"

    async def __aenter__(self) -> LiveKitSession:
        # failover=False: the SDK's own region failover (livekit.cloud hosts only) would multiply our bounded
        # retries; one retry loop, here, keeps the worst-case time predictable.
        self._api = api.LiveKitAPI(self.url, self._credentials.api_key, self._credentials.api_secret, failover=False)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    async def call(self, what: str, fn: Callable[[api.LiveKitAPI], Awaitable[T]], *, retry: bool = True) -> T:
        """Run fn(api) under asyncio.wait_for (the SDK ignores its own timeout), retrying what may pass next time."""
        assert self._api is not None, "use `async with LiveKitSession(...)`"
        attempts = self._retry.attempts if retry else 1
        for attempt in range(attempts):
            try:
                return await asyncio.wait_for(fn(self._api), timeout=self._timeout)
            except ServerError as e:
                if e.status in (401, 403):
                    raise self._auth_error(what, e) from None
                if e.status < 500 and e.status != 429:
                    raise HookError(
                        self._redact(f"LiveKit at {self.url} rejected {what}: {e.status} {e.code}: {e.message}")
                    ) from None
                failure = f"answered {e.status} {e.code}: {e.message}"
                server_side = True
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                failure = (
                    f"did not answer within {self._timeout:g} s"
                    if isinstance(e, TimeoutError)
                    else f"is unreachable ({type(e).__name__}: {e})"
                )
                server_side = False
            if attempt + 1 < attempts:
                await asyncio.sleep(self._retry.delay(attempt))
        hint = (
            "LiveKit is failing on its side; try again later (https://status.livekit.io)"
            if server_side
            else f"check livekit.url in config/{self._env}.toml and the network"
        )
        raise HookError(
            self._redact(f"LiveKit at {self.url} {failure} ({what}, {attempts} attempt(s) with backoff): {hint}")
        )

    def _auth_error(self, what: str, e: ServerError) -> HookError:
        names = EnvNames(self._env)
        # A bad token gets a plain-text 401 (livekit/livekit pkg/service/auth.go), which the SDK reports as code
        # "unknown" with no message; a missing grant gets Twirp's unauthenticated "permissions denied".
        answer = f"{e.status} {e.code}: {e.message}" if e.message else f"{e.status} (the token was not accepted)"
        return HookError(
            self._redact(
                f"LiveKit at {self.url} refused {what}: {answer}. The API key in secret "
                f"{names.secret(LIVEKIT_KEY_REF)} (with {names.secret(LIVEKIT_SECRET_REF)}) is wrong, belongs to "
                f"another project, or lacks the grant; set the pair with: callsaver-infra secrets set --env "
                f"{self._env} {LIVEKIT_KEY_REF} (and {LIVEKIT_SECRET_REF})"
            )
        )

    async def list_dispatch_rules(self, rule_ids: Sequence[str] = ()) -> list[api.SIPDispatchRuleInfo]:
        """The project's SIP dispatch rules (only rule_ids, when given)."""
        request = api.ListSIPDispatchRuleRequest(dispatch_rule_ids=list(rule_ids))
        response = await self.call("ListSIPDispatchRule", lambda lk: lk.sip.list_dispatch_rule(request))
        return list(response.items)

    async def replace_dispatch_rule(self, rule: api.SIPDispatchRuleInfo) -> api.SIPDispatchRuleInfo:
        """Write the whole rule back; retrying is safe because a replace is idempotent."""
        rule_id = rule.sip_dispatch_rule_id
        return await self.call(
            f"UpdateSIPDispatchRule {rule_id}", lambda lk: lk.sip.update_dispatch_rule(rule_id, rule)
        )

    async def set_rule_attribute(self, rule_id: str, key: str, value: str) -> None:
        """Set (or, with "", remove) one attribute through the field update, which merges and touches nothing else
        (livekit/protocol livekit/sip.go SIPDispatchRuleUpdate.Apply: applyMapDiff)."""
        await self.call(
            f"UpdateSIPDispatchRule {rule_id} (attribute {key})",
            lambda lk: lk.sip.update_dispatch_rule_fields(rule_id, attributes={key: value}),
        )


# --------------------------------------------------------------------------- --verify

# The page the --verify web egress records. livekit/egress accepts only http(s) URLs (pkg/config/pipeline.go
# isHttp) and fails the egress when the page answers >= 400 (pkg/pipeline/source/web.go navigate); example.com is
# IANA's reserved, always-200, script-free page, so the recording is a few seconds of silence and nothing else.
VERIFY_PAGE_URL = "https://example.com/"
VERIFY_START_SECONDS = 60.0


@dataclass(frozen=True)
class VerifyResult:
    """How the --verify test recording went."""

    ok: bool
    egress_id: str
    key: str
    detail: str


async def _egress_info(session: LiveKitSession, egress_id: str) -> api.EgressInfo:
    response = await session.call(
        "ListEgress", lambda lk: lk.egress.list_egress(api.ListEgressRequest(egress_id=egress_id))
    )
    items = [item for item in response.items if item.egress_id == egress_id]
    if not items:
        raise HookError(f"LiveKit at {session.url} no longer lists egress {egress_id}")
    return items[0]


async def _wait_while(
    session: LiveKitSession, egress_id: str, statuses: Sequence[int], seconds: float
) -> api.EgressInfo:
    deadline = time.monotonic() + seconds
    while True:
        info = await _egress_info(session, egress_id)
        if info.status not in statuses or time.monotonic() >= deadline:
            return info
        await asyncio.sleep(_POLL_SECONDS)


def verify_request(settings: EgressSettings, key: str) -> api.WebEgressRequest:
    """An audio-only web egress of VERIFY_PAGE_URL, uploaded as one OGG file with the push's bucket, region and key.

    Why a web egress: it starts once its page has loaded, with no participant (livekit/egress
    pkg/pipeline/source/web.go: without await_start_signal the start fuse is broken at once), whereas a room
    composite of an empty room never starts and a stop aborts it without an upload (pkg/pipeline/source/sdk.go,
    pkg/server/controller.go).
    """
    return api.WebEgressRequest(
        url=VERIFY_PAGE_URL,
        audio_only=True,
        file_outputs=[api.EncodedFileOutput(file_type=api.EncodedFileType.OGG, filepath=key, s3=s3_upload(settings))],
    )


async def verify_egress(
    session: LiveKitSession,
    settings: EgressSettings,
    object_exists: Callable[[str, str], bool],
    *,
    redact: Redactor,
    record_seconds: float = VERIFY_RECORD_SECONDS,
    start_seconds: float = VERIFY_START_SECONDS,
    wait_seconds: float = VERIFY_WAIT_SECONDS,
    now: datetime | None = None,
) -> VerifyResult:
    """Record a few seconds of a web page into `_healthcheck/` with the pushed S3 settings; check S3 has the file.

    object_exists(bucket, key) runs with the operator's AWS credentials: the egress user may write, not read.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    key = f"{HEALTHCHECK_PREFIX}verify-{stamp}-{secrets.token_hex(3)}.ogg"
    request = verify_request(settings, key)
    started = await session.call("StartWebEgress", lambda lk: lk.egress.start_web_egress(request), retry=False)
    egress_id = started.egress_id
    info = await _wait_while(session, egress_id, (api.EgressStatus.EGRESS_STARTING,), start_seconds)
    if info.status == api.EgressStatus.EGRESS_ACTIVE:
        info = await _wait_while(session, egress_id, (api.EgressStatus.EGRESS_ACTIVE,), record_seconds)
    if info.status in (api.EgressStatus.EGRESS_STARTING, api.EgressStatus.EGRESS_ACTIVE):
        # It may end between the poll and the stop; the wait below tells either way.
        with contextlib.suppress(HookError):
            await session.call(
                "StopEgress", lambda lk: lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
            )
        info = await _wait_while(session, egress_id, _ACTIVE, wait_seconds)

    status = api.EgressStatus.Name(info.status)
    if info.status in _ACTIVE:
        return VerifyResult(False, egress_id, key, f"egress {egress_id} is still {status} after {wait_seconds:g} s")
    if info.status != _FINAL_OK:
        error = redact(info.error or "(LiveKit gave no error text)")
        return VerifyResult(False, egress_id, key, f"egress {egress_id} ended {status}: {error}")
    results = list(info.file_results) or ([info.file] if info.HasField("file") else [])
    written = results[0].filename if results else ""
    if not written:
        return VerifyResult(False, egress_id, key, f"egress {egress_id} completed but reported no file")
    exists = await asyncio.to_thread(object_exists, settings.bucket, written)
    if not exists:
        detail = f"egress {egress_id} reported s3://{settings.bucket}/{written} written, but S3 has no such object"
        return VerifyResult(False, egress_id, written, detail)
    return VerifyResult(True, egress_id, written, f"s3://{settings.bucket}/{written} written by egress {egress_id}")


def s3_object_exists(client: Any) -> Callable[[str, str], bool]:
    """object_exists for verify_egress: HeadObject with the given (operator's) S3 client."""

    def exists(bucket: str, key: str) -> bool:
        try:
            client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            code = e.response["Error"]["Code"]
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise HookError(
                f"HeadObject s3://{bucket}/{key} with your AWS credentials failed ({code}): they need s3:GetObject "
                "on the bucket to check the test recording"
            ) from None
        return True

    return exists


# --------------------------------------------------------------------------- the push receipt


class PushReceipt:
    """Which key pair the last push wrote into each rule, as one-way fingerprints in an SSM parameter.

    LiveKit may list a rule with its access key id masked (egress/redact.go `{access_key}`) or blanked
    (utils/proto.go), and then only this record tells a rotated key from the one LiveKit holds.
    """

    def __init__(self, client: Any, name: str) -> None:
        self._client = client
        self.name = name
        self.entries: dict[str, str] = {}
        self.readable = True

    def load(self) -> PushReceipt:
        try:
            value = self._client.get_parameter(Name=self.name)["Parameter"]["Value"]
        except ClientError as e:
            # No receipt means "unknown": the push then rewrites, which is safe.
            self.readable = e.response["Error"]["Code"] == "ParameterNotFound"
            return self
        try:
            data = json.loads(value)
        except ValueError:
            data = {}
        if isinstance(data, dict):
            self.entries = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
        return self

    def save(self) -> None:
        value = json.dumps(dict(sorted(self.entries.items())), separators=(",", ":"))
        try:
            self._client.put_parameter(Name=self.name, Value=value, Type="String", Overwrite=True)
        except ClientError as e:
            raise HookError(
                f"pushed, but could not record the push in SSM parameter {self.name} "
                f"({e.response['Error']['Code']}): the next run will push again; the deploy role needs "
                "ssm:PutParameter on it"
            ) from None


# --------------------------------------------------------------------------- the hook


# The probe attribute the hook sets and removes to learn whether LiveKit's listing blanks sensitive fields.
PROBE_ATTRIBUTE = "callsaver.listing-probe"


@dataclass(frozen=True)
class HookOptions:
    """The push-egress command line."""

    outputs_file: Path | None = None
    dry_run: bool = False
    verify: bool = False
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
    pushing = config.livekit_egress.auto_egress and not options.dry_run
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
    if not config.livekit_egress.auto_egress:
        out(
            f"recording of inbound calls is off (livekit_egress.auto_egress = false in config/{config.name}.toml): "
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
        if config.livekit_egress.auto_egress:
            await _push(config, options, settings, session, receipt, out)
        if s3 is None:
            return None
        out(
            f"verify: recording {VERIFY_PAGE_URL} (web egress, audio only) to s3://{settings.bucket}/{HEALTHCHECK_PREFIX}..."
        )
        result = await verify_egress(session, settings, s3_object_exists(s3), redact=redact)
        if result.ok:
            out(f"verify: ok: {result.detail}")
        return result


async def _listing_blanks(session: LiveKitSession, rule: api.SIPDispatchRuleInfo) -> bool:
    """Ask LiveKit whether its listing blanks sensitive fields, by setting an attribute (a field marked PII) with the
    merging field update, reading the rule back and removing the attribute again."""
    rule_id = rule.sip_dispatch_rule_id
    await session.set_rule_attribute(rule_id, PROBE_ATTRIBUTE, "1")
    try:
        listed = await session.list_dispatch_rules([rule_id])
    finally:
        await session.set_rule_attribute(rule_id, PROBE_ATTRIBUTE, "")
    attributes = listed[0].attributes if listed else {}
    return attributes.get(PROBE_ATTRIBUTE) != "1"


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
            f"with livekit_egress.dispatch_rule_ids in config/{config.name}.toml. The project's rules:\n"
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
            if probe and await _listing_blanks(session, plan.rule):
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
            'the agent places (outbound) are recorded by the agent itself (README, "Which calls are recorded")'
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
