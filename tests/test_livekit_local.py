"""Tests of callsaver_infra.livekit_local, driven by the real ``livekit-api`` client.

LiveKit Cloud is unreachable from here, so every test talks to a LocalLiveKitServer bound to
127.0.0.1 that speaks LiveKit's Twirp protocol; the S3 side of egress is a moto server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import boto3  # type: ignore[import-untyped]
import pytest
from livekit import api
from livekit.api.twirp_client import TwirpClient, TwirpError

from callsaver_infra.livekit_local import LocalLiveKitServer, expand_egress_filepath

API_KEY = "APItestkey"
API_SECRET = "test-secret-not-real-0123456789abcdef"
S3_ACCESS_KEY = "AKIDFAKEFAKEFAKEFAKE"
S3_SECRET = "fake-s3-secret-not-real-abcdefghijklmnop"
REGION = "us-east-1"


# --------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture
def lk() -> Iterator[LocalLiveKitServer]:
    with LocalLiveKitServer(API_KEY, API_SECRET, fault_delay=2.0) as server:
        yield server


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET,
    )


def client(lk: LocalLiveKitServer, **kwargs: Any) -> api.LiveKitAPI:
    if "token" in kwargs:
        return api.LiveKitAPI(lk.url, **kwargs)
    return api.LiveKitAPI(lk.url, API_KEY, kwargs.pop("api_secret", API_SECRET), **kwargs)


def token(video: api.VideoGrants | None = None, sip: api.SIPGrants | None = None) -> str:
    tok = api.AccessToken(API_KEY, API_SECRET)
    if video is not None:
        tok.with_grants(video)
    if sip is not None:
        tok.with_sip_grants(sip)
    return tok.to_jwt()


def recording_rule(bucket: str, filepath: str, endpoint: str = "") -> api.SIPDispatchRuleInfo:
    s3 = api.S3Upload(access_key=S3_ACCESS_KEY, secret=S3_SECRET, region=REGION, bucket=bucket, endpoint=endpoint)
    egress = api.RoomCompositeEgressRequest(
        audio_only=True,
        file_outputs=[api.EncodedFileOutput(file_type=api.EncodedFileType.OGG, filepath=filepath, s3=s3)],
    )
    return api.SIPDispatchRuleInfo(
        name="callsaver-inbound",
        trunk_ids=["ST_trunk1"],
        rule=api.SIPDispatchRule(dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="call")),
        room_config=api.RoomConfiguration(egress=api.RoomEgress(room=egress)),
    )


async def wait_final(lkapi: api.LiveKitAPI, egress_id: str, timeout: float = 5.0) -> api.EgressInfo:
    deadline = time.monotonic() + timeout
    while True:
        items = (await lkapi.egress.list_egress(api.ListEgressRequest(egress_id=egress_id))).items
        assert len(items) == 1
        if items[0].status not in (
            api.EgressStatus.EGRESS_STARTING,
            api.EgressStatus.EGRESS_ACTIVE,
            api.EgressStatus.EGRESS_ENDING,
        ):
            return items[0]
        assert time.monotonic() < deadline, f"egress still {api.EgressStatus.Name(items[0].status)}"
        await asyncio.sleep(0.05)


def start_request(room: str, bucket: str, filepath: str) -> api.RoomCompositeEgressRequest:
    return api.RoomCompositeEgressRequest(
        room_name=room,
        audio_only=True,
        file_outputs=[
            api.EncodedFileOutput(
                filepath=filepath,
                s3=api.S3Upload(access_key=S3_ACCESS_KEY, secret=S3_SECRET, region=REGION, bucket=bucket),
            )
        ],
    )


# --------------------------------------------------------------------------- dispatch rules


def test_dispatch_rule_round_trip_preserves_room_egress(lk: LocalLiveKitServer) -> None:
    """List/create/replace/delete a dispatch rule carrying room_config.egress.room with the real client.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    wanted = recording_rule("callsaver-recordings", "calls/{room_name}-{time}.ogg")

    async def scenario() -> None:
        async with client(lk) as lkapi:
            assert list((await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items) == []
            created = await lkapi.sip.create_dispatch_rule(api.CreateSIPDispatchRuleRequest(dispatch_rule=wanted))
            assert re.fullmatch(r"SDR_[A-Za-z0-9]{12}", created.sip_dispatch_rule_id)
            assert created.room_config == wanted.room_config
            assert created.HasField("created_at")

            listed = (await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
            assert [r.sip_dispatch_rule_id for r in listed] == [created.sip_dispatch_rule_id]
            assert listed[0].room_config == wanted.room_config
            assert listed[0].room_config.egress.room.file_outputs[0].s3.secret == S3_SECRET

            replacement = recording_rule("callsaver-recordings-v2", "v2/{room_name}")
            replacement.name = "callsaver-inbound-v2"
            updated = await lkapi.sip.update_dispatch_rule(created.sip_dispatch_rule_id, replacement)
            assert updated.sip_dispatch_rule_id == created.sip_dispatch_rule_id
            assert updated.name == "callsaver-inbound-v2"
            assert updated.room_config == replacement.room_config
            assert updated.created_at == created.created_at

            stored = lk.dispatch_rules[created.sip_dispatch_rule_id]
            assert stored.room_config.egress.room.file_outputs[0].s3.bucket == "callsaver-recordings-v2"
            assert stored.room_config.egress.room.audio_only is True

            deleted = await lkapi.sip.delete_dispatch_rule(
                api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=created.sip_dispatch_rule_id)
            )
            assert deleted.name == "callsaver-inbound-v2"
            assert list((await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items) == []

    asyncio.run(scenario())
    assert lk.dispatch_rules == {}
    assert lk.methods_called() == [
        "ListSIPDispatchRule",
        "CreateSIPDispatchRule",
        "ListSIPDispatchRule",
        "UpdateSIPDispatchRule",
        "DeleteSIPDispatchRule",
        "ListSIPDispatchRule",
    ]
    assert all(record.grants["sip"]["admin"] is True for record in lk.requests)


def test_update_fields_form_and_list_filters(lk: LocalLiveKitServer) -> None:
    """The `update` (fields) form of UpdateSIPDispatchRule and ListSIPDispatchRule's id/trunk filters.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    seeded = lk.add_dispatch_rule(recording_rule("b1", "x"))
    other = api.SIPDispatchRuleInfo(
        trunk_ids=["ST_other"],
        rule=api.SIPDispatchRule(dispatch_rule_direct=api.SIPDispatchRuleDirect(room_name="lobby")),
    )
    other_id = lk.add_dispatch_rule(other)

    async def scenario() -> None:
        async with client(lk) as lkapi:
            updated = await lkapi.sip.update_dispatch_rule_fields(
                seeded, name="renamed", trunk_ids=api.ListUpdate(add=["ST_trunk2"]), attributes={"k": "v"}
            )
            assert updated.name == "renamed"
            assert list(updated.trunk_ids) == ["ST_trunk1", "ST_trunk2"]
            assert dict(updated.attributes) == {"k": "v"}
            assert updated.room_config.egress.room.file_outputs[0].s3.bucket == "b1"

            by_trunk = await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest(trunk_ids=["ST_other"]))
            assert [r.sip_dispatch_rule_id for r in by_trunk.items] == [other_id]
            by_id = await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest(dispatch_rule_ids=[seeded]))
            assert [r.name for r in by_id.items] == ["renamed"]

    asyncio.run(scenario())


def test_update_of_unknown_rule_is_not_found(lk: LocalLiveKitServer) -> None:
    """Replacing a dispatch rule id that does not exist gives Twirp not_found (HTTP 404).

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """

    async def scenario() -> TwirpError:
        async with client(lk) as lkapi:
            with pytest.raises(TwirpError) as caught:
                await lkapi.sip.update_dispatch_rule("SDR_doesnotexist", recording_rule("b", "x"))
            return caught.value

    error = asyncio.run(scenario())
    assert (error.code, error.status) == ("not_found", 404)
    assert error.message == "requested sip dispatch rule does not exist"
    assert lk.dispatch_rules == {}


def test_conflicting_rule_is_rejected(lk: LocalLiveKitServer) -> None:
    """A second rule for the same trunk/number/PIN is refused with invalid_argument, as LiveKit does.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    first = lk.add_dispatch_rule(recording_rule("b", "x"))

    async def scenario() -> TwirpError:
        async with client(lk) as lkapi:
            with pytest.raises(TwirpError) as caught:
                await lkapi.sip.create_dispatch_rule(
                    api.CreateSIPDispatchRuleRequest(dispatch_rule=recording_rule("b", "y"))
                )
            return caught.value

    error = asyncio.run(scenario())
    assert (error.code, error.status) == ("invalid_argument", 400)
    assert first in error.message
    assert list(lk.dispatch_rules) == [first]


def test_json_twirp_requests_are_served(lk: LocalLiveKitServer) -> None:
    """application/json Twirp bodies work too, with proto field names and JSON Twirp errors.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    rule_id = lk.add_dispatch_rule(recording_rule("json-bucket", "x"))
    headers = {"Authorization": f"Bearer {token(sip=api.SIPGrants(admin=True))}"}

    async def scenario() -> tuple[int, dict[str, Any], int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{lk.url}/twirp/livekit.SIP/ListSIPDispatchRule", json={}, headers=headers) as ok:
                ok_body = await ok.json()
                ok_status = ok.status
            async with session.post(
                f"{lk.url}/twirp/livekit.SIP/UpdateSIPDispatchRule",
                json={"sip_dispatch_rule_id": "SDR_missing", "replace": {"name": "n"}},
                headers=headers,
            ) as missing:
                return ok_status, ok_body, missing.status, await missing.json()

    ok_status, ok_body, missing_status, missing_body = asyncio.run(scenario())
    assert ok_status == 200
    assert ok_body["items"][0]["sip_dispatch_rule_id"] == rule_id
    assert ok_body["items"][0]["room_config"]["egress"]["room"]["file_outputs"][0]["s3"]["bucket"] == "json-bucket"
    assert missing_status == 404
    assert missing_body == {"code": "not_found", "msg": "requested sip dispatch rule does not exist"}


# --------------------------------------------------------------------------- auth


def test_wrong_secret_is_unauthenticated(lk: LocalLiveKitServer) -> None:
    """A token signed with the wrong API secret is refused: TwirpError unauthenticated, HTTP 401.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """

    async def scenario() -> TwirpError:
        async with client(lk, api_secret="wrong-secret-also-fake-0123456789abcdef") as lkapi:
            with pytest.raises(TwirpError) as caught:
                await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
            return caught.value

    error = asyncio.run(scenario())
    assert isinstance(error, api.ServerError)  # TwirpError is the deprecated alias of ServerError
    assert (error.code, error.status) == ("unauthenticated", 401)
    assert lk.requests[-1].grants == {}  # unverified claims are not trusted, not even for the log


def test_expired_or_missing_token_is_unauthenticated(lk: LocalLiveKitServer) -> None:
    """An unsigned (alg none) or expired token, or no Authorization at all, gets HTTP 401 unauthenticated.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    expired = (
        api.AccessToken(API_KEY, API_SECRET)
        .with_sip_grants(api.SIPGrants(admin=True))
        .with_ttl(datetime.timedelta(hours=-1))
        .to_jwt()
    )

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims = {"iss": API_KEY, "exp": time.time() + 600, "sip": {"admin": True}}
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."

    async def scenario() -> tuple[TwirpError, int, dict[str, Any]]:
        async with client(lk, token=unsigned) as lkapi:
            with pytest.raises(TwirpError) as alg_none:
                await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
            assert (alg_none.value.code, alg_none.value.status) == ("unauthenticated", 401)
        async with client(lk, token=expired) as lkapi:
            with pytest.raises(TwirpError) as caught:
                await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{lk.url}/twirp/livekit.SIP/ListSIPDispatchRule", json={}) as resp,
        ):
            return caught.value, resp.status, await resp.json()

    error, status, body = asyncio.run(scenario())
    assert (error.code, error.status) == ("unauthenticated", 401)
    assert "expired" in error.message
    assert status == 401
    assert body["code"] == "unauthenticated"


def test_token_without_sip_admin_is_denied() -> None:
    """A video-only token cannot touch dispatch rules; LiveKit answers 401 "permissions denied".

    LiveKit's server wraps grant failures with twirpAuthError (unauthenticated, 401), so that is the
    default; grant_error_code="permission_denied" gives the 403 form. Runs against a local server on
    127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud is unreachable from here.
    """
    video_only = token(video=api.VideoGrants(room_create=True, room_list=True, room_record=True))

    async def call(server: LocalLiveKitServer) -> TwirpError:
        async with client(server, token=video_only) as lkapi:
            with pytest.raises(TwirpError) as caught:
                await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
            return caught.value

    with LocalLiveKitServer(API_KEY, API_SECRET) as faithful:
        error = asyncio.run(call(faithful))
        assert (error.code, error.status, error.message) == ("unauthenticated", 401, "permissions denied")
        assert faithful.requests[-1].grants["video"]["roomRecord"] is True
        assert "sip" not in faithful.requests[-1].grants

    with LocalLiveKitServer(API_KEY, API_SECRET, grant_error_code="permission_denied") as strict:
        error = asyncio.run(call(strict))
        assert (error.code, error.status) == ("permission_denied", 403)


def test_each_method_checks_its_own_grant(lk: LocalLiveKitServer) -> None:
    """CreateRoom needs roomCreate, ListRooms roomList, egress calls roomRecord; sip.admin grants none.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """

    async def denied(tok: str, call: Any) -> bool:
        async with client(lk, token=tok) as lkapi:
            try:
                await call(lkapi)
            except TwirpError as error:
                assert error.message == "permissions denied"
                return True
            return False

    list_only = token(video=api.VideoGrants(room_list=True))
    create_only = token(video=api.VideoGrants(room_create=True))
    sip_admin = token(video=api.VideoGrants(), sip=api.SIPGrants(admin=True))

    def create_room(c: api.LiveKitAPI) -> Any:
        return c.room.create_room(api.CreateRoomRequest(name="r"))

    def list_rooms(c: api.LiveKitAPI) -> Any:
        return c.room.list_rooms(api.ListRoomsRequest())

    def list_egress(c: api.LiveKitAPI) -> Any:
        return c.egress.list_egress(api.ListEgressRequest())

    async def scenario() -> list[bool]:
        return [
            await denied(list_only, create_room),
            await denied(create_only, create_room),
            await denied(create_only, list_rooms),
            await denied(list_only, list_rooms),
            await denied(sip_admin, list_egress),
        ]

    assert asyncio.run(scenario()) == [True, False, True, False, True]
    assert list(lk.rooms) == ["r"]


# --------------------------------------------------------------------------- fault injection


def test_unavailable_fault_is_not_retried_for_a_local_url(lk: LocalLiveKitServer) -> None:
    """livekit-api 1.2.2 only fails over for *.livekit.cloud hosts: a 503 on 127.0.0.1 surfaces at once.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    lk.inject_fault("ListSIPDispatchRule", "unavailable")

    async def scenario() -> TwirpError:
        async with client(lk) as lkapi:
            with pytest.raises(TwirpError) as caught:
                await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
            await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())  # fault used up
            return caught.value

    error = asyncio.run(scenario())
    assert (error.code, error.status) == ("unavailable", 503)
    assert lk.methods_called() == ["ListSIPDispatchRule", "ListSIPDispatchRule"]


def test_unavailable_fault_is_retried_when_failover_is_forced(lk: LocalLiveKitServer) -> None:
    """With failover engaged (as for a Cloud host) the client asks /settings/regions and replays the call.

    Uses TwirpClient's internal _failover_force knob to reach the Cloud code path. Runs against a local
    server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud is unreachable from here.
    """
    lk.inject_fault("ListSIPDispatchRule", "unavailable")
    headers = {"authorization": f"Bearer {token(video=api.VideoGrants(), sip=api.SIPGrants(admin=True))}"}

    async def scenario() -> api.ListSIPDispatchRuleResponse:
        async with aiohttp.ClientSession() as session:
            twirp = TwirpClient(session, lk.url, "livekit", _failover_force=True, _failover_backoff=0.01)
            return await twirp.request(
                "SIP",
                "ListSIPDispatchRule",
                api.ListSIPDispatchRuleRequest(),
                headers,
                api.ListSIPDispatchRuleResponse,
            )

    assert list(asyncio.run(scenario()).items) == []
    assert lk.methods_called() == ["ListSIPDispatchRule", "ListSIPDispatchRule"]


def test_internal_and_unauthenticated_faults(lk: LocalLiveKitServer) -> None:
    """Queued faults fire in order (internal 500, then unauthenticated 401), then service resumes.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    lk.inject_fault("CreateRoom", "internal")
    lk.inject_fault("livekit.RoomService/CreateRoom", "unauthenticated")

    async def scenario() -> list[tuple[str, int]]:
        seen = []
        async with client(lk) as lkapi:
            for _ in range(2):
                with pytest.raises(TwirpError) as caught:
                    await lkapi.room.create_room(api.CreateRoomRequest(name="fault-room"))
                seen.append((caught.value.code, caught.value.status))
            room = await lkapi.room.create_room(api.CreateRoomRequest(name="fault-room"))
            assert room.name == "fault-room"
        return seen

    assert asyncio.run(scenario()) == [("internal", 500), ("unauthenticated", 401)]
    with pytest.raises(ValueError):
        lk.inject_fault("CreateRoom", "teapot")


def test_timeout_fault_and_how_client_timeouts_behave() -> None:
    """A "timeout" fault holds the answer for fault_delay; which client-side timeouts actually fire.

    In livekit-api 1.2.2 TwirpClient passes ``timeout=None`` to aiohttp for ordinary calls, which aiohttp
    reads as "no timeout", so ``LiveKitAPI(timeout=...)`` does not bound them; a per-request
    ``aiohttp.ClientTimeout`` or ``asyncio.wait_for`` does. Runs against a local server on 127.0.0.1
    that speaks LiveKit's Twirp protocol, since LiveKit Cloud is unreachable from here.
    """
    short = aiohttp.ClientTimeout(total=0.3)
    headers = {"authorization": f"Bearer {token(video=api.VideoGrants(room_list=True))}"}
    with LocalLiveKitServer(API_KEY, API_SECRET, fault_delay=1.0) as lk:
        lk.inject_fault("ListRooms", "timeout", count=3)

        async def scenario() -> float:
            async with client(lk, timeout=short) as lkapi:
                began = time.monotonic()
                await lkapi.room.list_rooms(api.ListRoomsRequest())  # session timeout is not applied
                ignored = time.monotonic() - began
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(lkapi.room.list_rooms(api.ListRoomsRequest()), 0.3)
            async with aiohttp.ClientSession() as session:
                twirp = TwirpClient(session, lk.url, "livekit")
                with pytest.raises(asyncio.TimeoutError):
                    await twirp.request(
                        "RoomService",
                        "ListRooms",
                        api.ListRoomsRequest(),
                        headers,
                        api.ListRoomsResponse,
                        timeout=short,
                    )
                rooms = await twirp.request(  # faults used up: answered at once
                    "RoomService",
                    "ListRooms",
                    api.ListRoomsRequest(),
                    headers,
                    api.ListRoomsResponse,
                    timeout=short,
                )
                assert list(rooms.rooms) == []
            return ignored

        assert asyncio.run(scenario()) >= 0.9
        assert lk.methods_called() == ["ListRooms"] * 4


def test_stop_cuts_a_held_timeout_response_short() -> None:
    """stop() returns promptly even while a "timeout" fault is holding a response for 30 s.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    server = LocalLiveKitServer(API_KEY, API_SECRET, fault_delay=30.0).start()
    try:
        server.inject_fault("ListRooms", "timeout")

        async def scenario() -> None:
            async with client(server) as lkapi:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(lkapi.room.list_rooms(api.ListRoomsRequest()), 0.3)

        asyncio.run(scenario())
    finally:
        began = time.monotonic()
        server.stop()
    assert time.monotonic() - began < 3.0


# --------------------------------------------------------------------------- egress


def test_room_composite_egress_uploads_to_s3(lk: LocalLiveKitServer, moto_endpoint: str) -> None:
    """StartRoomCompositeEgress "records" to a moto S3 bucket at the expanded key; ListEgress shows COMPLETE.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    lk.s3_endpoint_url = moto_endpoint
    s3 = s3_client(moto_endpoint)
    s3.create_bucket(Bucket="rec-ok")

    async def scenario() -> tuple[api.EgressInfo, api.EgressInfo, api.Room]:
        async with client(lk) as lkapi:
            room = await lkapi.room.create_room(api.CreateRoomRequest(name="call_+15550100"))
            started = await lkapi.egress.start_room_composite_egress(
                start_request(room.name, "rec-ok", "calls/{room_name}/{room_id}-{time}")
            )
            return started, await wait_final(lkapi, started.egress_id), room

    started, final, room = asyncio.run(scenario())
    assert re.fullmatch(r"EG_[A-Za-z0-9]{12}", started.egress_id)
    assert started.status == api.EgressStatus.EGRESS_STARTING
    assert final.status == api.EgressStatus.EGRESS_COMPLETE, final.error
    assert final.room_name == room.name and final.room_id == room.sid
    [result] = final.file_results
    assert re.fullmatch(rf"calls/call_\+15550100/{room.sid}-\d{{4}}-\d{{2}}-\d{{2}}T\d{{6}}\.ogg", result.filename), (
        result.filename
    )
    assert result.location == f"{moto_endpoint}/rec-ok/{result.filename}"
    body = s3.get_object(Bucket="rec-ok", Key=result.filename)["Body"].read()
    assert body.startswith(b"OggS") and len(body) == result.size
    # S3 credentials are redacted in what the server reports, as LiveKit's egress does.
    for info in (started, final):
        reported = info.room_composite.file_outputs[0].s3
        assert reported.secret == "*" * len(S3_SECRET) and reported.access_key == "*" * len(S3_ACCESS_KEY)
    assert lk.egresses[final.egress_id].status == api.EgressStatus.EGRESS_COMPLETE


def test_egress_to_missing_bucket_fails_with_the_s3_error(lk: LocalLiveKitServer, moto_endpoint: str) -> None:
    """An upload that S3 rejects (no such bucket) ends in EGRESS_FAILED carrying the S3 error text.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    lk.s3_endpoint_url = moto_endpoint
    lk.add_room("missing-bucket-room")

    async def scenario() -> api.EgressInfo:
        async with client(lk) as lkapi:
            started = await lkapi.egress.start_room_composite_egress(
                start_request("missing-bucket-room", "bucket-that-does-not-exist", "x.ogg")
            )
            return await wait_final(lkapi, started.egress_id)

    final = asyncio.run(scenario())
    assert final.status == api.EgressStatus.EGRESS_FAILED
    assert final.error.startswith("NoSuchBucket: "), final.error
    assert list(final.file_results) == []


def test_egress_for_unknown_room_is_not_found(lk: LocalLiveKitServer) -> None:
    """Starting egress for a room that does not exist is refused with not_found, like LiveKit.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """

    async def scenario() -> TwirpError:
        async with client(lk) as lkapi:
            with pytest.raises(TwirpError) as caught:
                await lkapi.egress.start_room_composite_egress(start_request("no-such-room", "b", "x"))
            return caught.value

    error = asyncio.run(scenario())
    assert (error.code, error.status, error.message) == ("not_found", 404, "requested room does not exist")
    assert lk.egresses == {}


def test_stop_egress_ends_a_long_recording(moto_endpoint: str) -> None:
    """With no automatic end, the egress stays ACTIVE until StopEgress, then uploads and completes.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    s3_client(moto_endpoint).create_bucket(Bucket="rec-stop")
    with LocalLiveKitServer(API_KEY, API_SECRET, s3_endpoint_url=moto_endpoint, egress_upload_delay=None) as lk:
        lk.add_room("long-call")

        async def scenario() -> tuple[api.EgressInfo, api.EgressInfo, TwirpError]:
            async with client(lk) as lkapi:
                started = await lkapi.egress.start_room_composite_egress(start_request("long-call", "rec-stop", ""))
                await asyncio.sleep(0.3)
                active = await lkapi.egress.list_egress(api.ListEgressRequest(active=True))
                assert [e.status for e in active.items] == [api.EgressStatus.EGRESS_ACTIVE]
                stopping = await lkapi.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
                assert stopping.status == api.EgressStatus.EGRESS_ENDING
                final = await wait_final(lkapi, started.egress_id)
                with pytest.raises(TwirpError) as again:
                    await lkapi.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
                return stopping, final, again.value

        _, final, again = asyncio.run(scenario())
    assert final.status == api.EgressStatus.EGRESS_COMPLETE, final.error
    assert re.fullmatch(r"long-call-\d{4}-\d{2}-\d{2}T\d{6}\.ogg", final.file_results[0].filename)
    assert again.code == "failed_precondition"


def test_inbound_call_through_rule_records_to_s3(moto_endpoint: str) -> None:
    """simulate_inbound_call dispatches through a rule whose room_config egress then uploads the call.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    s3 = s3_client(moto_endpoint)
    s3.create_bucket(Bucket="rec-rule")
    with LocalLiveKitServer(API_KEY, API_SECRET) as lk:
        rule_id = lk.add_dispatch_rule(recording_rule("rec-rule", "{room_name}", endpoint=moto_endpoint))
        room_name, egress_id = lk.simulate_inbound_call(rule_id, from_number="+15557654321")
        assert egress_id is not None
        final = lk.wait_for_egress(egress_id)
    assert room_name.startswith("call_+15557654321_")
    assert final.status == api.EgressStatus.EGRESS_COMPLETE, final.error
    assert final.file_results[0].filename == f"{room_name}.ogg"
    s3.head_object(Bucket="rec-rule", Key=f"{room_name}.ogg")


def test_expand_egress_filepath_matches_livekit_egress() -> None:
    """Filepath templating used by the local server on 127.0.0.1 that speaks LiveKit's Twirp protocol.

    (LiveKit Cloud is unreachable from here, so its egress naming is reproduced locally.)
    """
    when = datetime.datetime(2025, 3, 4, 5, 6, 7, 89_000, tzinfo=datetime.UTC)
    kwargs: dict[str, Any] = {"room_name": "r", "room_id": "RM_1", "extension": ".ogg", "now": when}
    assert expand_egress_filepath("a/{room_name}/{room_id}/{time}", **kwargs) == "a/r/RM_1/2025-03-04T050607.ogg"
    assert expand_egress_filepath("{utc}-{retry}", **kwargs) == "2025030405060789-0.ogg"
    assert expand_egress_filepath("", **kwargs) == "r-2025-03-04T050607.ogg"
    assert expand_egress_filepath("dir/", **kwargs) == "dir/r-2025-03-04T050607.ogg"
    assert expand_egress_filepath("x.mp4", **kwargs) == "x.ogg"
    assert expand_egress_filepath("x.ogg", **kwargs) == "x.ogg"
    assert expand_egress_filepath("v1.2", **kwargs) == "v1.2.ogg"


# --------------------------------------------------------------------------- hygiene


def test_no_secret_reaches_logs_state_or_responses(moto_endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    """Neither the API secret, the bearer token nor the S3 secret shows up in logs, repr, log or egress info.

    Runs against a local server on 127.0.0.1 that speaks LiveKit's Twirp protocol, since LiveKit Cloud
    is unreachable from here.
    """
    caplog.set_level(logging.DEBUG, logger="callsaver_infra.livekit_local")
    s3_client(moto_endpoint).create_bucket(Bucket="rec-hygiene")
    with LocalLiveKitServer(API_KEY, API_SECRET, s3_endpoint_url=moto_endpoint) as lk:
        assert lk.url.startswith("http://127.0.0.1:")
        lk.add_room("hygiene")
        lk.inject_fault("ListEgress", "internal")

        async def scenario() -> list[str]:
            async with client(lk) as lkapi:
                started = await lkapi.egress.start_room_composite_egress(start_request("hygiene", "rec-hygiene", "h"))
                with pytest.raises(TwirpError):
                    await lkapi.egress.list_egress(api.ListEgressRequest())
                final = await wait_final(lkapi, started.egress_id)
                return [str(started), str(final)]

        reported = asyncio.run(scenario())
        dumped = json.dumps([list(r) for r in lk.requests]) + repr(lk) + "".join(reported)
        dumped += "".join(str(info) for info in lk.egresses.values())
    for secret in (API_SECRET, S3_SECRET, S3_ACCESS_KEY):
        assert secret not in caplog.text
        assert secret not in dumped
    assert "eyJ" not in caplog.text and "eyJ" not in dumped  # no JWT (base64 of '{"') anywhere
