"""Masking detection: whether LiveKit handed a rule's upload credentials back masked or blanked."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf.message import Message
from livekit import api

from callsaver_infra.ops.push_egress.credentials import EgressCredentials
from callsaver_infra.ops.push_egress.dispatch_rules import (
    looks_masked,
)
from callsaver_infra.ops.push_egress.owned import unowned_part

# Credentials inside an upload: LiveKit may hand them back masked (egress/redact.go) or blanked (utils/proto.go).
_CREDENTIAL_FIELDS = {
    "S3Upload": ("access_key", "secret", "session_token", "assume_role_external_id"),
    "GCPUpload": ("credentials",),
    "AzureBlobUpload": ("account_name", "account_key"),
    "AliOSSUpload": ("access_key", "secret"),
}


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


def without_credentials(request: api.RoomCompositeEgressRequest) -> api.RoomCompositeEgressRequest:
    copy = api.RoomCompositeEgressRequest()
    copy.CopyFrom(request)
    for _, upload in _uploads(copy):
        for name in _CREDENTIAL_FIELDS[upload.DESCRIPTOR.name]:
            upload.ClearField(name)
    return copy
