"""A strict local stand-in for LiveKit's server API, served on 127.0.0.1.

LiveKit Cloud is unreachable from CI and from the deploy rehearsal, so this module serves the part of
LiveKit's Twirp API that callsaver-infra calls (SIP dispatch rules and inbound trunks, rooms, room
composite and web egress) on an ephemeral loopback port, for the unmodified ``livekit.api.LiveKitAPI``
client (protobuf Twirp bodies, HS256 bearer tokens).

Every behaviour is modelled on LiveKit's open-source code and cites the file it follows (repositories
livekit/livekit, livekit/protocol, livekit/egress, livekit/sip). Where LiveKit would refuse a request,
so does this server, with LiveKit's error code and text. What LiveKit Cloud does differently from the
open-source server is unknown; ``listing`` selects how dispatch rules come back so that callers can be
tested against each masking style the protocol code contains.

Nothing here logs or stores the API secret, bearer tokens or upload secrets in anything it hands out.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import re
import secrets
import socket
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import jwt
from aiohttp import web
from google.protobuf.message import DecodeError, Message
from livekit.api import TokenVerifier
from livekit.api.access_token import Claims
from livekit.protocol import egress as proto_egress
from livekit.protocol import models as proto_models
from livekit.protocol import room as proto_room
from livekit.protocol import sip as proto_sip
from livekit.protocol.logger_pb import options as proto_logger_options

__all__ = [
    "FAULT_KINDS",
    "LISTING_MODES",
    "LocalLiveKitServer",
    "RequestRecord",
    "clone_proto_redacted",
    "expand_egress_filepath",
    "redact_room_egress",
]

logger = logging.getLogger(__name__)

FAULT_KINDS = ("unavailable", "internal", "timeout", "unauthenticated")

# How ListSIPDispatchRule (and the UpdateSIPDispatchRule response) shows rules; see the class docstring.
LISTING_MODES = ("unmasked", "placeholders", "redacted")

# Twirp's code -> HTTP status table (twitchtv/twirp errors.go, ServerHTTPStatusFromErrorCode).
_TWIRP_HTTP_STATUS = {
    "invalid_argument": 400,
    "malformed": 400,
    "not_found": 404,
    "bad_route": 404,
    "failed_precondition": 412,
    "unauthenticated": 401,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
}

# LiveKit ids are a prefix plus 12 random characters (protocol utils/guid).
_ID_ALPHABET = string.ascii_letters + string.digits

_S = proto_egress.EgressStatus
_LIVE_EGRESS = (_S.EGRESS_STARTING, _S.EGRESS_ACTIVE, _S.EGRESS_ENDING)

# protocol livekit/livekit_egress.go: the texts egress reports when it ends before its start signal.
MSG_START_NOT_RECEIVED = "Start signal not received"
MSG_STOPPED_BEFORE_STARTED = "Stop called before pipeline could start"
END_REASON_API = "StopEgress API"
END_REASON_SRC_CLOSED = "Source closed"

# protocol livekit/sip.go NormalizeNumber.
_RE_NUMBER = re.compile(r"^\+?[\d\- ()]+$")

# livekit/egress pkg/types/types.go: FileExtensionForOutputType and the recognised FileExtensions.
_FILE_EXTENSIONS = {
    proto_egress.EncodedFileType.OGG: ".ogg",
    proto_egress.EncodedFileType.MP4: ".mp4",
    proto_egress.EncodedFileType.MP3: ".mp3",
}
_KNOWN_EXTENSIONS = frozenset({".raw", ".ogg", ".mp3", ".ivf", ".mp4", ".ts", ".webm", ".m3u8", ".jpeg"})
_CONTENT_TYPES = {".ogg": "audio/ogg", ".mp4": "video/mp4", ".mp3": "audio/mpeg"}

_SENSITIVITY: Any = proto_logger_options.sensitivity
_SENSITIVITY_PII = proto_logger_options.SENSITIVITY_PII


class RequestRecord(NamedTuple):
    """One Twirp call as the server saw it: the method name and the verified grants (never the token)."""

    method: str
    grants: dict[str, Any]


class _TwirpFailure(Exception):
    """A Twirp error to send back as ``{"code": ..., "msg": ...}``."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


class _AuthFailure(Exception):
    """What livekit/livekit pkg/service/auth.go APIKeyAuthMiddleware answers before Twirp: HTTP 401, plain text."""


def _invalid_input(field_name: str) -> _TwirpFailure:
    # livekit/egress pkg/errors/errors.go ErrInvalidInput (psrpc InvalidArgument -> Twirp invalid_argument).
    return _TwirpFailure("invalid_argument", f"request has missing or invalid field: {field_name}")


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def _now_ns() -> int:
    return time.time_ns()


def normalize_number(number: str) -> str:
    """protocol livekit/sip.go NormalizeNumber: strip spaces, dashes and parentheses of a number and add ``+``."""
    if not number or not _RE_NUMBER.match(number):
        return number
    stripped = re.sub(r"[ \-()]", "", number)
    return stripped if stripped.startswith("+") else "+" + stripped


# --------------------------------------------------------------------------- masking


def _redact(value: str, placeholder: str) -> str:
    # protocol utils/redact.go Redact: a set value becomes the placeholder, an empty one stays empty.
    return placeholder if value else ""


def _redact_upload(upload: Message) -> None:
    """protocol egress/redact.go RedactUpload: upload credentials become ``{access_key}``, ``{secret}``, ..."""
    kind = upload.WhichOneof("output")
    if kind == "s3":
        s3 = upload.s3  # type: ignore[attr-defined]
        s3.access_key = _redact(s3.access_key, "{access_key}")
        s3.secret = _redact(s3.secret, "{secret}")
        s3.assume_role_external_id = _redact(s3.assume_role_external_id, "{external_id}")
        s3.session_token = _redact(s3.session_token, "{session_token}")
    elif kind == "gcp":
        gcp = upload.gcp  # type: ignore[attr-defined]
        gcp.credentials = _redact(gcp.credentials, "{credentials}")
    elif kind == "azure":
        azure = upload.azure  # type: ignore[attr-defined]
        azure.account_name = _redact(azure.account_name, "{account_name}")
        azure.account_key = _redact(azure.account_key, "{account_key}")
    elif kind == "aliOSS":
        ali = upload.aliOSS  # type: ignore[attr-defined]
        ali.access_key = _redact(ali.access_key, "{access_key}")
        ali.secret = _redact(ali.secret, "{secret}")


def _redact_encoded_outputs(request: Message) -> None:
    """protocol egress/redact.go RedactEncodedOutputs, as egress applies it to the request in every EgressInfo
    (livekit/egress pkg/config/pipeline.go). redact.go only redacts a kind with exactly one output, but egress
    refuses more than one ("multiple file outputs", pkg/config/output.go), so every accepted upload is covered."""
    for name in ("file_outputs", "segment_outputs", "image_outputs"):
        for upload in getattr(request, name, []):
            _redact_upload(upload)
    for name in ("file", "segments"):
        if request.DESCRIPTOR.fields_by_name.get(name) is not None and request.HasField(name):
            _redact_upload(getattr(request, name))


def redact_room_egress(egress: proto_room.RoomEgress) -> None:
    """Apply protocol egress/redact.go to every upload inside a rule's ``room_config.egress`` (in place):
    RedactEncodedOutputs for ``room``, RedactAutoEncodedOutput for ``participant``, RedactUpload for ``tracks``.
    Every upload is masked, not only a kind's single one, so the strictest reading of a masking server is tested."""
    if egress.HasField("room"):
        _redact_encoded_outputs(egress.room)
    if egress.HasField("participant"):
        _redact_encoded_outputs(egress.participant)
    if egress.HasField("tracks"):
        _redact_upload(egress.tracks)


def clone_proto_redacted(message: Message) -> Message:
    """protocol utils/proto.go CloneProtoRedacted: a copy with every field whose ``(logger.sensitivity)`` option
    (protobufs/logger/options.proto, field 1288) is PII or SECRET cleared, recursing into messages, lists, maps."""
    clone = type(message)()
    clone.CopyFrom(message)
    _clear_sensitive(clone)
    return clone


def _clear_sensitive(message: Message) -> None:
    for fd, value in message.ListFields():
        options = fd.GetOptions()
        if options.HasExtension(_SENSITIVITY) and options.Extensions[_SENSITIVITY] >= _SENSITIVITY_PII:
            message.ClearField(fd.name)
            continue
        if fd.message_type is None:
            continue
        if fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None:
                for item in value.values():
                    _clear_sensitive(item)
        elif isinstance(value, Message):
            _clear_sensitive(value)
        else:  # a repeated message field
            for item in value:
                _clear_sensitive(item)


# --------------------------------------------------------------------------- egress file naming


def expand_egress_filepath(
    template: str,
    *,
    room_name: str,
    room_id: str,
    extension: str,
    now: datetime | None = None,
) -> str:
    """Expand an egress ``filepath`` as livekit/egress pkg/config/output_file.go does and make it end in ``extension``.

    With a room (room composite): ``{room_name}``, ``{room_id}``, ``{time}`` and ``{utc}`` are replaced. Without one
    (web egress, ``room_name=""``): only ``{time}`` and ``{utc}``; ``{room_name}`` stays as written and a generated
    name starts with ``web``. ``{retry}`` is replaced only on a retry, which never happens here, so it stays.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%Y-%m-%dT%H%M%S")
    replacements = {"{time}": stamp, "{utc}": f"{moment.strftime('%Y%m%d%H%M%S')}{moment.microsecond // 1000:03d}"}
    identifier = "web"
    if room_name:
        replacements |= {"{room_name}": room_name, "{room_id}": room_id}
        identifier = room_name
    path = _clean(template)
    for placeholder, value in replacements.items():
        path = path.replace(placeholder, value)
    if not path or path.endswith("/"):
        return f"{path}{identifier}-{stamp}{extension}"
    if path.endswith(extension):
        return path
    dot = path.rfind(".")
    if dot > -1 and path[dot:] in _KNOWN_EXTENSIONS:
        path = path[:dot]
    return path + extension


def _clean(filepath: str) -> str:
    # livekit/egress pkg/config/output_file.go clean(): path.Clean, no leading "../", keep a trailing slash.
    trailing = filepath.endswith("/")
    cleaned = posixpath.normpath(filepath) if filepath else ""
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    while cleaned.startswith("../"):
        cleaned = cleaned[3:]
    if cleaned in ("", ".", ".."):
        return ""
    return cleaned + "/" if trailing else cleaned


def _s3_error_text(exc: BaseException) -> str:
    # livekit/egress pkg/errors/errors.go ErrUploadFailed ("<storage> upload failed: <err>"); the inner text is
    # shaped like aws-sdk-go-v2's ("operation error S3: PutObject, ... api error <Code>: <Message>").
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.get("Code")
        if code:
            detail = f"https response error StatusCode: {status}, api error {code}: {error.get('Message') or code}"
            return f"S3 upload failed: operation error S3: PutObject, {detail}"
    return f"S3 upload failed: {exc or type(exc).__name__}"


# --------------------------------------------------------------------------- egress jobs


class _PendingUpload(NamedTuple):
    output: proto_egress.EncodedFileOutput  # unredacted: holds the upload credentials, never handed out
    key: str
    extension: str


@dataclass
class _EgressJob:
    """What the egress worker of one egress needs; the credentials stay here, never in ``egresses``."""

    egress_id: str
    room_name: str  # "" for a web egress
    uploads: list[_PendingUpload]
    start: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)


Handler = Callable[[Any], Message]
GrantCheck = Callable[[Claims], bool]


class LocalLiveKitServer:
    """LiveKit server API stand-in on ``http://127.0.0.1:<ephemeral port>`` (see the module docstring).

    ``listing`` picks how ListSIPDispatchRule and the UpdateSIPDispatchRule response show rules:
    ``"unmasked"`` as stored (the open-source server); ``"placeholders"``: upload credentials inside
    ``room_config.egress`` replaced as protocol ``egress/redact.go`` does; ``"redacted"``: every field the
    protos mark PII or secret cleared, as protocol ``utils/proto.go`` CloneProtoRedacted does (inbound trunks
    are listed that way too in this mode). ``egress_start_delay`` is how long an egress takes to go ACTIVE
    once it may start (a web page loading, a pipeline spinning up).

    State for assertions: ``dispatch_rules``, ``inbound_trunks`` (id -> info), ``rooms`` (name -> ``Room``),
    ``egresses`` (id -> ``EgressInfo`` as a client would see it), ``requests``. Stored messages are replaced,
    never mutated in place; hold ``lock`` while iterating them.
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        s3_endpoint_url: str | None = None,
        listing: str = "unmasked",
        egress_start_delay: float = 0.05,
        fault_delay: float = 5.0,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must be non-empty")
        if listing not in LISTING_MODES:
            raise ValueError(f"listing must be one of {LISTING_MODES}, not {listing!r}")
        if not 0 < fault_delay <= 60:
            raise ValueError("fault_delay must be in (0, 60] seconds")
        if not 0 <= egress_start_delay <= 60:
            raise ValueError("egress_start_delay must be in [0, 60] seconds")
        self.api_key = api_key
        # protocol auth/verifier.go: HS256 only, issuer = API key, exp required, one minute of leeway.
        self._verifier = TokenVerifier(api_key, api_secret, leeway=timedelta(minutes=1))
        self.s3_endpoint_url = s3_endpoint_url
        self.listing = listing
        self.egress_start_delay = egress_start_delay
        self.fault_delay = fault_delay

        self.lock = threading.RLock()
        self.dispatch_rules: dict[str, proto_sip.SIPDispatchRuleInfo] = {}
        self.inbound_trunks: dict[str, proto_sip.SIPInboundTrunkInfo] = {}
        self.rooms: dict[str, proto_models.Room] = {}
        self.egresses: dict[str, proto_egress.EgressInfo] = {}
        self.requests: list[RequestRecord] = []
        self.publishers: dict[str, set[str]] = {}  # room name -> identities publishing media

        self._faults: dict[str, list[str]] = {}
        self._jobs: dict[str, _EgressJob] = {}
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()

        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._aio_stopping: asyncio.Event | None = None

        # Grants per call: livekit/livekit pkg/service/sip.go (EnsureSIPAdminPermission), roomservice.go
        # (EnsureCreatePermission for CreateRoom and DeleteRoom), egress.go (EnsureRecordPermission).
        admin, create, record = self._sip_admin, self._room_create, self._room_record
        self._routes: dict[str, dict[str, tuple[type[Message], GrantCheck, Handler]]] = {
            "livekit.SIP": {
                "ListSIPDispatchRule": (proto_sip.ListSIPDispatchRuleRequest, admin, self._list_rules),
                "UpdateSIPDispatchRule": (proto_sip.UpdateSIPDispatchRuleRequest, admin, self._update_rule),
                "ListSIPInboundTrunk": (proto_sip.ListSIPInboundTrunkRequest, admin, self._list_inbound_trunks),
            },
            "livekit.RoomService": {
                "CreateRoom": (proto_room.CreateRoomRequest, create, self._create_room),
                "DeleteRoom": (proto_room.DeleteRoomRequest, create, self._delete_room),
            },
            "livekit.Egress": {
                "StartRoomCompositeEgress": (
                    proto_egress.RoomCompositeEgressRequest,
                    record,
                    self._start_room_composite_egress,
                ),
                "StartWebEgress": (proto_egress.WebEgressRequest, record, self._start_web_egress),
                "StopEgress": (proto_egress.StopEgressRequest, record, self._stop_egress),
                "ListEgress": (proto_egress.ListEgressRequest, record, self._list_egress),
            },
        }

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL to hand to ``LiveKitAPI(url=...)``; only valid while the server runs."""
        if self._port is None:
            raise RuntimeError("LocalLiveKitServer is not running")
        return f"http://127.0.0.1:{self._port}"

    def __repr__(self) -> str:
        where = f"http://127.0.0.1:{self._port}" if self._port else "stopped"
        return f"LocalLiveKitServer(api_key={self.api_key!r}, listing={self.listing!r}, {where})"

    def __enter__(self) -> LocalLiveKitServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalLiveKitServer:
        """Bind 127.0.0.1 on an ephemeral port and serve from a background thread."""
        if self._thread is not None:
            raise RuntimeError("LocalLiveKitServer already started")
        self._stopping.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(sock))
            except BaseException as exc:  # reported to start(), which re-raises
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="livekit-local", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure or not ready.is_set():
            self._thread.join(1)
            self._thread = None
            self._port = None
            sock.close()
            raise RuntimeError("LocalLiveKitServer failed to start") from (failure[0] if failure else None)
        logger.info("local LiveKit server listening on %s", self.url)
        return self

    async def _serve(self, sock: socket.socket) -> None:
        self._aio_stopping = asyncio.Event()
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        """Stop serving, wake any held ("timeout" fault) responses and abort unfinished egresses."""
        if self._thread is None:
            return
        self._stopping.set()
        with self.lock:
            for job in self._jobs.values():
                job.stop.set()
                job.wake.set()
        loop = self._loop
        if loop is not None and loop.is_running():

            async def shutdown() -> None:
                if self._aio_stopping is not None:
                    self._aio_stopping.set()
                if self._runner is not None:
                    await self._runner.cleanup()

            try:
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        for worker in list(self._workers):
            worker.join(10)
        self._thread = None
        self._loop = None
        self._runner = None
        self._port = None
        logger.info("local LiveKit server stopped")

    # ------------------------------------------------------------------ test helpers

    def inject_fault(self, method: str, kind: str, count: int = 1) -> None:
        """Make the next ``count`` calls of Twirp ``method`` (e.g. ``"ListSIPDispatchRule"``) fail.

        ``kind`` is ``"unavailable"`` (503), ``"internal"`` (500), ``"unauthenticated"`` (401) or
        ``"timeout"`` (hold the response for ``fault_delay`` seconds, then answer normally; ``stop()``
        cuts the wait short). Faults queue up in order, so several calls build a sequence.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if count < 1:
            raise ValueError("count must be >= 1")
        name = method.rsplit("/", 1)[-1]
        if not any(name in methods for methods in self._routes.values()):
            raise ValueError(f"unknown Twirp method {method!r}")
        with self.lock:
            self._faults.setdefault(name, []).extend([kind] * count)

    def methods_called(self) -> list[str]:
        """Method names from the request log, in order."""
        with self.lock:
            return [record.method for record in self.requests]

    def add_dispatch_rule(self, rule: proto_sip.SIPDispatchRuleInfo, *, rule_id: str | None = None) -> str:
        """Seed a dispatch rule as if created earlier; returns its id (new, or ``rule_id`` when given, so a
        rehearsal can match the id an environment's config names). Refused as the server's Validate would."""
        info = proto_sip.SIPDispatchRuleInfo()
        info.CopyFrom(rule)
        with self.lock:
            if rule_id is not None and rule_id in self.dispatch_rules:
                raise ValueError(f"dispatch rule {rule_id} already exists")
            info.sip_dispatch_rule_id = rule_id or _new_id("SDR_")
            try:
                _validate_rule(info)
                self._check_conflicts(info, list(self.dispatch_rules.values()))
            except _TwirpFailure as failure:
                raise ValueError(failure.msg) from None
            # created_at stays as given: the open-source server never sets it (livekit pkg/service/sip.go).
            self.dispatch_rules[info.sip_dispatch_rule_id] = info
            return info.sip_dispatch_rule_id

    def add_inbound_trunk(self, trunk: proto_sip.SIPInboundTrunkInfo, *, trunk_id: str | None = None) -> str:
        """Seed an inbound SIP trunk; returns its id (new ``ST_`` id, or ``trunk_id``)."""
        info = proto_sip.SIPInboundTrunkInfo()
        info.CopyFrom(trunk)
        with self.lock:
            if trunk_id is not None and trunk_id in self.inbound_trunks:
                raise ValueError(f"inbound trunk {trunk_id} already exists")
            info.sip_trunk_id = trunk_id or _new_id("ST_")
            self.inbound_trunks[info.sip_trunk_id] = info
            return info.sip_trunk_id

    def add_room(self, name: str) -> proto_models.Room:
        """Create (or return) a room without going through the API."""
        with self.lock:
            return self._create_room(proto_room.CreateRoomRequest(name=name))

    def simulate_inbound_call(
        self,
        rule_id: str,
        *,
        from_number: str = "+15550100001",
        to_number: str = "+15550100002",
        publish: bool = True,
    ) -> tuple[str, str | None]:
        """Act as LiveKit SIP dispatching a call through rule ``rule_id``; returns ``(room_name, egress_id or None)``.

        The caller joins with the rule's ``room_config`` (protocol sip/sip.go copies it into the dispatch result,
        livekit/sip pkg/sip/room.go puts it in the caller's token); a join that creates the room applies it and
        starts ``egress.room`` (livekit/livekit pkg/service/roommanager.go getOrCreateRoom: only when newly
        created). Then the caller publishes its audio (unless ``publish=False``), which starts that egress.
        """
        with self.lock:
            info = self.dispatch_rules.get(rule_id)
            if info is None:
                raise KeyError(f"no dispatch rule {rule_id!r}")
            kind = info.rule.WhichOneof("rule")
            suffix = _new_id("")
            # Room names as livekit/sip pkg/sip/service (dispatch evaluation in protocol sip/sip.go) forms them.
            if kind == "dispatch_rule_direct":
                room_name = info.rule.dispatch_rule_direct.room_name
            elif kind == "dispatch_rule_individual":
                rule = info.rule.dispatch_rule_individual
                room_name = f"{rule.room_prefix}_{from_number}"
                if not rule.no_randomness:
                    room_name += f"_{suffix}"
            elif kind == "dispatch_rule_callee":
                callee = info.rule.dispatch_rule_callee
                room_name = f"{callee.room_prefix}{to_number}"
                if callee.randomize:
                    room_name += f"_{suffix}"
            else:
                raise ValueError(f"dispatch rule {rule_id} has no rule set")
            request = proto_room.CreateRoomRequest(name=room_name)
            if info.HasField("room_config"):
                config = info.room_config
                request.empty_timeout = config.empty_timeout
                request.departure_timeout = config.departure_timeout
                request.max_participants = config.max_participants
                request.metadata = config.metadata
                if config.HasField("egress"):
                    request.egress.CopyFrom(config.egress)
            before = set(self.egresses)
            self._create_room(request)
            started = [e for e in self.egresses if e not in before]
            if publish:
                self.publish_audio(room_name, identity=f"sip_{from_number}")
            return room_name, (started[0] if started else None)

    def publish_audio(self, room_name: str, identity: str = "publisher") -> None:
        """A participant ``identity`` joins existing room ``room_name`` and publishes an audio track.

        Egress of that room waiting for media (livekit/egress pkg/pipeline/source/sdk.go: the SDK source breaks
        its start fuse once a subscribed track plays) may now start.
        """
        with self.lock:
            if room_name not in self.rooms:
                raise KeyError(f"no room {room_name!r}")
            self.publishers.setdefault(room_name, set()).add(identity)
            for job in self._jobs.values():
                if job.room_name == room_name:
                    job.start.set()
                    job.wake.set()

    def wait_for_egress(self, egress_id: str, timeout: float = 5.0) -> proto_egress.EgressInfo:
        """Block until egress ``egress_id`` reaches a final status; returns its ``EgressInfo``."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                info = self.egresses[egress_id]
                worker_done = egress_id not in self._jobs
            if info.status not in _LIVE_EGRESS and worker_done:
                return info
            if time.monotonic() >= deadline:
                raise TimeoutError(f"egress {egress_id} still {_S.Name(info.status)}")
            time.sleep(0.02)

    # ------------------------------------------------------------------ HTTP / Twirp plumbing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            # livekit/livekit pkg/service/auth.go: the API key middleware runs before any Twirp routing.
            try:
                claims, grants = self._authenticate(request)
            except _AuthFailure as failure:
                with self.lock:
                    self.requests.append(RequestRecord(request.path.rsplit("/", 1)[-1], {}))
                # pkg/service/utils.go HandleError: WriteHeader(401) then the error text; Go's net/http sniffs
                # the body and sends "text/plain; charset=utf-8".
                return web.Response(status=401, text=str(failure), content_type="text/plain", charset="utf-8")
            if request.method != "POST":
                raise _TwirpFailure("bad_route", f'unsupported method "{request.method}" (only POST is allowed)')
            match = re.fullmatch(r"/twirp/([A-Za-z0-9_.]+)/([A-Za-z0-9_]+)", request.path)
            route = self._routes.get(match.group(1), {}).get(match.group(2)) if match else None
            if match is None or route is None:
                raise _TwirpFailure("bad_route", f'no handler for path "{request.path}"')
            method = match.group(2)
            request_cls, grant_check, handler = route
            with self.lock:
                self.requests.append(RequestRecord(method, grants))
                queue = self._faults.get(method)
                fault = queue.pop(0) if queue else None
            if fault is not None:
                logger.info("injecting %s fault into %s", fault, method)
                await self._inject(fault)
            content_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if content_type != "application/protobuf":
                # Twirp also serves JSON, but nothing of ours sends it; refusing it keeps this server small.
                raise _TwirpFailure("bad_route", f'unexpected Content-Type: "{content_type}"')
            message = request_cls()
            try:
                message.ParseFromString(await request.read())
            except DecodeError:
                raise _TwirpFailure("malformed", "the protobuf request could not be decoded") from None
            # pkg/service/auth.go twirpAuthError: a missing grant is Twirp unauthenticated "permissions denied".
            if claims is None or not grant_check(claims):
                raise _TwirpFailure("unauthenticated", "permissions denied")
            with self.lock:
                result = handler(message)
            return web.Response(body=result.SerializeToString(), content_type="application/protobuf")
        except _TwirpFailure as failure:
            logger.debug("twirp error %s: %s", failure.code, failure.msg)
            return self._error_response(failure)
        except Exception:
            # A bug here must still look like Twirp to the client, not an aiohttp text/plain 500.
            logger.exception("local LiveKit server failed handling %s", request.path)
            return self._error_response(_TwirpFailure("internal", "internal error"))

    async def _inject(self, fault: str) -> None:
        if fault == "timeout":
            stopping = self._aio_stopping
            assert stopping is not None
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self.fault_delay)
            except TimeoutError:
                return  # held long enough; now answer normally
            raise _TwirpFailure("unavailable", "server shutting down")
        messages = {
            "unavailable": ("unavailable", "service unavailable (injected fault)"),
            "internal": ("internal", "internal error (injected fault)"),
            "unauthenticated": ("unauthenticated", "invalid token (injected fault)"),
        }
        code, msg = messages[fault]
        raise _TwirpFailure(code, msg)

    @staticmethod
    def _error_response(failure: _TwirpFailure) -> web.Response:
        return web.json_response(
            {"code": failure.code, "msg": failure.msg}, status=_TWIRP_HTTP_STATUS.get(failure.code, 500)
        )

    # ------------------------------------------------------------------ auth

    def _authenticate(self, request: web.Request) -> tuple[Claims | None, dict[str, Any]]:
        """livekit/livekit pkg/service/auth.go APIKeyAuthMiddleware: (claims, grants) for a valid token, (None, {})
        when none was sent; raises :class:`_AuthFailure` with the middleware's text otherwise."""
        header = request.headers.get("Authorization", "")
        if header:
            if not header.startswith("Bearer "):
                raise _AuthFailure("invalid authorization header. Must start with Bearer ")
            token = header[len("Bearer ") :]
        else:
            token = request.query.get("access_token", "")
        if not token:
            return None, {}
        try:
            # auth.ParseAPIToken: read the issuer (the API key) without verifying anything yet.
            raw = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _AuthFailure("invalid authorization token") from None
        if raw.get("iss") != self.api_key:
            raise _AuthFailure("invalid API key")
        try:
            claims = self._verifier.verify(token)
        except jwt.PyJWTError as exc:
            alg = jwt.get_unverified_header(token).get("alg")
            raise _AuthFailure(f"invalid authorization token: {_golang_jwt_text(exc, alg)}") from None
        registered = {"iss", "sub", "aud", "exp", "nbf", "iat", "jti"}
        return claims, {k: v for k, v in raw.items() if k not in registered}

    @staticmethod
    def _sip_admin(claims: Claims) -> bool:
        return bool(claims.sip and claims.sip.admin)

    @staticmethod
    def _room_create(claims: Claims) -> bool:
        return bool(claims.video and claims.video.room_create)

    @staticmethod
    def _room_record(claims: Claims) -> bool:
        return bool(claims.video and claims.video.room_record)

    # ------------------------------------------------------------------ SIP (lock held)

    def _check_conflicts(
        self, candidate: proto_sip.SIPDispatchRuleInfo, rules: list[proto_sip.SIPDispatchRuleInfo]
    ) -> None:
        """protocol sip/sip.go DispatchRuleValidator over ``rules`` with ``candidate`` in place of its stored self."""
        seen: dict[tuple[str, str, str, str], proto_sip.SIPDispatchRuleInfo] = {}
        ordered = sorted(rules, key=lambda r: r.sip_dispatch_rule_id)
        if not any(r.sip_dispatch_rule_id == candidate.sip_dispatch_rule_id for r in ordered):
            ordered.append(candidate)
        for stored in ordered:
            rule = candidate if stored.sip_dispatch_rule_id == candidate.sip_dispatch_rule_id else stored
            pin = _rule_pin(rule)
            for trunk in list(rule.trunk_ids) or [""]:
                for inbound in list(rule.inbound_numbers) or [""]:
                    for number in list(rule.numbers) or [""]:
                        key = (pin, trunk, normalize_number(inbound), normalize_number(number))
                        previous = seen.get(key)
                        if previous is not None:
                            raise _TwirpFailure(
                                "invalid_argument",
                                "Dispatch rule for the same trunk, inbound number, number, and PIN combination "
                                f'already exists in dispatch rule "{previous.sip_dispatch_rule_id or "<new>"}" '
                                f'"{previous.name or "<blank name>"}"',
                            )
                        seen[key] = rule

    def _listed_rule(self, rule: proto_sip.SIPDispatchRuleInfo) -> proto_sip.SIPDispatchRuleInfo:
        if self.listing == "redacted":
            redacted: proto_sip.SIPDispatchRuleInfo = clone_proto_redacted(rule)  # type: ignore[assignment]
            return redacted
        shown = proto_sip.SIPDispatchRuleInfo()
        shown.CopyFrom(rule)
        if self.listing == "placeholders" and shown.room_config.HasField("egress"):
            redact_room_egress(shown.room_config.egress)
        return shown

    def _list_rules(self, req: proto_sip.ListSIPDispatchRuleRequest) -> proto_sip.ListSIPDispatchRuleResponse:
        # livekit/livekit pkg/service/sip.go ListSIPDispatchRule pages through every page (iters.All over
        # protocol livekit/types.go ListPageIter), so a page limit never shortens the answer; only after_id and
        # ListSIPDispatchRuleRequest.Filter (protocol livekit/sip.go) select.
        items = []
        for rule_id in sorted(self.dispatch_rules):
            rule = self.dispatch_rules[rule_id]
            if req.dispatch_rule_ids and rule_id not in req.dispatch_rule_ids:
                continue
            if req.trunk_ids and rule.trunk_ids and not set(req.trunk_ids) & set(rule.trunk_ids):
                continue
            if req.HasField("page") and req.page.after_id and rule_id <= req.page.after_id:
                continue
            items.append(self._listed_rule(rule))
        return proto_sip.ListSIPDispatchRuleResponse(items=items)

    def _list_inbound_trunks(self, req: proto_sip.ListSIPInboundTrunkRequest) -> proto_sip.ListSIPInboundTrunkResponse:
        # As _list_rules, with protocol livekit/sip.go ListSIPInboundTrunkRequest.Filter: trunk_ids must contain
        # the id; numbers must share one number (as written or normalized) unless the trunk lists none.
        wanted_numbers = {normalize_number(n) for n in req.numbers} | set(req.numbers)
        items: list[proto_sip.SIPInboundTrunkInfo] = []
        for trunk_id in sorted(self.inbound_trunks):
            trunk = self.inbound_trunks[trunk_id]
            if req.trunk_ids and trunk_id not in req.trunk_ids:
                continue
            if (
                req.numbers
                and trunk.numbers
                and not any(n in wanted_numbers or normalize_number(n) in wanted_numbers for n in trunk.numbers)
            ):
                continue
            if req.HasField("page") and req.page.after_id and trunk_id <= req.page.after_id:
                continue
            if self.listing == "redacted":
                trunk = clone_proto_redacted(trunk)  # type: ignore[assignment]
            items.append(trunk)
        return proto_sip.ListSIPInboundTrunkResponse(items=items)

    def _update_rule(self, req: proto_sip.UpdateSIPDispatchRuleRequest) -> proto_sip.SIPDispatchRuleInfo:
        """livekit/livekit pkg/service/sip.go UpdateSIPDispatchRule with protocol livekit/sip.go Validate/Apply."""
        # UpdateSIPDispatchRuleRequest.Validate: its errors come back as Twirp invalid_argument.
        if not req.sip_dispatch_rule_id:
            raise _TwirpFailure("invalid_argument", "rule id must be set")
        action = req.WhichOneof("action")
        if action is None:
            raise _TwirpFailure("invalid_argument", "missing or unsupported update action")
        if action == "replace":
            replace_id = req.replace.sip_dispatch_rule_id
            if replace_id and replace_id != req.sip_dispatch_rule_id:
                raise _TwirpFailure(
                    "invalid_argument", "rule id in the info must be empty or match the id in the update"
                )
            _validate_rule(req.replace)
        else:
            _validate_rule_update(req.update, "invalid_argument")
        current = self.dispatch_rules.get(req.sip_dispatch_rule_id)
        if current is None:
            raise _TwirpFailure("not_found", "requested sip dispatch rule does not exist")
        updated = proto_sip.SIPDispatchRuleInfo()
        if action == "replace":
            # UpdateSIPDispatchRuleRequest_Replace.Apply: a clone of what was sent with the stored id forced in;
            # nothing is merged, created_at and updated_at are whatever was sent.
            updated.CopyFrom(req.replace)
            updated.sip_dispatch_rule_id = current.sip_dispatch_rule_id
        else:
            # UpdateSIPDispatchRuleRequest_Update.Apply -> SIPDispatchRuleUpdate.Apply; its errors are plain Go
            # errors, which Twirp sends as internal.
            updated.CopyFrom(current)
            _apply_rule_update(updated, req.update)
        # ValidateDispatchRulesIter over the rules listed with the updated rule's trunk ids.
        # The updated rule takes the stored one's place in that iteration (WithDispatchRuleReplace), so when the
        # stored rule is not among the listed ones the updated rule is not checked at all, as on the server.
        wanted = set(updated.trunk_ids)
        peers = [r for r in self.dispatch_rules.values() if not wanted or not r.trunk_ids or wanted & set(r.trunk_ids)]
        if any(r.sip_dispatch_rule_id == updated.sip_dispatch_rule_id for r in peers):
            self._check_conflicts(updated, peers)
        self.dispatch_rules[updated.sip_dispatch_rule_id] = updated
        return self._listed_rule(updated)

    # ------------------------------------------------------------------ rooms (lock held)

    def _create_room(self, req: proto_room.CreateRoomRequest) -> proto_models.Room:
        # livekit/livekit pkg/service/roommanager.go getOrCreateRoom: an existing room is returned as is; a new one
        # starts egress.room (with the room's name forced in) right after creation.
        if not req.name:
            raise _TwirpFailure("invalid_argument", "no room name")  # not modelled on a source: never sent by us
        existing = self.rooms.get(req.name)
        if existing is not None:
            return existing
        now_ms = int(time.time() * 1000)
        room = proto_models.Room(
            sid=_new_id("RM_"),
            name=req.name,
            empty_timeout=req.empty_timeout or 300,
            departure_timeout=req.departure_timeout or 20,
            max_participants=req.max_participants,
            creation_time=now_ms // 1000,
            creation_time_ms=now_ms,
            metadata=req.metadata,
        )
        if req.HasField("egress") and req.egress.HasField("room"):
            auto = proto_egress.RoomCompositeEgressRequest()
            auto.CopyFrom(req.egress.room)
            auto.room_name = req.name
            self.rooms[req.name] = room
            try:
                self._start_room_composite_egress(auto)
            except _TwirpFailure:
                del self.rooms[req.name]  # getOrCreateRoom releases the room when its egress cannot start
                raise
        self.rooms[req.name] = room
        return room

    def _delete_room(self, req: proto_room.DeleteRoomRequest) -> proto_room.DeleteRoomResponse:
        # pkg/service/roomservice.go DeleteRoom: unknown room -> ErrRoomNotFound.
        if self.rooms.pop(req.room, None) is None:
            raise _TwirpFailure("not_found", "requested room does not exist")
        self.publishers.pop(req.room, None)
        # The room's egresses lose their source (livekit/egress pkg/pipeline/controller.go: EndRecording ->
        # SendEOS(EndReasonSrcClosed)): one not started yet aborts, an active one ends and uploads.
        for egress_id, job in list(self._jobs.items()):
            if job.room_name == req.room:
                self._end_egress(egress_id, END_REASON_SRC_CLOSED)
        return proto_room.DeleteRoomResponse()

    # ------------------------------------------------------------------ egress (lock held)

    def _start_room_composite_egress(self, req: proto_egress.RoomCompositeEgressRequest) -> proto_egress.EgressInfo:
        # livekit/livekit pkg/service/egress.go egressLauncher.StartEgress loads the room first (not_found).
        if req.room_name:
            room = self.rooms.get(req.room_name)
            if room is None:
                raise _TwirpFailure("not_found", "requested room does not exist")
        else:
            room = None
        # livekit/egress pkg/config/pipeline.go Update (room composite branch), in its order.
        audio, video = not req.video_only, not req.audio_only
        if not audio and not video:
            raise _invalid_input("audio_only and video_only")
        uploads = self._file_uploads(req, audio=audio, video=video, room=room)
        if room is None:
            # No room name: no egress token can be built (pipeline.go "connection info").
            raise _invalid_input("token or api key/secret")
        # pkg/config/pipeline.go ShouldUseSDKSource: audio only, no layout, no custom base url -> SDK source.
        sdk = req.audio_only and not req.layout and not req.custom_base_url
        request = proto_egress.RoomCompositeEgressRequest()
        request.CopyFrom(req)
        _redact_encoded_outputs(request)
        info = self._new_egress_info(uploads)
        info.room_composite.CopyFrom(request)
        info.room_id, info.room_name = room.sid, room.name
        info.source_type = (
            proto_egress.EgressSourceType.EGRESS_SOURCE_TYPE_SDK
            if sdk
            else proto_egress.EgressSourceType.EGRESS_SOURCE_TYPE_WEB
        )
        job = _EgressJob(info.egress_id, room.name, uploads)
        # Room composite always awaits its start signal (pipeline.go AwaitStartSignal = true): the SDK source on
        # the first media packet (source/sdk.go), the web template once tracks are subscribed.
        if self.publishers.get(room.name):
            job.start.set()
        return self._launch(info, job)

    def _start_web_egress(self, req: proto_egress.WebEgressRequest) -> proto_egress.EgressInfo:
        # livekit/egress pkg/config/pipeline.go Update (web branch): url.Parse + isHttp, then audio/video.
        if not _is_http_url(req.url):
            raise _invalid_input("web url")
        audio, video = not req.video_only, not req.audio_only
        if not audio and not video:
            raise _invalid_input("audio_only and video_only")
        uploads = self._file_uploads(req, audio=audio, video=video, room=None)
        request = proto_egress.WebEgressRequest()
        request.CopyFrom(req)
        _redact_encoded_outputs(request)
        info = self._new_egress_info(uploads)
        info.web.CopyFrom(request)
        info.source_type = proto_egress.EgressSourceType.EGRESS_SOURCE_TYPE_WEB
        job = _EgressJob(info.egress_id, "", uploads)
        # pkg/pipeline/source/web.go: without await_start_signal the start fuse breaks once the page has loaded;
        # with it, only the page's START_RECORDING console log starts it, which no page here ever sends.
        if not req.await_start_signal:
            job.start.set()
        return self._launch(info, job)

    def _file_uploads(
        self, req: Any, *, audio: bool, video: bool, room: proto_models.Room | None
    ) -> list[_PendingUpload]:
        # livekit/egress pkg/config/output.go updateEncodedOutputs and output_file.go: at most one file output,
        # some output required; segment, stream and image outputs are not modelled (nothing of ours uses them).
        if len(req.stream_outputs) or len(req.segment_outputs) or len(req.image_outputs):
            raise _TwirpFailure("unimplemented", "only file outputs are modelled by the local LiveKit server")
        if req.WhichOneof("output") not in (None, "file"):
            raise _TwirpFailure("unimplemented", "only file outputs are modelled by the local LiveKit server")
        files = list(req.file_outputs)
        if len(files) > 1:
            raise _invalid_input("multiple file outputs")
        if not files and req.HasField("file"):
            files = [req.file]
        if not files:
            raise _invalid_input("output")
        output = files[0]
        if output.file_type in _FILE_EXTENSIONS:
            extension = _FILE_EXTENSIONS[output.file_type]
            # pipeline.go validateAndUpdateOutputCodecs: OGG and MP3 carry no video codec.
            if video and extension != ".mp4":
                raise _TwirpFailure("invalid_argument", "no supported codec is compatible with all outputs")
        else:
            # pipeline.go updateOutputType: audio only -> OGG (first of AudioOnlyFileOutputTypes), else MP4.
            extension = ".ogg" if not video else ".mp4"
        if output.WhichOneof("output") not in ("s3", None):
            raise _TwirpFailure("unimplemented", "only S3 uploads are modelled by the local LiveKit server")
        key = expand_egress_filepath(
            output.filepath,
            room_name=room.name if room else "",
            room_id=room.sid if room else "",
            extension=extension,
        )
        return [_PendingUpload(output, key, extension)]

    @staticmethod
    def _new_egress_info(uploads: list[_PendingUpload]) -> proto_egress.EgressInfo:
        # pipeline.go Update: STARTING, started_at/updated_at now, file_results holding the filename from the start.
        now = _now_ns()
        info = proto_egress.EgressInfo(
            egress_id=_new_id("EG_"), status=_S.EGRESS_STARTING, started_at=now, updated_at=now
        )
        for upload in uploads:
            info.file_results.append(proto_egress.FileInfo(filename=upload.key))
        if len(uploads) == 1:
            info.file.CopyFrom(info.file_results[0])  # the deprecated single result (output.go)
        return info

    def _launch(self, info: proto_egress.EgressInfo, job: _EgressJob) -> proto_egress.EgressInfo:
        self.egresses[info.egress_id] = info
        self._jobs[info.egress_id] = job
        if self._stopping.is_set():
            job.stop.set()
        job.wake.set()
        worker = threading.Thread(target=self._run_egress, args=(job,), name=f"egress-{job.egress_id}", daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()
        return info

    def _stop_egress(self, req: proto_egress.StopEgressRequest) -> proto_egress.EgressInfo:
        # livekit/livekit pkg/service/egress.go StopEgress: a live egress answers (handler_rpc.go StopEgress ->
        # controller.go SendEOS); an unknown one is not_found, a finished one failed_precondition.
        info = self.egresses.get(req.egress_id)
        if info is None:
            raise _TwirpFailure("not_found", "egress does not exist")
        if req.egress_id not in self._jobs:
            raise _TwirpFailure("failed_precondition", f"egress with status {_S.Name(info.status)} cannot be stopped")
        return self._end_egress(req.egress_id, END_REASON_API)

    def _end_egress(self, egress_id: str, reason: str) -> proto_egress.EgressInfo:
        """livekit/egress pkg/pipeline/controller.go SendEOS (once): STARTING -> ABORTED, ACTIVE -> ENDING."""
        info = self.egresses[egress_id]
        job = self._jobs[egress_id]
        if job.stop.is_set():
            return info
        fields: dict[str, Any] = {"details": f"End reason: {reason}"}
        if info.status == _S.EGRESS_STARTING:
            now = _now_ns()
            fields |= {
                "status": _S.EGRESS_ABORTED,
                "error": MSG_STOPPED_BEFORE_STARTED,
                "error_code": 412,
                "ended_at": now,
            }
        elif info.status == _S.EGRESS_ACTIVE:
            fields["status"] = _S.EGRESS_ENDING
        updated = self._replace_egress(egress_id, **fields)
        job.stop.set()
        job.wake.set()
        return updated

    def _list_egress(self, req: proto_egress.ListEgressRequest) -> proto_egress.ListEgressResponse:
        items = []
        for info in self.egresses.values():
            if req.room_name and info.room_name != req.room_name:
                continue
            if req.egress_id and info.egress_id != req.egress_id:
                continue
            if req.active and info.status not in _LIVE_EGRESS:
                continue
            items.append(info)
        return proto_egress.ListEgressResponse(items=items)

    def _replace_egress(self, egress_id: str, **fields: Any) -> proto_egress.EgressInfo:
        updated = proto_egress.EgressInfo()
        updated.CopyFrom(self.egresses[egress_id])
        for name, value in fields.items():
            setattr(updated, name, value)
        updated.updated_at = _now_ns()
        self.egresses[egress_id] = updated
        return updated

    # ------------------------------------------------------------------ egress worker thread

    def _run_egress(self, job: _EgressJob) -> None:
        try:
            self._drive_egress(job)
        finally:
            with self.lock:
                self._jobs.pop(job.egress_id, None)

    def _drive_egress(self, job: _EgressJob) -> None:
        # controller.go Run: wait for the source's start signal or a stop, whichever comes first.
        while not (job.start.is_set() or job.stop.is_set()):
            job.wake.wait()
            job.wake.clear()
        if not job.stop.is_set():
            job.stop.wait(self.egress_start_delay)  # the pipeline (or the web page) coming up
        with self.lock:
            if job.stop.is_set() and self.egresses[job.egress_id].status != _S.EGRESS_ENDING:
                # Stopped before it started: controller.go Run reports MsgStartNotReceived once the pipeline stops.
                self._replace_egress(
                    job.egress_id,
                    status=_S.EGRESS_ABORTED,
                    error=MSG_START_NOT_RECEIVED,
                    error_code=412,
                    ended_at=self.egresses[job.egress_id].ended_at or _now_ns(),
                )
                return
            self._replace_egress(job.egress_id, status=_S.EGRESS_ACTIVE, started_at=_now_ns())
        job.stop.wait()
        with self.lock:
            if self._stopping.is_set() and self.egresses[job.egress_id].status == _S.EGRESS_ACTIVE:
                # Local lifecycle only (not a LiveKit behaviour): the server went away under a live recording.
                self._replace_egress(
                    job.egress_id, status=_S.EGRESS_ABORTED, error="local LiveKit server stopped", ended_at=_now_ns()
                )
                return
            started = self.egresses[job.egress_id].started_at
        results, error = self._upload_all(job, started)
        with self.lock:
            if error:
                # protocol livekit/livekit_egress.go SetFailed: the error text, error_code from the psrpc code.
                self._replace_egress(
                    job.egress_id, status=_S.EGRESS_FAILED, error=error, error_code=400, ended_at=_now_ns()
                )
                return
            final = self._replace_egress(job.egress_id, status=_S.EGRESS_COMPLETE, ended_at=_now_ns())
            del final.file_results[:]
            final.file_results.extend(results)
            if len(results) == 1:
                final.file.CopyFrom(results[0])
        logger.info("egress %s complete", job.egress_id)

    def _upload_all(self, job: _EgressJob, started: int) -> tuple[list[proto_egress.FileInfo], str]:
        results: list[proto_egress.FileInfo] = []
        for upload in job.uploads:
            payload = b"OggS" + bytes(60) if upload.extension == ".ogg" else b"LKLOCAL-EGRESS" + bytes(50)
            ended = _now_ns()
            file_info = proto_egress.FileInfo(
                filename=upload.key, started_at=started, ended_at=ended, duration=ended - started, size=len(payload)
            )
            try:
                file_info.location = self._upload_s3(upload.output.s3, upload.key, payload, upload.extension)
            except Exception as exc:  # any upload failure ends the egress, like livekit/egress
                error = _s3_error_text(exc)
                logger.info("egress %s upload failed: %s", job.egress_id, error)
                return results, error
            results.append(file_info)
        return results, ""

    def _upload_s3(self, s3: proto_egress.S3Upload, key: str, payload: bytes, extension: str) -> str:
        # Imported lazily: boto3 costs ~0.5 s to import and only egress needs it.
        import boto3
        from botocore.config import Config

        if not s3.access_key or not s3.secret:
            # Never fall back to ambient AWS credentials: LiveKit Cloud has none of ours either.
            raise RuntimeError("S3 upload has no access_key/secret; LiveKit Cloud cannot use ambient credentials")
        endpoint = s3.endpoint or self.s3_endpoint_url
        config = Config(
            connect_timeout=2,
            read_timeout=5,
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint or s3.force_path_style else "auto"},
        )
        with _S3_SESSION_LOCK:  # a boto3 Session is not thread-safe; egresses upload from their own threads
            if not _S3_SESSION:
                # One session per process: its loader parses S3's service model once (0.1-0.3 s per new session).
                # Every upload still passes the egress request's own key, region and endpoint, never ambient ones.
                _S3_SESSION.append(boto3.session.Session())
            client = _S3_SESSION[0].client(
                "s3",
                aws_access_key_id=s3.access_key,
                aws_secret_access_key=s3.secret,
                aws_session_token=s3.session_token or None,
                region_name=s3.region or "us-east-1",
                endpoint_url=endpoint or None,
                config=config,
            )
        extra: dict[str, Any] = {}
        if s3.metadata:
            extra["Metadata"] = dict(s3.metadata)
        if s3.tagging:
            extra["Tagging"] = s3.tagging
        if s3.content_disposition:
            extra["ContentDisposition"] = s3.content_disposition
        client.put_object(
            Bucket=s3.bucket,
            Key=key,
            Body=payload,
            ContentType=_CONTENT_TYPES.get(extension, "application/octet-stream"),
            **extra,
        )
        if endpoint:
            return f"{endpoint.rstrip('/')}/{s3.bucket}/{key}"
        return f"https://{s3.bucket}.s3.amazonaws.com/{key}"


# --------------------------------------------------------------------------- helpers

_S3_SESSION: list[Any] = []  # the boto3 Session egress uploads create their clients from (_upload_s3)
_S3_SESSION_LOCK = threading.Lock()


def _rule_pin(info: proto_sip.SIPDispatchRuleInfo) -> str:
    # protocol sip/sip.go GetPinAndRoom.
    kind = info.rule.WhichOneof("rule")
    if kind is None:
        raise _TwirpFailure("invalid_argument", "unsupported SIP Dispatch Rule: <nil>")
    pin: str = getattr(info.rule, kind).pin
    return pin


def _validate_rule(info: proto_sip.SIPDispatchRuleInfo) -> None:
    # protocol livekit/sip.go SIPDispatchRuleInfo.Validate (media codecs are not modelled).
    if not info.HasField("rule"):
        raise _TwirpFailure("invalid_argument", "missing rule")


def _validate_list_update(update: proto_models.ListUpdate, code: str) -> None:
    # protocol livekit/types.go ListUpdate.Validate.
    change = len(update.set) + len(update.add) + len(update.remove) > 0
    if not update.clear and not change:
        raise _TwirpFailure(code, "unsupported list update operation")
    if update.clear and change:
        raise _TwirpFailure(code, "cannot clear and change the list at the same time")
    if len(update.set) and len(update.add) + len(update.remove):
        raise _TwirpFailure(code, "cannot set and change the list at the same time")
    if any(not v for v in [*update.set, *update.add, *update.remove]):
        raise _TwirpFailure(code, "empty element in the list")


def _validate_rule_update(update: proto_sip.SIPDispatchRuleUpdate, code: str) -> None:
    # protocol livekit/sip.go SIPDispatchRuleUpdate.Validate (media codecs are not modelled).
    if update.HasField("trunk_ids"):
        _validate_list_update(update.trunk_ids, code)


def _apply_rule_update(info: proto_sip.SIPDispatchRuleInfo, update: proto_sip.SIPDispatchRuleUpdate) -> None:
    """protocol livekit/sip.go SIPDispatchRuleUpdate.Apply (errors as Twirp internal, like the server)."""
    _validate_rule_update(update, "internal")
    if update.HasField("trunk_ids"):  # types.go applyListUpdate
        diff = update.trunk_ids
        if diff.clear:
            trunks: list[str] = []
        elif len(diff.set):
            trunks = list(diff.set)
        else:
            trunks = [t for t in info.trunk_ids]
            for item in diff.remove:
                if item in trunks:
                    trunks.remove(item)
            trunks += [item for item in diff.add if item not in trunks]
        del info.trunk_ids[:]
        info.trunk_ids.extend(trunks)
    if update.HasField("rule"):
        info.rule.CopyFrom(update.rule)
    if update.HasField("name"):
        info.name = update.name
    if update.HasField("metadata"):
        info.metadata = update.metadata
    for key, value in update.attributes.items():  # types.go applyMapDiff: an empty value deletes
        if value:
            info.attributes[key] = value
        else:
            info.attributes.pop(key, None)
    if update.HasField("media"):  # sip.go updateMediaConfig
        info.media.CopyFrom(update.media)
    if update.HasField("media_encryption"):
        info.media_encryption = update.media_encryption
    _validate_rule(info)


def _is_http_url(raw: str) -> bool:
    # livekit/egress pkg/config/pipeline.go: url.Parse succeeds and isHttp (scheme exactly "http" or "https";
    # Go keeps the scheme's case only after lowering it, so "HTTP://" passes too).
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*):(//([^/?#]*))?", raw)
    if match is None or any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        return False  # no scheme, or "net/url: invalid control character in URL"
    if " " in (match.group(3) or ""):
        return False  # "invalid character \" \" in host name"
    return match.group(1).lower() in ("http", "https")


def _golang_jwt_text(exc: jwt.PyJWTError, alg: object) -> str:
    """The golang-jwt/jwt v5 error text (errors.go newError, parser.go, validator.go; used by protocol
    auth/verifier.go) for what PyJWT reported."""
    if isinstance(exc, jwt.InvalidSignatureError):
        return "token signature is invalid: signature is invalid"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return f"token signature is invalid: signing method {alg} is invalid"
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token has invalid claims: token is expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token has invalid claims: token is not valid yet"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token has invalid claims: token is missing required claim: {exc.claim} claim is required"
    return f"token is malformed: {exc}"
