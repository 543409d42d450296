"""A local stand-in for LiveKit Cloud's server API, served on 127.0.0.1.

LiveKit Cloud is unreachable from CI and from a developer's "deploy rehearsal", so this module serves
the small part of LiveKit's Twirp API that callsaver-infra uses (SIP dispatch rules, rooms, room
composite egress) on an ephemeral loopback port. It speaks the real wire protocol: the unmodified
``livekit.api.LiveKitAPI`` client (protobuf bodies, HS256 bearer tokens) works against it, and so does
a hand-written JSON Twirp request.

Behaviour copied from LiveKit's open-source server (livekit/livekit ``pkg/service``) and egress
(livekit/egress), so that code tested here meets the same answers live:

* Tokens are verified like ``auth.APIKeyTokenVerifier``: HS256 only, ``iss`` must be the API key, ``exp``
  required, ``nbf``/``exp`` checked with a one-minute leeway. Failures are HTTP 401 ``unauthenticated``.
* A missing grant is reported the way LiveKit's ``twirpAuthError`` does it: HTTP 401 ``unauthenticated``
  with the message ``permissions denied`` (not 403). Pass ``grant_error_code="permission_denied"`` for a
  server that answers 403 ``permission_denied`` instead.
* Dispatch-rule conflicts (same trunk + inbound number + number + PIN) are rejected with
  ``invalid_argument``, updating or deleting an unknown rule gives ``not_found``.
* Egress outputs are "recorded" by uploading a few bytes to S3 with the request's own credentials; S3
  credentials are redacted (``*``) in every ``EgressInfo`` the server hands out, as LiveKit does.

Nothing here logs or stores the API secret, bearer tokens or S3 secret keys.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import string
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import egress as proto_egress
from livekit.protocol import models as proto_models
from livekit.protocol import room as proto_room
from livekit.protocol import sip as proto_sip

__all__ = [
    "FAULT_KINDS",
    "LocalLiveKitServer",
    "RequestRecord",
    "expand_egress_filepath",
]

logger = logging.getLogger(__name__)

FAULT_KINDS = ("unavailable", "internal", "timeout", "unauthenticated")

# Twirp's code -> HTTP status table (twitchtv/twirp errors.go, ServerHTTPStatusFromErrorCode).
_TWIRP_HTTP_STATUS = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}

# Registered JWT claims; everything else in a LiveKit token is a grant.
_REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})

# LiveKit ids are a prefix plus 12 random characters.
_ID_ALPHABET = string.ascii_letters + string.digits

_ACTIVE_EGRESS = (
    proto_egress.EgressStatus.EGRESS_STARTING,
    proto_egress.EgressStatus.EGRESS_ACTIVE,
    proto_egress.EgressStatus.EGRESS_ENDING,
)

_FILE_EXTENSIONS = {
    proto_egress.EncodedFileType.OGG: ".ogg",
    proto_egress.EncodedFileType.MP4: ".mp4",
    proto_egress.EncodedFileType.MP3: ".mp3",
}
# Extensions livekit/egress recognises and swaps for the right one (types.FileExtensions).
_KNOWN_EXTENSIONS = frozenset({".ogg", ".mp4", ".mp3", ".ts", ".webm", ".m3u8", ".jpeg", ".txt"})
_CONTENT_TYPES = {".ogg": "audio/ogg", ".mp4": "video/mp4", ".mp3": "audio/mpeg"}


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


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def _now_ns() -> int:
    return time.time_ns()


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _normalize_number(number: str) -> str:
    # Mirrors livekit.NormalizeNumber closely enough for conflict checks: formatting stripped, "+" added.
    if not number:
        return ""
    stripped = re.sub(r"[\s\-().]", "", number)
    if stripped and stripped[0] != "+" and stripped.isdigit():
        stripped = "+" + stripped
    return stripped


def _rule_pin_and_room(info: proto_sip.SIPDispatchRuleInfo) -> tuple[str, str]:
    kind = info.rule.WhichOneof("rule")
    if kind == "dispatch_rule_direct":
        return info.rule.dispatch_rule_direct.pin, info.rule.dispatch_rule_direct.room_name
    if kind == "dispatch_rule_individual":
        return info.rule.dispatch_rule_individual.pin, info.rule.dispatch_rule_individual.room_prefix
    if kind == "dispatch_rule_callee":
        return info.rule.dispatch_rule_callee.pin, info.rule.dispatch_rule_callee.room_prefix
    raise _TwirpFailure("invalid_argument", "Unsupported SIP Dispatch Rule: <nil>")


def _apply_list_update(current: list[str], update: proto_models.ListUpdate) -> list[str]:
    if update.clear:
        return []
    result = list(update.set) if len(update.set) else list(current)
    for item in update.add:
        if item not in result:
            result.append(item)
    return [item for item in result if item not in set(update.remove)]


def _file_extension(request: proto_egress.RoomCompositeEgressRequest, output: proto_egress.EncodedFileOutput) -> str:
    if output.file_type in _FILE_EXTENSIONS:
        return _FILE_EXTENSIONS[output.file_type]
    # DEFAULT_FILETYPE: livekit/egress records audio-only as OGG (opus), anything with video as MP4.
    return ".ogg" if request.audio_only else ".mp4"


def expand_egress_filepath(
    template: str,
    *,
    room_name: str,
    room_id: str,
    extension: str,
    now: datetime | None = None,
) -> str:
    """Expand an egress ``filepath`` the way livekit/egress does and make it end in ``extension``.

    ``{room_name}``, ``{room_id}``, ``{time}`` (``YYYY-MM-DDTHHMMSS``), ``{utc}`` (``YYYYMMDDHHMMSS`` followed
    by the milliseconds, as livekit/egress formats it) and ``{retry}`` (always 0 here) are replaced; an
    empty path or one ending in ``/`` gets ``<room_name>-<time>``; a wrong known extension is swapped.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%Y-%m-%dT%H%M%S")
    replacements = {
        "{room_name}": room_name,
        "{room_id}": room_id,
        "{time}": stamp,
        "{utc}": f"{moment.strftime('%Y%m%d%H%M%S')}{moment.microsecond // 1000}",
        "{retry}": "0",
    }
    path = template
    for placeholder, value in replacements.items():
        path = path.replace(placeholder, value)
    if not path or path.endswith("/"):
        return f"{path}{room_name}-{stamp}{extension}"
    if path.endswith(extension):
        return path
    dot = path.rfind(".")
    if dot > 0 and path[dot:] in _KNOWN_EXTENSIONS:
        path = path[:dot]
    return path + extension


def _redacted(request: proto_egress.RoomCompositeEgressRequest) -> proto_egress.RoomCompositeEgressRequest:
    # livekit/egress blanks S3 keys in every EgressInfo it reports (redactOutputs); so must we.
    copy = proto_egress.RoomCompositeEgressRequest()
    copy.CopyFrom(request)
    outputs = list(copy.file_outputs)
    if copy.HasField("file"):
        outputs.append(copy.file)
    for output in outputs:
        if output.HasField("s3"):
            output.s3.access_key = "*" * len(output.s3.access_key)
            output.s3.secret = "*" * len(output.s3.secret)
            output.s3.session_token = "*" * len(output.s3.session_token)
    return copy


def _s3_error_text(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        code = error.get("Code")
        if code:
            return f"{code}: {error.get('Message') or code}"
    return str(exc) or type(exc).__name__


class _PendingUpload(NamedTuple):
    output: proto_egress.EncodedFileOutput  # unredacted: holds the S3 credentials, never exposed
    key: str
    extension: str


Handler = Callable[[Any], Message]


class LocalLiveKitServer:
    """LiveKit server API stand-in on ``http://127.0.0.1:<ephemeral port>`` (see the module docstring).

    Use as ``with LocalLiveKitServer(key, secret) as lk:`` or call :meth:`start` / :meth:`stop`. State is
    exposed for assertions: ``dispatch_rules`` (id -> ``SIPDispatchRuleInfo``), ``rooms`` (name -> ``Room``),
    ``egresses`` (id -> ``EgressInfo``) and ``requests`` (list of :class:`RequestRecord`). Stored messages
    are replaced, never mutated in place, so a reference taken by a test stays consistent; hold ``lock``
    while iterating a dict that the server may be changing.
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        s3_endpoint_url: str | None = None,
        egress_upload_delay: float | None = 0.2,
        fault_delay: float = 5.0,
        grant_error_code: str = "unauthenticated",
        clock_leeway: float = 60.0,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must be non-empty")
        if grant_error_code not in ("unauthenticated", "permission_denied"):
            raise ValueError("grant_error_code must be 'unauthenticated' or 'permission_denied'")
        if not 0 < fault_delay <= 60:
            raise ValueError("fault_delay must be in (0, 60] seconds")
        if egress_upload_delay is not None and egress_upload_delay < 0:
            raise ValueError("egress_upload_delay must be >= 0 or None")
        self.api_key = api_key
        self._api_secret = api_secret.encode()
        self.s3_endpoint_url = s3_endpoint_url
        self.egress_upload_delay = egress_upload_delay
        self.fault_delay = fault_delay
        self.grant_error_code = grant_error_code
        self.clock_leeway = clock_leeway

        self.lock = threading.RLock()
        self.dispatch_rules: dict[str, proto_sip.SIPDispatchRuleInfo] = {}
        self.rooms: dict[str, proto_models.Room] = {}
        self.egresses: dict[str, proto_egress.EgressInfo] = {}
        self.requests: list[RequestRecord] = []

        self._faults: dict[str, list[str]] = {}
        self._pending_uploads: dict[str, list[_PendingUpload]] = {}
        self._egress_stop: dict[str, threading.Event] = {}
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()

        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._aio_stopping: asyncio.Event | None = None

        admin = self._require_sip_admin
        record = self._require_room_record
        self._routes: dict[str, dict[str, tuple[type[Message], Callable[[dict[str, Any]], bool], Handler]]] = {
            "livekit.SIP": {
                "ListSIPDispatchRule": (proto_sip.ListSIPDispatchRuleRequest, admin, self._list_rules),
                "CreateSIPDispatchRule": (proto_sip.CreateSIPDispatchRuleRequest, admin, self._create_rule),
                "UpdateSIPDispatchRule": (proto_sip.UpdateSIPDispatchRuleRequest, admin, self._update_rule),
                "DeleteSIPDispatchRule": (proto_sip.DeleteSIPDispatchRuleRequest, admin, self._delete_rule),
            },
            "livekit.RoomService": {
                "CreateRoom": (proto_room.CreateRoomRequest, self._require_room_create, self._create_room),
                "ListRooms": (proto_room.ListRoomsRequest, self._require_room_list, self._list_rooms),
                "DeleteRoom": (proto_room.DeleteRoomRequest, self._require_room_create, self._delete_room),
            },
            "livekit.Egress": {
                "StartRoomCompositeEgress": (
                    proto_egress.RoomCompositeEgressRequest,
                    record,
                    self._start_room_composite_egress,
                ),
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
        return f"LocalLiveKitServer(api_key={self.api_key!r}, {where})"

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
        """Stop serving, wake any delayed ("timeout" fault) responses and abort unfinished egresses."""
        if self._thread is None:
            return
        self._stopping.set()
        with self.lock:
            for event in self._egress_stop.values():
                event.set()
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

    def clear_faults(self) -> None:
        """Drop every fault that has not fired yet."""
        with self.lock:
            self._faults.clear()

    def methods_called(self) -> list[str]:
        """Method names from the request log, in order."""
        with self.lock:
            return [record.method for record in self.requests]

    def add_dispatch_rule(self, rule: proto_sip.SIPDispatchRuleInfo, *, rule_id: str | None = None) -> str:
        """Seed a dispatch rule as if created earlier; returns its ``SDR_`` id (new, or ``rule_id`` when given, so a
        rehearsal can match the id an environment's config names)."""
        info = proto_sip.SIPDispatchRuleInfo()
        info.CopyFrom(rule)
        info.sip_dispatch_rule_id = ""
        with self.lock:
            return self._store_new_rule(info, rule_id=rule_id).sip_dispatch_rule_id

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
    ) -> tuple[str, str | None]:
        """Act as LiveKit SIP dispatching a call through rule ``rule_id``.

        Creates the room the rule dispatches to with the rule's ``room_config``; if that carries an
        automatic room-composite egress it is started, as LiveKit does on room creation. Returns
        ``(room_name, egress_id or None)``. Room naming follows livekit/sip approximately
        (``<prefix>_<caller>_<random>`` for individual rules).
        """
        with self.lock:
            info = self.dispatch_rules.get(rule_id)
            if info is None:
                raise KeyError(f"no dispatch rule {rule_id!r}")
            kind = info.rule.WhichOneof("rule")
            suffix = _new_id("")
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
            existed = room_name in self.rooms
            self._create_room(request)
            if existed or not request.egress.HasField("room"):
                return room_name, None
            started = [e for e in self.egresses.values() if e.room_name == room_name]
            return room_name, (started[-1].egress_id if started else None)

    def wait_for_egress(self, egress_id: str, timeout: float = 5.0) -> proto_egress.EgressInfo:
        """Block until egress ``egress_id`` reaches a final status; returns its ``EgressInfo``."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                info = self.egresses[egress_id]
            if info.status not in _ACTIVE_EGRESS:
                return info
            if time.monotonic() >= deadline:
                raise TimeoutError(f"egress {egress_id} still {proto_egress.EgressStatus.Name(info.status)}")
            time.sleep(0.02)

    # ------------------------------------------------------------------ HTTP / Twirp plumbing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.path == "/settings/regions":
                return self._regions(request)
            if request.method != "POST":
                raise _TwirpFailure("bad_route", f'unsupported method "{request.method}" (only POST is allowed)')
            match = re.fullmatch(r"/twirp/([A-Za-z0-9_.]+)/([A-Za-z0-9_]+)", request.path)
            route = self._routes.get(match.group(1), {}).get(match.group(2)) if match else None
            if match is None or route is None:
                raise _TwirpFailure("bad_route", f'no handler for path "{request.path}"')
            method = match.group(2)
            request_cls, grant_check, handler = route

            claims, auth_failure = self._authenticate(request)
            with self.lock:
                self.requests.append(RequestRecord(method, self._grants_of(claims)))
                queue = self._faults.get(method)
                fault = queue.pop(0) if queue else None
            if fault is not None:
                logger.info("injecting %s fault into %s", fault, method)
                await self._inject(fault)
            if auth_failure is not None:
                raise auth_failure

            json_body = self._is_json(request)
            body = await request.read()
            message = self._decode(request_cls, body, json_body)
            if claims is None:
                raise _TwirpFailure("unauthenticated", "permissions denied")
            if not grant_check(claims):
                raise _TwirpFailure(self.grant_error_code, "permissions denied")
            with self.lock:
                result = handler(message)
            logger.debug("%s ok", method)
            return self._encode(result, json_body)
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

    def _regions(self, request: web.Request) -> web.Response:
        # The client only asks for regions when failing over from a *.livekit.cloud host; answer with
        # "no other regions" so a forced failover retries against this server.
        claims, failure = self._authenticate(request)
        if failure is None and claims is None:
            failure = _TwirpFailure("unauthenticated", "permissions denied")
        if failure is not None:
            return self._error_response(failure)
        return web.json_response({"regions": []})

    @staticmethod
    def _is_json(request: web.Request) -> bool:
        content_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type == "application/json":
            return True
        if content_type == "application/protobuf":
            return False
        raise _TwirpFailure("bad_route", f'unexpected Content-Type: "{request.headers.get("Content-Type", "")}"')

    @staticmethod
    def _decode(cls: type[Message], body: bytes, json_body: bool) -> Message:
        message = cls()
        try:
            if json_body:
                json_format.Parse(body.decode() or "{}", message, ignore_unknown_fields=True)
            else:
                message.ParseFromString(body)
        except (DecodeError, json_format.ParseError, ValueError):
            kind = "json" if json_body else "protobuf"
            raise _TwirpFailure("malformed", f"the {kind} request could not be decoded") from None
        return message

    @staticmethod
    def _encode(message: Message, json_body: bool) -> web.Response:
        if json_body:
            text = json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)
            return web.Response(text=text, content_type="application/json")
        return web.Response(body=message.SerializeToString(), content_type="application/protobuf")

    @staticmethod
    def _error_response(failure: _TwirpFailure) -> web.Response:
        return web.json_response(
            {"code": failure.code, "msg": failure.msg}, status=_TWIRP_HTTP_STATUS.get(failure.code, 500)
        )

    # ------------------------------------------------------------------ auth

    def _authenticate(self, request: web.Request) -> tuple[dict[str, Any] | None, _TwirpFailure | None]:
        """Return (claims, None) for a valid token, (None, None) when none was sent, else (None, failure)."""
        header = request.headers.get("Authorization", "")
        if header:
            if not header.startswith("Bearer "):
                return None, _TwirpFailure("unauthenticated", "invalid authorization header. Must start with Bearer ")
            token = header[len("Bearer ") :]
        else:
            token = request.query.get("access_token", "")
        if not token:
            return None, None
        try:
            return self._verify_token(token), None
        except _TwirpFailure as failure:
            return None, failure

    def _verify_token(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise _TwirpFailure("unauthenticated", "invalid authorization token")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error):
            raise _TwirpFailure("unauthenticated", "invalid authorization token") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _TwirpFailure("unauthenticated", "invalid authorization token")
        issuer = claims.get("iss")
        if issuer != self.api_key:
            raise _TwirpFailure("unauthenticated", f"invalid API key: {issuer}")
        # Only HS256: accepting the token's own "alg" would let "none" or a downgrade through.
        expected = hmac.new(self._api_secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if header.get("alg") != "HS256" or not hmac.compare_digest(expected, signature):
            raise _TwirpFailure("unauthenticated", "invalid token: signature verification failed")
        now = time.time()
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            raise _TwirpFailure("unauthenticated", "invalid token: missing exp claim")
        if now > exp + self.clock_leeway:
            raise _TwirpFailure("unauthenticated", "invalid token: token is expired (exp)")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and now < nbf - self.clock_leeway:
            raise _TwirpFailure("unauthenticated", "invalid token: token not valid yet (nbf)")
        return claims

    @staticmethod
    def _grants_of(claims: dict[str, Any] | None) -> dict[str, Any]:
        if claims is None:
            return {}
        grants: dict[str, Any] = json.loads(
            json.dumps({k: v for k, v in claims.items() if k not in _REGISTERED_CLAIMS})
        )
        return grants

    @staticmethod
    def _grant(claims: dict[str, Any], section: str, name: str) -> bool:
        block = claims.get(section)
        return isinstance(block, dict) and block.get(name) is True

    def _require_sip_admin(self, claims: dict[str, Any]) -> bool:
        return self._grant(claims, "sip", "admin")

    def _require_room_record(self, claims: dict[str, Any]) -> bool:
        return self._grant(claims, "video", "roomRecord")

    def _require_room_create(self, claims: dict[str, Any]) -> bool:
        return self._grant(claims, "video", "roomCreate")

    def _require_room_list(self, claims: dict[str, Any]) -> bool:
        return self._grant(claims, "video", "roomList")

    # ------------------------------------------------------------------ SIP dispatch rules (lock held)

    def _check_conflicts(self, candidate: proto_sip.SIPDispatchRuleInfo) -> None:
        # sip.DispatchRuleValidator: one rule per (PIN, trunk, inbound number, number); empty lists are
        # wildcards that only collide with other wildcards.
        seen: dict[tuple[str, str, str, str], proto_sip.SIPDispatchRuleInfo] = {}
        others = [r for r in self.dispatch_rules.values() if r.sip_dispatch_rule_id != candidate.sip_dispatch_rule_id]
        for rule in [*others, candidate]:
            pin, _ = _rule_pin_and_room(rule)
            for trunk in list(rule.trunk_ids) or [""]:
                for inbound in list(rule.inbound_numbers) or [""]:
                    for number in list(rule.numbers) or [""]:
                        key = (pin, trunk, _normalize_number(inbound), _normalize_number(number))
                        previous = seen.get(key)
                        if previous is not None:
                            raise _TwirpFailure(
                                "invalid_argument",
                                "Dispatch rule for the same trunk, inbound number, number, and PIN "
                                "combination already exists in dispatch rule "
                                f'"{previous.sip_dispatch_rule_id or "<new>"}" "{previous.name or "<blank name>"}"',
                            )
                        seen[key] = rule

    def _store_new_rule(
        self, info: proto_sip.SIPDispatchRuleInfo, *, rule_id: str | None = None
    ) -> proto_sip.SIPDispatchRuleInfo:
        self._check_conflicts(info)
        if rule_id is not None and rule_id in self.dispatch_rules:
            raise ValueError(f"dispatch rule {rule_id} already exists")
        info.sip_dispatch_rule_id = rule_id or _new_id("SDR_")
        info.created_at.GetCurrentTime()
        info.updated_at.CopyFrom(info.created_at)
        self.dispatch_rules[info.sip_dispatch_rule_id] = info
        return info

    def _list_rules(self, req: proto_sip.ListSIPDispatchRuleRequest) -> proto_sip.ListSIPDispatchRuleResponse:
        wanted_ids = set(req.dispatch_rule_ids)
        wanted_trunks = set(req.trunk_ids)
        items = []
        for rule_id in sorted(self.dispatch_rules):
            rule = self.dispatch_rules[rule_id]
            if wanted_ids and rule_id not in wanted_ids:
                continue
            if wanted_trunks and rule.trunk_ids and not wanted_trunks & set(rule.trunk_ids):
                continue
            if req.HasField("page") and req.page.after_id and rule_id <= req.page.after_id:
                continue
            items.append(rule)
        if req.HasField("page") and req.page.limit > 0:
            items = items[: req.page.limit]
        return proto_sip.ListSIPDispatchRuleResponse(items=items)

    def _create_rule(self, req: proto_sip.CreateSIPDispatchRuleRequest) -> proto_sip.SIPDispatchRuleInfo:
        info = proto_sip.SIPDispatchRuleInfo()
        if req.HasField("dispatch_rule"):
            info.CopyFrom(req.dispatch_rule)
        else:  # the deprecated flat request form
            if req.HasField("rule"):
                info.rule.CopyFrom(req.rule)
            info.trunk_ids.extend(req.trunk_ids)
            info.hide_phone_number = req.hide_phone_number
            info.inbound_numbers.extend(req.inbound_numbers)
            info.name = req.name
            info.metadata = req.metadata
            info.attributes.update(req.attributes)
            info.room_preset = req.room_preset
            if req.HasField("room_config"):
                info.room_config.CopyFrom(req.room_config)
        info.sip_dispatch_rule_id = ""
        _rule_pin_and_room(info)
        return self._store_new_rule(info)

    def _update_rule(self, req: proto_sip.UpdateSIPDispatchRuleRequest) -> proto_sip.SIPDispatchRuleInfo:
        if not req.sip_dispatch_rule_id:
            raise _TwirpFailure("invalid_argument", "dispatch rule ID is required")
        action = req.WhichOneof("action")
        if action is None:
            raise _TwirpFailure("invalid_argument", "missing or unsupported update action")
        current = self.dispatch_rules.get(req.sip_dispatch_rule_id)
        if current is None:
            raise _TwirpFailure("not_found", "requested sip dispatch rule does not exist")
        updated = proto_sip.SIPDispatchRuleInfo()
        if action == "replace":
            updated.CopyFrom(req.replace)
            updated.created_at.CopyFrom(current.created_at)
        else:
            updated.CopyFrom(current)
            diff = req.update
            if diff.HasField("trunk_ids"):
                trunks = _apply_list_update(list(updated.trunk_ids), diff.trunk_ids)
                del updated.trunk_ids[:]
                updated.trunk_ids.extend(trunks)
            if diff.HasField("rule"):
                updated.rule.CopyFrom(diff.rule)
            if diff.HasField("name"):
                updated.name = diff.name
            if diff.HasField("metadata"):
                updated.metadata = diff.metadata
            if diff.HasField("media_encryption"):
                updated.media_encryption = diff.media_encryption
            if diff.HasField("media"):
                updated.media.CopyFrom(diff.media)
            for key, value in diff.attributes.items():
                if value:
                    updated.attributes[key] = value
                else:
                    updated.attributes.pop(key, None)
        updated.sip_dispatch_rule_id = current.sip_dispatch_rule_id
        _rule_pin_and_room(updated)
        self._check_conflicts(updated)
        updated.updated_at.GetCurrentTime()
        self.dispatch_rules[updated.sip_dispatch_rule_id] = updated
        return updated

    def _delete_rule(self, req: proto_sip.DeleteSIPDispatchRuleRequest) -> proto_sip.SIPDispatchRuleInfo:
        if not req.sip_dispatch_rule_id:
            raise _TwirpFailure("invalid_argument", "dispatch rule ID is required")
        info = self.dispatch_rules.pop(req.sip_dispatch_rule_id, None)
        if info is None:
            raise _TwirpFailure("not_found", "requested sip dispatch rule does not exist")
        return info

    # ------------------------------------------------------------------ rooms (lock held)

    def _create_room(self, req: proto_room.CreateRoomRequest) -> proto_models.Room:
        if not req.name:
            raise _TwirpFailure("invalid_argument", "no room name")
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
        self.rooms[req.name] = room
        if req.HasField("egress") and req.egress.HasField("room"):
            # LiveKit's RoomService starts a room's automatic room-composite egress on creation.
            auto = proto_egress.RoomCompositeEgressRequest()
            auto.CopyFrom(req.egress.room)
            auto.room_name = req.name
            self._start_room_composite_egress(auto)
        return room

    def _list_rooms(self, req: proto_room.ListRoomsRequest) -> proto_room.ListRoomsResponse:
        names = set(req.names)
        rooms = [room for name, room in self.rooms.items() if not names or name in names]
        return proto_room.ListRoomsResponse(rooms=rooms)

    def _delete_room(self, req: proto_room.DeleteRoomRequest) -> proto_room.DeleteRoomResponse:
        if self.rooms.pop(req.room, None) is None:
            raise _TwirpFailure("not_found", "requested room does not exist")
        # Closing a room ends its recordings, which then upload.
        for egress_id, info in self.egresses.items():
            if info.room_name == req.room and info.status in _ACTIVE_EGRESS:
                self._egress_stop[egress_id].set()
        return proto_room.DeleteRoomResponse()

    # ------------------------------------------------------------------ egress (lock held)

    def _start_room_composite_egress(self, req: proto_egress.RoomCompositeEgressRequest) -> proto_egress.EgressInfo:
        if not req.room_name:
            raise _TwirpFailure("invalid_argument", "no room name")
        room = self.rooms.get(req.room_name)
        if room is None:
            raise _TwirpFailure("not_found", "requested room does not exist")
        outputs = list(req.file_outputs)
        if req.HasField("file"):
            outputs.append(req.file)
        if not (outputs or req.stream_outputs or req.segment_outputs or req.image_outputs or req.WhichOneof("output")):
            raise _TwirpFailure("invalid_argument", "no outputs")
        egress_id = _new_id("EG_")
        now = datetime.now(UTC)
        uploads = []
        for output in outputs:
            extension = _file_extension(req, output)
            key = expand_egress_filepath(
                output.filepath, room_name=room.name, room_id=room.sid, extension=extension, now=now
            )
            uploads.append(_PendingUpload(output, key, extension))
        info = proto_egress.EgressInfo(
            egress_id=egress_id,
            room_id=room.sid,
            room_name=room.name,
            source_type=proto_egress.EgressSourceType.EGRESS_SOURCE_TYPE_WEB,
            status=proto_egress.EgressStatus.EGRESS_STARTING,
            updated_at=_now_ns(),
            room_composite=_redacted(req),
        )
        self.egresses[egress_id] = info
        self._pending_uploads[egress_id] = uploads
        stop_event = threading.Event()
        self._egress_stop[egress_id] = stop_event
        if self._stopping.is_set():
            stop_event.set()
        worker = threading.Thread(
            target=self._run_egress, args=(egress_id, stop_event), name=f"egress-{egress_id}", daemon=True
        )
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()
        return info

    def _stop_egress(self, req: proto_egress.StopEgressRequest) -> proto_egress.EgressInfo:
        info = self.egresses.get(req.egress_id)
        if info is None:
            raise _TwirpFailure("not_found", "egress does not exist")
        if info.status not in (
            proto_egress.EgressStatus.EGRESS_STARTING,
            proto_egress.EgressStatus.EGRESS_ACTIVE,
        ):
            status = proto_egress.EgressStatus.Name(info.status)
            raise _TwirpFailure("failed_precondition", f"egress with status {status} cannot be stopped")
        updated = self._replace_egress(req.egress_id, status=proto_egress.EgressStatus.EGRESS_ENDING)
        self._egress_stop[req.egress_id].set()
        return updated

    def _list_egress(self, req: proto_egress.ListEgressRequest) -> proto_egress.ListEgressResponse:
        items = []
        for info in self.egresses.values():
            if req.room_name and info.room_name != req.room_name:
                continue
            if req.egress_id and info.egress_id != req.egress_id:
                continue
            if req.active and info.status not in _ACTIVE_EGRESS:
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

    def _run_egress(self, egress_id: str, stop_event: threading.Event) -> None:
        with self.lock:
            if self.egresses[egress_id].status == proto_egress.EgressStatus.EGRESS_STARTING:
                self._replace_egress(egress_id, status=proto_egress.EgressStatus.EGRESS_ACTIVE, started_at=_now_ns())
        stop_event.wait(self.egress_upload_delay)
        with self.lock:
            uploads = self._pending_uploads.pop(egress_id, [])
            if self._stopping.is_set():
                self._replace_egress(
                    egress_id,
                    status=proto_egress.EgressStatus.EGRESS_ABORTED,
                    error="egress aborted: local LiveKit server stopped",
                    ended_at=_now_ns(),
                )
                return
            started = self.egresses[egress_id].started_at or _now_ns()
            self._replace_egress(egress_id, status=proto_egress.EgressStatus.EGRESS_ENDING)
            request = self.egresses[egress_id].room_composite
        results: list[proto_egress.FileInfo] = []
        error = ""
        for upload in uploads:
            payload = b"OggS" + bytes(60) if upload.extension == ".ogg" else b"LKLOCAL-EGRESS" + bytes(50)
            ended = _now_ns()
            file_info = proto_egress.FileInfo(
                filename=upload.key,
                started_at=started,
                ended_at=ended,
                duration=ended - started,
                size=len(payload),
            )
            if upload.output.HasField("s3"):
                try:
                    file_info.location = self._upload_s3(upload.output.s3, upload.key, payload, upload.extension)
                except Exception as exc:  # any upload failure ends the egress, like livekit/egress
                    error = _s3_error_text(exc)
                    logger.info("egress %s upload failed: %s", egress_id, error)
                    break
            results.append(file_info)
        with self.lock:
            if error:
                self._replace_egress(
                    egress_id, status=proto_egress.EgressStatus.EGRESS_FAILED, error=error, ended_at=_now_ns()
                )
                return
            updated = self._replace_egress(
                egress_id, status=proto_egress.EgressStatus.EGRESS_COMPLETE, ended_at=_now_ns()
            )
            final = proto_egress.EgressInfo()
            final.CopyFrom(updated)
            final.file_results.extend(results)
            if len(results) == 1 and request.HasField("file"):
                final.file.CopyFrom(results[0])  # the deprecated single-result field
            self.egresses[egress_id] = final
        logger.info("egress %s complete", egress_id)

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
        client = boto3.session.Session().client(
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
