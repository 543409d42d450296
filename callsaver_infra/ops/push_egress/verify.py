"""push-egress --verify: a short web egress into the bucket, checked by the object it uploads."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from livekit import api

from callsaver_infra.app.names import HEALTHCHECK_PREFIX
from callsaver_infra.ops.push_egress.credentials import Redactor
from callsaver_infra.ops.push_egress.errors import HookError
from callsaver_infra.ops.push_egress.limits import VERIFY_POLL_SECONDS, VERIFY_RECORD_SECONDS
from callsaver_infra.ops.push_egress.rules import EgressSettings, s3_upload
from callsaver_infra.ops.push_egress.session import LiveKitSession

# How long --verify waits for the upload once it stopped its test egress (how long it records: limits.py).
VERIFY_WAIT_SECONDS = 60.0
_FINAL_OK = api.EgressStatus.EGRESS_COMPLETE
_ACTIVE = (api.EgressStatus.EGRESS_STARTING, api.EgressStatus.EGRESS_ACTIVE, api.EgressStatus.EGRESS_ENDING)


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
    session: LiveKitSession, egress_id: str, statuses: Sequence[int], seconds: float, poll_seconds: float
) -> api.EgressInfo:
    deadline = time.monotonic() + seconds
    while True:
        info = await _egress_info(session, egress_id)
        if info.status not in statuses or time.monotonic() >= deadline:
            return info
        await asyncio.sleep(poll_seconds)


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
    poll_seconds: float = VERIFY_POLL_SECONDS,
    now: datetime | None = None,
) -> VerifyResult:
    """Record a few seconds of a web page into `_healthcheck/` with the pushed S3 settings; check S3 has the file.

    object_exists(bucket, key) runs with the operator's AWS credentials: the egress user may write, not read.
    poll_seconds: how often it asks LiveKit for the egress's status (tests against the local stand-in ask more often).
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    key = f"{HEALTHCHECK_PREFIX}verify-{stamp}-{secrets.token_hex(3)}.ogg"
    request = verify_request(settings, key)
    started = await session.call("StartWebEgress", lambda lk: lk.egress.start_web_egress(request), retry=False)
    egress_id = started.egress_id
    info = await _wait_while(session, egress_id, (api.EgressStatus.EGRESS_STARTING,), start_seconds, poll_seconds)
    if info.status == api.EgressStatus.EGRESS_ACTIVE:
        info = await _wait_while(session, egress_id, (api.EgressStatus.EGRESS_ACTIVE,), record_seconds, poll_seconds)
    if info.status in (api.EgressStatus.EGRESS_STARTING, api.EgressStatus.EGRESS_ACTIVE):
        # It may end between the poll and the stop; the wait below tells either way.
        with contextlib.suppress(HookError):
            await session.call(
                "StopEgress", lambda lk: lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id))
            )
        info = await _wait_while(session, egress_id, _ACTIVE, wait_seconds, poll_seconds)

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
