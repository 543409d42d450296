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
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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

from callsaver_infra.config import HEALTHCHECK_PREFIX, EnvironmentConfig
from callsaver_infra.names import EnvNames, IamOutputs, StorageOutputs
from callsaver_infra.secret_catalog import PLACEHOLDER

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


def mask_key(value: str) -> str:
    """An access key or API key as output may show it: its last 4 characters only."""
    return "****" + value[-4:] if len(value) > 8 else "****"


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
    key_id = data.get("accessKeyId") if isinstance(data, dict) else None
    secret = data.get("secretAccessKey") if isinstance(data, dict) else None
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
    source: str


def _required_outputs(config: EnvironmentConfig) -> list[tuple[str, str]]:
    names = EnvNames(config.name)
    return [
        (names.storage_stack, StorageOutputs.BUCKET_NAME),
        (names.storage_stack, StorageOutputs.BUCKET_REGION),
        (names.iam_stack, IamOutputs.CREDENTIALS_SECRET_ARN),
    ]


def _pick_outputs(
    config: EnvironmentConfig, stacks: Mapping[str, Mapping[str, Any]], source: str, status: Mapping[str, str]
) -> DeployedOutputs:
    values = []
    for stack, key in _required_outputs(config):
        outputs = stacks.get(stack)
        if outputs is None:
            raise NotReadyError(
                f"stack {stack} is not deployed ({source} has no such stack): run make deploy ENV={config.name}"
            )
        value = outputs.get(key)
        if not isinstance(value, str) or not value:
            state = f" (status {status[stack]})" if stack in status else ""
            raise NotReadyError(
                f"stack {stack}{state} has no output {key} ({source}): deploy it with make deploy ENV={config.name}"
            )
        values.append(value)
    return DeployedOutputs(values[0], values[1], values[2], source)


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
    """A copy of rule whose room_config.egress.room is request; every other field stays as it was."""
    updated = api.SIPDispatchRuleInfo()
    updated.CopyFrom(rule)
    updated.room_config.egress.room.CopyFrom(request)
    return updated


def current_room_egress(rule: api.SIPDispatchRuleInfo) -> api.RoomCompositeEgressRequest | None:
    """The rule's automatic room egress, or None when calls through it are not recorded automatically."""
    if (
        rule.HasField("room_config")
        and rule.room_config.HasField("egress")
        and rule.room_config.egress.HasField("room")
    ):
        return rule.room_config.egress.room
    return None


@dataclass(frozen=True, repr=False)
class RulePlan:
    """What the hook would do to one dispatch rule."""

    rule: api.SIPDispatchRuleInfo
    desired: api.RoomCompositeEgressRequest

    @property
    def rule_id(self) -> str:
        return self.rule.sip_dispatch_rule_id

    @property
    def label(self) -> str:
        return _rule_label(self.rule)

    @property
    def changed(self) -> bool:
        # A secret LiveKit hands back redacted compares unequal, so the hook then pushes: safe, just not a no-op.
        return current_room_egress(self.rule) != self.desired

    def updated_rule(self) -> api.SIPDispatchRuleInfo:
        """The whole rule as it is to be written back (UpdateSIPDispatchRule replaces the rule)."""
        return with_room_egress(self.rule, self.desired)

    def __repr__(self) -> str:
        return f"RulePlan({self.label}, changed={self.changed})"


def _rule_label(rule: api.SIPDispatchRuleInfo) -> str:
    return f'{rule.sip_dispatch_rule_id} "{rule.name}"' if rule.name else f"{rule.sip_dispatch_rule_id} (no name)"


def plan_updates(
    config: EnvironmentConfig,
    rules: Sequence[api.SIPDispatchRuleInfo],
    desired: api.RoomCompositeEgressRequest,
    livekit_url: str,
) -> list[RulePlan]:
    """One plan per rule config names; HookError listing the existing rules when one of them does not exist."""
    by_id = {r.sip_dispatch_rule_id: r for r in rules}
    wanted = config.livekit_egress.dispatch_rule_ids
    missing = [rule_id for rule_id in wanted if rule_id not in by_id]
    if missing:
        existing = "; ".join(_rule_label(r) for r in rules) or "none"
        raise HookError(
            f"dispatch rule {', '.join(missing)} (livekit_egress.dispatch_rule_ids in config/{config.name}.toml) "
            f"does not exist in the LiveKit project at {livekit_url}. Rules that exist: {existing}. Fix "
            "dispatch_rule_ids (see `lk sip dispatch list`); nothing was pushed"
        )
    return [RulePlan(by_id[rule_id], desired) for rule_id in wanted]


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
    return f"dispatch rule {plan.label}: room_config.egress.room\n" + "\n".join(shown)


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
        return HookError(
            self._redact(
                f"LiveKit at {self.url} refused {what}: {e.status} {e.code}: {e.message}. The API key in secret "
                f"{names.secret(LIVEKIT_KEY_REF)} (with {names.secret(LIVEKIT_SECRET_REF)}) is wrong, belongs to "
                f"another project, or lacks the grant; set the pair with: callsaver-infra secrets set --env "
                f"{self._env} {LIVEKIT_KEY_REF} (and {LIVEKIT_SECRET_REF})"
            )
        )

    async def list_dispatch_rules(self) -> list[api.SIPDispatchRuleInfo]:
        """Every SIP dispatch rule of the project."""
        response = await self.call(
            "ListSIPDispatchRule", lambda lk: lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
        )
        return list(response.items)

    async def replace_dispatch_rule(self, rule: api.SIPDispatchRuleInfo) -> api.SIPDispatchRuleInfo:
        """Write the whole rule back; retrying is safe because a replace is idempotent."""
        rule_id = rule.sip_dispatch_rule_id
        return await self.call(
            f"UpdateSIPDispatchRule {rule_id}", lambda lk: lk.sip.update_dispatch_rule(rule_id, rule)
        )


# --------------------------------------------------------------------------- --verify


@dataclass(frozen=True)
class VerifyResult:
    """How the --verify test recording went."""

    ok: bool
    room: str
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


async def _wait_final(session: LiveKitSession, egress_id: str, seconds: float) -> api.EgressInfo:
    deadline = time.monotonic() + seconds
    while True:
        info = await _egress_info(session, egress_id)
        if info.status not in _ACTIVE or time.monotonic() >= deadline:
            return info
        await asyncio.sleep(_POLL_SECONDS)


async def verify_egress(
    session: LiveKitSession,
    settings: EgressSettings,
    object_exists: Callable[[str, str], bool],
    *,
    redact: Redactor,
    record_seconds: float = VERIFY_RECORD_SECONDS,
    wait_seconds: float = VERIFY_WAIT_SECONDS,
    now: datetime | None = None,
) -> VerifyResult:
    """Record a few seconds of an empty `_healthcheck-<time>` room under _healthcheck/ and check S3 has the file.

    object_exists(bucket, key) runs with the operator's AWS credentials: the egress user may write, not read.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    room = f"_healthcheck-{stamp}"
    await session.call("CreateRoom", lambda lk: lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=60)))
    try:
        request = room_composite_request(settings, filepath=HEALTHCHECK_PREFIX + "{time}", room_name=room)
        started = await session.call(
            "StartRoomCompositeEgress", lambda lk: lk.egress.start_room_composite_egress(request), retry=False
        )
        egress_id = started.egress_id
        info = await _wait_final(session, egress_id, record_seconds)
        if info.status in _ACTIVE:
            # It may have ended between the poll and the stop; the wait below tells either way.
            with contextlib.suppress(HookError):
                await session.call(
                    "StopEgress", lambda lk: lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
                )
            info = await _wait_final(session, egress_id, wait_seconds)
    finally:
        # The room closes itself after empty_timeout anyway; a failed clean-up is not a failed check.
        with contextlib.suppress(HookError):
            await session.call(
                "DeleteRoom", lambda lk: lk.room.delete_room(api.DeleteRoomRequest(room=room)), retry=False
            )

    status = api.EgressStatus.Name(info.status)
    if info.status in _ACTIVE:
        return VerifyResult(
            False, room, egress_id, "", f"egress {egress_id} is still {status} after {wait_seconds:g} s"
        )
    if info.status != _FINAL_OK:
        error = redact(info.error or "(LiveKit gave no error text)")
        return VerifyResult(False, room, egress_id, "", f"egress {egress_id} ended {status}: {error}")
    results = list(info.file_results) or ([info.file] if info.HasField("file") else [])
    key = results[0].filename if results else ""
    if not key:
        return VerifyResult(False, room, egress_id, "", f"egress {egress_id} completed but reported no file")
    exists = await asyncio.to_thread(object_exists, settings.bucket, key)
    if not exists:
        detail = f"egress {egress_id} reported s3://{settings.bucket}/{key} written, but S3 has no such object"
        return VerifyResult(False, room, egress_id, key, detail)
    return VerifyResult(True, room, egress_id, key, f"s3://{settings.bucket}/{key} written by egress {egress_id}")


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


# --------------------------------------------------------------------------- the hook


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


def run_hook(
    config: EnvironmentConfig,
    options: HookOptions,
    aws: Callable[[str], Any],
    out: Callable[[str], None] = print,
) -> None:
    """Push (or, dry run, show) the environment's egress settings, then optionally --verify; HookError on failure.

    aws(service) returns a boto3 client for the environment; out prints a line of the report.
    """
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
    settings = build_settings(config, outputs, egress_creds, s3_endpoint_url=options.s3_endpoint_url)
    hook = config.livekit_egress
    out(
        f"{config.name}: recordings go to s3://{settings.bucket}/{settings.filepath_template}.ogg "
        f"({settings.region}), access key {mask_key(egress_creds.access_key_id)} (outputs from {outputs.source})"
    )
    if not hook.auto_egress:
        out(
            f"auto-egress is off (livekit_egress.auto_egress = false in config/{config.name}.toml): nothing is "
            "pushed to LiveKit. The backend starts each recording itself, with:"
        )
        out(f"  bucket             {settings.bucket}")
        out(f"  region             {settings.region}")
        out(f"  credentials secret {outputs.credentials_secret_arn}")
        out(f"  access key         {mask_key(egress_creds.access_key_id)}")
        out(f"  file path          {settings.filepath_template} (LiveKit appends .ogg)")
        if not options.verify:
            return
    livekit_creds = read_livekit_credentials(secretsmanager, config)
    redact.add_livekit(livekit_creds)
    url = options.livekit_url or config.livekit.url
    verify_client = aws("s3") if options.verify else None
    result = asyncio.run(_talk_to_livekit(config, options, settings, livekit_creds, url, redact, verify_client, out))
    if result is not None and not result.ok:
        raise HookError(f"--verify failed: {result.detail} (test room {result.room})")


async def _talk_to_livekit(
    config: EnvironmentConfig,
    options: HookOptions,
    settings: EgressSettings,
    credentials: LiveKitCredentials,
    url: str,
    redact: Redactor,
    s3: Any,
    out: Callable[[str], None],
) -> VerifyResult | None:
    async with LiveKitSession(
        url, credentials, env=config.name, redact=redact, timeout=options.timeout, retry=options.retry
    ) as session:
        if config.livekit_egress.auto_egress:
            await _push(config, options, settings, session, out)
        if s3 is None:
            return None
        out(f"verify: recording a test room to s3://{settings.bucket}/{HEALTHCHECK_PREFIX}...")
        result = await verify_egress(session, settings, s3_object_exists(s3), redact=redact)
        if result.ok:
            out(f"verify: ok: {result.detail}")
        return result


async def _push(
    config: EnvironmentConfig,
    options: HookOptions,
    settings: EgressSettings,
    session: LiveKitSession,
    out: Callable[[str], None],
) -> None:
    try:
        rules = await session.list_dispatch_rules()
    except HookError as e:
        raise HookError(f"{e}; nothing was pushed") from None
    plans = plan_updates(config, rules, room_composite_request(settings), session.url)
    changed = [p for p in plans if p.changed]
    for plan in plans:
        if plan.changed:
            out(render_diff(plan))
        else:
            out(f"dispatch rule {plan.label}: LiveKit already holds these settings; nothing changed")
    if options.dry_run:
        out(
            f"dry run: would update {len(changed)} of {len(plans)} dispatch rule(s); nothing was pushed"
            if changed
            else "dry run: no change needed; nothing was pushed"
        )
        return
    done: list[str] = []
    for plan in changed:
        try:
            await session.replace_dispatch_rule(plan.updated_rule())
        except HookError as e:
            pushed = f"already updated: {', '.join(done)}" if done else "nothing was pushed"
            raise HookError(f"{e}; {pushed}") from None
        done.append(plan.rule_id)
        out(f"dispatch rule {plan.label}: updated")
    if changed:
        out(f"pushed egress settings to {len(changed)} of {len(plans)} dispatch rule(s)")
    else:
        out("no change: LiveKit already holds these settings")
    out(
        "auto-egress is on: every call through "
        + ", ".join(p.rule_id for p in plans)
        + " is recorded by LiveKit; the backend must not start a second recording"
    )
