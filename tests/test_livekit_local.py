"""Tests of callsaver_infra.dev.livekit_local, driven by the real ``livekit-api`` client.

LiveKit Cloud is unreachable from here, so every test talks to a LocalLiveKitServer bound to 127.0.0.1 that
speaks LiveKit's Twirp protocol (protobuf bodies, HS256 bearer tokens); the S3 side of egress is a moto server
on 127.0.0.1. Expected texts and codes are copied from LiveKit's sources (cited in livekit_local.py), not from
the stand-in's output.
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
from livekit.api.twirp_client import TwirpError

from callsaver_infra.dev.livekit_local import (
    LISTING_MODES,
    LocalLiveKitServer,
    clone_proto_redacted,
    expand_egress_filepath,
)

API_KEY = "APItestkey"
API_SECRET = "test-secret-not-real-0123456789abcdef"
S3_ACCESS_KEY = "AKIDFAKEFAKEFAKEFAKE"
S3_SECRET = "fake-s3-secret-not-real-abcdefghijklmnop"
S3_SESSION = "fake-session-token-not-real"
REGION = "us-east-1"
S = api.EgressStatus
# An unsigned token (alg "none") carrying the right issuer and a far-future expiry.
NONE_ALG = (
    ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in ({"alg": "none", "typ": "JWT"}, {"iss": API_KEY, "exp": 4102444800, "sip": {"admin": True}})
    )
    + "."
)


# --------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture
def lk(moto_endpoint: str) -> Iterator[LocalLiveKitServer]:
    with LocalLiveKitServer(API_KEY, API_SECRET, s3_endpoint_url=moto_endpoint, fault_delay=2.0) as server:
        yield server


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET,
    )


def client(lk: LocalLiveKitServer, **kwargs: Any) -> api.LiveKitAPI:
    return api.LiveKitAPI(lk.url, API_KEY, kwargs.pop("api_secret", API_SECRET), failover=False, **kwargs)


def token(video: api.VideoGrants | None = None, sip: api.SIPGrants | None = None, **kwargs: Any) -> str:
    tok = api.AccessToken(kwargs.pop("key", API_KEY), kwargs.pop("secret", API_SECRET))
    if video is not None:
        tok.with_grants(video)
    if sip is not None:
        tok.with_sip_grants(sip)
    if "ttl" in kwargs:
        tok.with_ttl(kwargs.pop("ttl"))
    return tok.to_jwt()


def s3_upload(bucket: str, endpoint: str = "") -> api.S3Upload:
    return api.S3Upload(
        access_key=S3_ACCESS_KEY,
        secret=S3_SECRET,
        region=REGION,
        bucket=bucket,
        endpoint=endpoint,
        force_path_style=True,
    )


def file_output(bucket: str, filepath: str, endpoint: str = "") -> api.EncodedFileOutput:
    return api.EncodedFileOutput(file_type=api.EncodedFileType.OGG, filepath=filepath, s3=s3_upload(bucket, endpoint))


def recording_rule(bucket: str, filepath: str, endpoint: str = "", **kwargs: Any) -> api.SIPDispatchRuleInfo:
    egress = api.RoomCompositeEgressRequest(audio_only=True, file_outputs=[file_output(bucket, filepath, endpoint)])
    return api.SIPDispatchRuleInfo(
        name=kwargs.pop("name", "callsaver-inbound"),
        trunk_ids=kwargs.pop("trunk_ids", ["ST_trunk1"]),
        rule=api.SIPDispatchRule(dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="call")),
        room_config=api.RoomConfiguration(egress=api.RoomEgress(room=egress)),
        **kwargs,
    )


def room_request(room: str, bucket: str, filepath: str) -> api.RoomCompositeEgressRequest:
    return api.RoomCompositeEgressRequest(room_name=room, audio_only=True, file_outputs=[file_output(bucket, filepath)])


def web_request(bucket: str, filepath: str, **kwargs: Any) -> api.WebEgressRequest:
    kwargs.setdefault("url", "https://example.invalid/healthcheck")
    kwargs.setdefault("audio_only", True)
    return api.WebEgressRequest(file_outputs=[file_output(bucket, filepath)], **kwargs)


async def wait_status(lkapi: api.LiveKitAPI, egress_id: str, wanted: set[int], timeout: float = 5.0) -> api.EgressInfo:
    deadline = time.monotonic() + timeout
    while True:
        [info] = (await lkapi.egress.list_egress(api.ListEgressRequest(egress_id=egress_id))).items
        if info.status in wanted:
            return info
        assert time.monotonic() < deadline, f"egress still {S.Name(info.status)}"
        await asyncio.sleep(0.02)


FINAL = {S.EGRESS_COMPLETE, S.EGRESS_FAILED, S.EGRESS_ABORTED}


async def update_request(lkapi: api.LiveKitAPI, req: api.UpdateSIPDispatchRuleRequest) -> api.SIPDispatchRuleInfo:
    """Send an UpdateSIPDispatchRuleRequest as built (the SDK's helpers always fill in one action)."""
    sip = lkapi.sip
    answer: api.SIPDispatchRuleInfo = await sip._client.request(  # noqa: SLF001
        "SIP",
        "UpdateSIPDispatchRule",
        req,
        sip._admin_headers(),
        api.SIPDispatchRuleInfo,  # noqa: SLF001
    )
    return answer


async def twirp_error(call: Any) -> TwirpError:
    with pytest.raises(TwirpError) as caught:
        await call
    return caught.value


def assert_placeholders(request: Any) -> None:
    """Upload credentials shown as protocol egress/redact.go placeholders, the rest as sent."""
    reported = request.file_outputs[0].s3
    assert (reported.access_key, reported.secret) == ("{access_key}", "{secret}")
    assert (reported.bucket, reported.region) != ("", "")


def objects(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


# --------------------------------------------------------------------------- construction


def test_listing_mode_is_checked() -> None:
    """The three listing modes are accepted and anything else is a ValueError (no server is started).

    The class is the local LiveKit stand-in for 127.0.0.1, used because LiveKit Cloud is unreachable here.
    """
    assert LISTING_MODES == ("unmasked", "placeholders", "redacted")
    for mode in LISTING_MODES:
        assert LocalLiveKitServer(API_KEY, API_SECRET, listing=mode).listing == mode
    with pytest.raises(ValueError, match="listing"):
        LocalLiveKitServer(API_KEY, API_SECRET, listing="masked")


# --------------------------------------------------------------------------- UpdateSIPDispatchRule


def test_replace_stores_exactly_what_was_sent(lk: LocalLiveKitServer) -> None:
    """Replace stores the sent rule with the stored id forced in: nothing merged, created_at as sent.

    protocol livekit/sip.go UpdateSIPDispatchRuleRequest_Replace.Apply.
    """
    old = recording_rule("b", "x", metadata="old-metadata", attributes={"a": "1"})
    old.created_at.FromSeconds(1_600_000_000)
    rule_id = lk.add_dispatch_rule(old)
    sent = recording_rule("b2", "y", name="renamed")
    sent.created_at.FromSeconds(1_700_000_000)

    async def scenario() -> tuple[api.SIPDispatchRuleInfo, api.ListSIPDispatchRuleResponse]:
        async with client(lk) as lkapi:
            answer = await lkapi.sip.update_dispatch_rule(rule_id, sent)
            return answer, await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())

    answer, listed = asyncio.run(scenario())
    expected = api.SIPDispatchRuleInfo()
    expected.CopyFrom(sent)
    expected.sip_dispatch_rule_id = rule_id
    assert answer == expected
    assert list(listed.items) == [expected]
    assert listed.items[0].created_at.seconds == 1_700_000_000
    assert listed.items[0].metadata == "" and dict(listed.items[0].attributes) == {}  # not merged from the old rule


@pytest.mark.parametrize(
    ("build", "code", "message"),
    [
        (lambda rid: api.UpdateSIPDispatchRuleRequest(), "invalid_argument", "rule id must be set"),
        (
            lambda rid: api.UpdateSIPDispatchRuleRequest(sip_dispatch_rule_id=rid),
            "invalid_argument",
            "missing or unsupported update action",
        ),
        (
            lambda rid: api.UpdateSIPDispatchRuleRequest(
                sip_dispatch_rule_id=rid, replace=recording_rule("b", "x", sip_dispatch_rule_id="SDR_other")
            ),
            "invalid_argument",
            "rule id in the info must be empty or match the id in the update",
        ),
        (
            lambda rid: api.UpdateSIPDispatchRuleRequest(
                sip_dispatch_rule_id=rid, replace=api.SIPDispatchRuleInfo(name="no rule")
            ),
            "invalid_argument",
            "missing rule",
        ),
        (
            lambda rid: api.UpdateSIPDispatchRuleRequest(
                sip_dispatch_rule_id="SDR_unknown", replace=recording_rule("b", "x")
            ),
            "not_found",
            "requested sip dispatch rule does not exist",
        ),
        (
            lambda rid: api.UpdateSIPDispatchRuleRequest(
                sip_dispatch_rule_id=rid,
                update=api.SIPDispatchRuleUpdate(trunk_ids=api.ListUpdate(clear=True, add=["ST_x"])),
            ),
            "invalid_argument",
            "cannot clear and change the list at the same time",
        ),
    ],
    ids=["no-id", "no-action", "id-mismatch", "missing-rule", "unknown-id", "bad-list-update"],
)
def test_update_is_validated_like_the_server(lk: LocalLiveKitServer, build: Any, code: str, message: str) -> None:
    """UpdateSIPDispatchRule errors: texts of protocol livekit/sip.go Validate, codes of livekit pkg/service/sip.go."""
    stored = recording_rule("b", "x")
    rule_id = lk.add_dispatch_rule(stored)

    async def scenario() -> TwirpError:
        async with client(lk) as lkapi:
            return await twirp_error(update_request(lkapi, build(rule_id)))

    error = asyncio.run(scenario())
    assert (error.code, error.message) == (code, message)
    assert error.status == {"invalid_argument": 400, "not_found": 404}[code]
    assert lk.dispatch_rules[rule_id].room_config == stored.room_config  # nothing written


def test_update_action_merges_and_conflicts_are_refused(lk: LocalLiveKitServer) -> None:
    """The ``update`` action (still in livekit pkg/service/sip.go) merges; a rule colliding with another is refused."""
    # Fixed ids: the server checks rules in id order and names the earlier one of a colliding pair.
    first = lk.add_dispatch_rule(recording_rule("b", "x", name="first", inbound_numbers=["+15550100"]), rule_id="SDR_a")
    second = lk.add_dispatch_rule(
        recording_rule("b", "x", name="second", attributes={"keep": "1", "drop": "2"}), rule_id="SDR_b"
    )

    async def scenario() -> tuple[api.SIPDispatchRuleInfo, TwirpError]:
        async with client(lk) as lkapi:
            merged = await update_request(
                lkapi,
                api.UpdateSIPDispatchRuleRequest(
                    sip_dispatch_rule_id=second,
                    update=api.SIPDispatchRuleUpdate(metadata="m", attributes={"drop": "", "new": "3"}),
                ),
            )
            clash = recording_rule("b", "x", name="second", inbound_numbers=["+1 (555) 0100"])
            return merged, await twirp_error(lkapi.sip.update_dispatch_rule(second, clash))

    merged, conflict = asyncio.run(scenario())
    assert merged.name == "second" and merged.metadata == "m"
    assert dict(merged.attributes) == {"keep": "1", "new": "3"}
    assert merged.room_config == lk.dispatch_rules[first].room_config  # untouched by update
    assert (conflict.code, conflict.status) == ("invalid_argument", 400)
    assert conflict.message == (
        "Dispatch rule for the same trunk, inbound number, number, and PIN combination already exists in "
        f'dispatch rule "{first}" "first"'
    )
    assert not lk.dispatch_rules[second].inbound_numbers


# --------------------------------------------------------------------------- listing modes


def rich_rule() -> api.SIPDispatchRuleInfo:
    """A rule using every masked field: three kinds of auto egress, metadata, attributes, PIN, agents."""
    s3 = s3_upload("rec-bucket")
    s3.session_token = S3_SESSION
    room = api.RoomCompositeEgressRequest(
        audio_only=True, file_outputs=[api.EncodedFileOutput(filepath="calls/{room_name}", s3=s3)]
    )
    participant = api.AutoParticipantEgress(
        file_outputs=[api.EncodedFileOutput(filepath="p/", gcp=api.GCPUpload(credentials="{json}", bucket="g"))]
    )
    tracks = api.AutoTrackEgress(filepath="t/", azure=api.AzureBlobUpload(account_name="acct", account_key="k"))
    return api.SIPDispatchRuleInfo(
        name="rich",
        trunk_ids=["ST_a"],
        metadata="rule-metadata",
        attributes={"team": "sales"},
        rule=api.SIPDispatchRule(dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="c", pin="1234")),
        room_config=api.RoomConfiguration(
            metadata="room-metadata",
            egress=api.RoomEgress(room=room, participant=participant, tracks=tracks),
            agents=[api.RoomAgentDispatch(agent_name="callsaver", metadata="agent-metadata")],
        ),
    )


@pytest.mark.parametrize("mode", LISTING_MODES)
def test_listing_modes_mask_what_they_should(moto_endpoint: str, mode: str) -> None:
    """ListSIPDispatchRule and the UpdateSIPDispatchRule answer in each listing mode; the stored rule stays whole.

    unmasked = open-source server; placeholders = protocol egress/redact.go; redacted = protocol utils/proto.go
    CloneProtoRedacted over the (logger.sensitivity) options.
    """
    with LocalLiveKitServer(API_KEY, API_SECRET, s3_endpoint_url=moto_endpoint, listing=mode) as lk:
        rule_id = lk.add_dispatch_rule(rich_rule())
        stored = lk.dispatch_rules[rule_id]

        async def scenario() -> tuple[api.SIPDispatchRuleInfo, api.SIPDispatchRuleInfo]:
            async with client(lk) as lkapi:
                [listed] = (await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
                replaced = await lkapi.sip.update_dispatch_rule(rule_id, rich_rule())
                return listed, replaced

        listed, replaced = asyncio.run(scenario())
        assert lk.dispatch_rules[rule_id].room_config.egress.room.file_outputs[0].s3.secret == S3_SECRET
    assert listed == replaced  # the update answer is masked the same way
    egress = listed.room_config.egress
    s3 = egress.room.file_outputs[0].s3
    gcp = egress.participant.file_outputs[0].gcp
    azure = egress.tracks.azure
    # Never masked in any mode.
    assert (listed.name, list(listed.trunk_ids), listed.room_config.agents[0].agent_name) == (
        "rich",
        ["ST_a"],
        "callsaver",
    )
    assert (s3.bucket, s3.region, egress.room.file_outputs[0].filepath, gcp.bucket) == (
        "rec-bucket",
        REGION,
        "calls/{room_name}",
        "g",
    )
    if mode == "unmasked":
        assert listed == stored
    elif mode == "placeholders":
        assert (s3.access_key, s3.secret, s3.session_token, s3.assume_role_external_id) == (
            "{access_key}",
            "{secret}",
            "{session_token}",
            "",  # empty stays empty (utils/redact.go Redact)
        )
        assert gcp.credentials == "{credentials}"
        assert (azure.account_name, azure.account_key) == ("{account_name}", "{account_key}")
        # Everything outside upload credentials is as stored.
        assert (listed.metadata, dict(listed.attributes), listed.rule.dispatch_rule_individual.pin) == (
            "rule-metadata",
            {"team": "sales"},
            "1234",
        )
        assert listed.room_config.agents[0].metadata == "agent-metadata"
    else:
        assert (s3.access_key, s3.secret, s3.session_token) == ("", "", "")
        assert gcp.credentials == "" and (azure.account_name, azure.account_key) == ("", "")
        assert (listed.metadata, dict(listed.attributes), listed.rule.dispatch_rule_individual.pin) == ("", {}, "")
        assert listed.room_config.metadata == "" and listed.room_config.agents[0].metadata == ""
        assert listed.rule.dispatch_rule_individual.room_prefix == "c"


def test_clone_proto_redacted_follows_the_proto_options() -> None:
    """The fields livekit/protocol protobufs/livekit_egress.proto marks PII/SECRET on S3Upload are cleared, no others.

    Pure function used by the local LiveKit stand-in on 127.0.0.1 (LiveKit Cloud is unreachable from here).
    """
    full = api.S3Upload(
        access_key="k",
        secret="s",
        session_token="t",
        assume_role_arn="arn:aws:iam::000000000000:role/x",
        assume_role_external_id="e",
        region=REGION,
        endpoint="http://e",
        bucket="b",
        force_path_style=True,
        metadata={"m": "1"},
        tagging="a=b",
        content_disposition="inline",
    )
    redacted = clone_proto_redacted(full)
    assert redacted == api.S3Upload(region=REGION, endpoint="http://e", bucket="b", force_path_style=True)
    assert full.secret == "s"  # a clone: the original is untouched


# --------------------------------------------------------------------------- inbound trunks


def test_list_inbound_trunks_honours_filters(moto_endpoint: str) -> None:
    """ListSIPInboundTrunk filters as protocol livekit/sip.go ListSIPInboundTrunkRequest.Filter; pages as the server."""
    with LocalLiveKitServer(API_KEY, API_SECRET, listing="redacted") as lk:
        a = lk.add_inbound_trunk(
            api.SIPInboundTrunkInfo(name="a", numbers=["+15550100002"], auth_password="pw"), trunk_id="ST_a"
        )
        b = lk.add_inbound_trunk(api.SIPInboundTrunkInfo(name="b", numbers=["+15550100003"]), trunk_id="ST_b")
        c = lk.add_inbound_trunk(api.SIPInboundTrunkInfo(name="c"), trunk_id="ST_c")  # no numbers: matches any

        async def names(req: api.ListSIPInboundTrunkRequest) -> list[str]:
            async with client(lk) as lkapi:
                return [t.name for t in (await lkapi.sip.list_inbound_trunk(req)).items]

        async def scenario() -> list[list[str]]:
            return [
                await names(api.ListSIPInboundTrunkRequest()),
                await names(api.ListSIPInboundTrunkRequest(trunk_ids=[b, c])),
                await names(api.ListSIPInboundTrunkRequest(numbers=["+1 (555) 010-0002"])),
                await names(api.ListSIPInboundTrunkRequest(page=api.Pagination(after_id=a, limit=1))),
            ]

        assert asyncio.run(scenario()) == [["a", "b", "c"], ["b", "c"], ["a", "c"], ["b", "c"]]

        async def redacted() -> api.SIPInboundTrunkInfo:
            async with client(lk) as lkapi:
                req = api.ListSIPInboundTrunkRequest(trunk_ids=[a])
                return (await lkapi.sip.list_inbound_trunk(req)).items[0]

        shown = asyncio.run(redacted())
    assert (list(shown.numbers), shown.auth_password) == (["+15550100002"], "")  # auth_password is SECRET


# --------------------------------------------------------------------------- auth


async def raw_post(lk: LocalLiveKitServer, path: str, headers: dict[str, str]) -> tuple[int, str, str]:
    headers = {"Content-Type": "application/protobuf", **headers}
    async with aiohttp.ClientSession() as session, session.post(f"{lk.url}{path}", data=b"", headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


@pytest.mark.parametrize(
    ("authorization", "body"),
    [
        (f"Bearer {token(sip=api.SIPGrants(admin=True), secret='wrong-secret-also-fake-0123456789')}", "signature"),
        (f"Bearer {token(sip=api.SIPGrants(admin=True), key='APIunknown')}", "invalid API key"),
        (f"Bearer {token(sip=api.SIPGrants(admin=True), ttl=datetime.timedelta(hours=-1))}", "expired"),
        ("Bearer not-a-jwt", "invalid authorization token"),
        (f"Bearer {NONE_ALG}", "alg-none"),
        ("Token abc", "invalid authorization header. Must start with Bearer "),
    ],
    ids=["bad-signature", "unknown-key", "expired", "malformed", "alg-none", "not-bearer"],
)
def test_bad_tokens_get_a_plain_text_401(lk: LocalLiveKitServer, authorization: str, body: str) -> None:
    """livekit pkg/service/auth.go + utils.go HandleError: HTTP 401, a text/plain body holding the error text."""
    texts = {
        "signature": "invalid authorization token: token signature is invalid: signature is invalid",
        "expired": "invalid authorization token: token has invalid claims: token is expired",
        "alg-none": "invalid authorization token: token signature is invalid: signing method none is invalid",
    }
    path = "/twirp/livekit.SIP/ListSIPDispatchRule"
    status, content_type, text = asyncio.run(raw_post(lk, path, {"Authorization": authorization}))
    assert (status, content_type, text) == (401, "text/plain; charset=utf-8", texts.get(body, body))


def test_the_sdk_sees_a_bad_signature_as_unknown_401(lk: LocalLiveKitServer) -> None:
    """The livekit-api client cannot parse the plain-text 401 as Twirp JSON: code unknown, status 401, no message."""

    async def scenario() -> TwirpError:
        async with client(lk, api_secret="wrong-secret-also-fake-0123456789") as lkapi:
            return await twirp_error(lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest()))

    error = asyncio.run(scenario())
    assert (error.code, error.status, error.message) == ("unknown", 401, "")
    assert lk.requests[-1].grants == {}


@pytest.mark.parametrize(
    ("path", "grant"),
    [
        ("/twirp/livekit.SIP/ListSIPDispatchRule", {"sip": api.SIPGrants(admin=True)}),
        ("/twirp/livekit.SIP/UpdateSIPDispatchRule", {"sip": api.SIPGrants(admin=True)}),
        ("/twirp/livekit.SIP/ListSIPInboundTrunk", {"sip": api.SIPGrants(admin=True)}),
        ("/twirp/livekit.RoomService/CreateRoom", {"video": api.VideoGrants(room_create=True)}),
        ("/twirp/livekit.RoomService/DeleteRoom", {"video": api.VideoGrants(room_create=True)}),
        ("/twirp/livekit.Egress/StartRoomCompositeEgress", {"video": api.VideoGrants(room_record=True)}),
        ("/twirp/livekit.Egress/StartWebEgress", {"video": api.VideoGrants(room_record=True)}),
        ("/twirp/livekit.Egress/StopEgress", {"video": api.VideoGrants(room_record=True)}),
        ("/twirp/livekit.Egress/ListEgress", {"video": api.VideoGrants(room_record=True)}),
    ],
)
def test_each_method_needs_its_grant(lk: LocalLiveKitServer, path: str, grant: dict[str, Any]) -> None:
    """Without the grant (or with no token) the answer is Twirp unauthenticated "permissions denied" (auth.go
    twirpAuthError); with only that grant the call gets past authorization."""
    everything_else = token(
        video=api.VideoGrants(room_create="room_create" not in str(grant), room_record="room_record" not in str(grant)),
        sip=api.SIPGrants(admin="sip" not in grant, call=True),
    )
    for headers in ({"Authorization": f"Bearer {everything_else}"}, {}):
        status, content_type, text = asyncio.run(raw_post(lk, path, headers))
        assert (status, json.loads(text)) == (401, {"code": "unauthenticated", "msg": "permissions denied"})
    status, _, text = asyncio.run(raw_post(lk, path, {"Authorization": f"Bearer {token(**grant)}"}))
    assert status != 401, text


# --------------------------------------------------------------------------- room composite egress


def test_empty_room_composite_stopped_is_aborted_and_uploads_nothing(lk: LocalLiveKitServer, s3: Any) -> None:
    """Nobody publishes: the egress stays STARTING; StopEgress aborts it with egress's texts and no object is written.

    livekit/egress pkg/pipeline/source/sdk.go + controller.go (SendEOS, Run), protocol livekit_egress.go messages.
    """
    s3.create_bucket(Bucket="rec-empty")

    async def scenario() -> tuple[api.EgressInfo, api.EgressInfo, api.EgressInfo]:
        async with client(lk) as lkapi:
            await lkapi.room.create_room(api.CreateRoomRequest(name="empty-room"))
            started = await lkapi.egress.start_room_composite_egress(room_request("empty-room", "rec-empty", "x"))
            await asyncio.sleep(0.3)  # far longer than egress_start_delay
            [waiting] = (await lkapi.egress.list_egress(api.ListEgressRequest(egress_id=started.egress_id))).items
            assert waiting.status == S.EGRESS_STARTING
            stopped = await lkapi.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
            return started, stopped, await wait_status(lkapi, started.egress_id, FINAL)

    started, stopped, final = asyncio.run(scenario())
    assert started.source_type == api.EgressSourceType.EGRESS_SOURCE_TYPE_SDK
    assert (stopped.status, stopped.error) == (S.EGRESS_ABORTED, "Stop called before pipeline could start")
    lk.wait_for_egress(started.egress_id)
    final = lk.egresses[started.egress_id]
    assert (final.status, final.error, final.error_code) == (S.EGRESS_ABORTED, "Start signal not received", 412)
    assert final.details == "End reason: StopEgress API"
    assert objects(s3, "rec-empty") == []


def test_room_composite_with_a_publisher_completes_and_uploads(lk: LocalLiveKitServer, s3: Any) -> None:
    """CreateRoom with egress.room starts the egress; a participant publishing starts it; stop -> ENDING -> COMPLETE.

    livekit pkg/service/roommanager.go getOrCreateRoom, egress source/sdk.go and controller.go. Credentials are
    redact.go placeholders in every EgressInfo.
    """
    s3.create_bucket(Bucket="rec-ok")
    egress = api.RoomCompositeEgressRequest(audio_only=True, file_outputs=[file_output("rec-ok", "calls/{room_name}/")])

    async def scenario() -> tuple[api.Room, api.EgressInfo, api.EgressInfo, api.EgressInfo]:
        async with client(lk) as lkapi:
            room = await lkapi.room.create_room(
                api.CreateRoomRequest(name="call-1", egress=api.RoomEgress(room=egress))
            )
            [starting] = (await lkapi.egress.list_egress(api.ListEgressRequest(room_name="call-1"))).items
            await asyncio.sleep(0.2)
            assert (await wait_status(lkapi, starting.egress_id, {S.EGRESS_STARTING})).status == S.EGRESS_STARTING
            lk.publish_audio("call-1", identity="caller")
            await wait_status(lkapi, starting.egress_id, {S.EGRESS_ACTIVE})
            stopping = await lkapi.egress.stop_egress(api.StopEgressRequest(egress_id=starting.egress_id))
            return room, starting, stopping, await wait_status(lkapi, starting.egress_id, FINAL)

    room, starting, stopping, final = asyncio.run(scenario())
    assert stopping.status == S.EGRESS_ENDING
    assert final.status == S.EGRESS_COMPLETE, final.error
    assert (final.room_name, final.room_id) == ("call-1", room.sid)
    [result] = final.file_results
    assert re.fullmatch(r"calls/call-1/call-1-\d{4}-\d{2}-\d{2}T\d{6}\.ogg", result.filename), result.filename
    assert result.location.endswith(f"/rec-ok/{result.filename}")
    assert objects(s3, "rec-ok") == [result.filename]
    assert s3.get_object(Bucket="rec-ok", Key=result.filename)["ContentLength"] == result.size > 0
    for info in (starting, stopping, final):
        assert_placeholders(info.room_composite)


def test_inbound_call_records_through_the_rules_room_config(
    lk: LocalLiveKitServer, s3: Any, moto_endpoint: str
) -> None:
    """simulate_inbound_call: the rule's room_config starts the auto egress; the caller publishes; the call ending
    (room deleted) completes it. Without a publisher the same ends ABORTED."""
    s3.create_bucket(Bucket="rec-rule")
    rule_id = lk.add_dispatch_rule(recording_rule("rec-rule", "{room_name}", endpoint=moto_endpoint))
    room_name, egress_id = lk.simulate_inbound_call(rule_id, from_number="+15557654321")
    silent_room, silent_id = lk.simulate_inbound_call(rule_id, publish=False)
    assert egress_id is not None and silent_id is not None

    async def scenario() -> None:
        async with client(lk) as lkapi:
            await wait_status(lkapi, egress_id, {S.EGRESS_ACTIVE})
            for room in (room_name, silent_room):
                await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))

    asyncio.run(scenario())
    final, silent = lk.wait_for_egress(egress_id), lk.wait_for_egress(silent_id)
    assert room_name.startswith("call_+15557654321_")
    assert final.status == S.EGRESS_COMPLETE, final.error
    assert final.file_results[0].filename == f"{room_name}.ogg"
    assert (silent.status, silent.error, silent.details) == (
        S.EGRESS_ABORTED,
        "Start signal not received",
        "End reason: Source closed",
    )
    assert objects(s3, "rec-rule") == [f"{room_name}.ogg"]


def test_room_composite_refusals(lk: LocalLiveKitServer) -> None:
    """Unknown room (livekit pkg/service/egress.go), and livekit/egress pkg/config validation texts."""
    lk.add_room("r")
    two = room_request("r", "b", "x")
    two.file_outputs.append(file_output("b", "y"))
    none = api.RoomCompositeEgressRequest(room_name="r", audio_only=True)
    both = room_request("r", "b", "x")
    both.video_only = True
    video_ogg = room_request("r", "b", "x")
    video_ogg.audio_only = False

    async def scenario() -> list[tuple[str, str]]:
        async with client(lk) as lkapi:
            errors = []
            for req in (room_request("nope", "b", "x"), two, none, both, video_ogg):
                error = await twirp_error(lkapi.egress.start_room_composite_egress(req))
                errors.append((error.code, error.message))
            unknown = await twirp_error(lkapi.egress.stop_egress(api.StopEgressRequest(egress_id="EG_unknown")))
            errors.append((unknown.code, unknown.message))
            return errors

    assert asyncio.run(scenario()) == [
        ("not_found", "requested room does not exist"),
        ("invalid_argument", "request has missing or invalid field: multiple file outputs"),
        ("invalid_argument", "request has missing or invalid field: output"),
        ("invalid_argument", "request has missing or invalid field: audio_only and video_only"),
        ("invalid_argument", "no supported codec is compatible with all outputs"),
        ("not_found", "egress does not exist"),
    ]
    assert lk.egresses == {}


def test_upload_failure_is_egress_failed_with_the_s3_error(lk: LocalLiveKitServer) -> None:
    """An upload S3 rejects (no such bucket) ends EGRESS_FAILED with the error; a second stop is failed_precondition."""
    lk.add_room("r")
    lk.publish_audio("r")

    async def scenario() -> tuple[api.EgressInfo, TwirpError]:
        async with client(lk) as lkapi:
            started = await lkapi.egress.start_room_composite_egress(room_request("r", "no-such-bucket", "x"))
            await wait_status(lkapi, started.egress_id, {S.EGRESS_ACTIVE})
            await lkapi.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
            final = await wait_status(lkapi, started.egress_id, FINAL)
            lk.wait_for_egress(started.egress_id)
            again = await twirp_error(lkapi.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id)))
            return final, again

    final, again = asyncio.run(scenario())
    assert final.status == S.EGRESS_FAILED
    assert final.error.startswith("S3 upload failed: ") and "NoSuchBucket" in final.error, final.error
    assert S3_SECRET not in final.error
    assert (again.code, again.message) == ("failed_precondition", "egress with status EGRESS_FAILED cannot be stopped")


# --------------------------------------------------------------------------- web egress


def test_web_egress_completes_with_the_object(lk: LocalLiveKitServer, s3: Any) -> None:
    """StartWebEgress goes ACTIVE once its page has loaded (no media needed), then stop -> COMPLETE and the object.

    No room: {room_name} stays as written (livekit/egress pkg/config/output_file.go).
    """
    s3.create_bucket(Bucket="rec-web")

    async def scenario() -> tuple[api.EgressInfo, api.EgressInfo]:
        async with client(lk) as lkapi:
            started = await lkapi.egress.start_web_egress(web_request("rec-web", "_healthcheck/{room_name}-{utc}"))
            await wait_status(lkapi, started.egress_id, {S.EGRESS_ACTIVE})
            await lkapi.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
            return started, await wait_status(lkapi, started.egress_id, FINAL)

    started, final = asyncio.run(scenario())
    assert started.status == S.EGRESS_STARTING and started.room_name == ""
    assert final.status == S.EGRESS_COMPLETE, final.error
    [result] = final.file_results
    assert re.fullmatch(r"_healthcheck/\{room_name\}-\d{17}\.ogg", result.filename), result.filename
    assert objects(s3, "rec-web") == [result.filename]
    assert_placeholders(started.web)
    assert_placeholders(final.web)


def test_web_egress_awaiting_a_start_signal_is_aborted(lk: LocalLiveKitServer, s3: Any) -> None:
    """With await_start_signal the page never signals here: the egress stays STARTING, and a stop aborts it."""
    s3.create_bucket(Bucket="rec-await")

    async def scenario() -> api.EgressInfo:
        async with client(lk) as lkapi:
            started = await lkapi.egress.start_web_egress(web_request("rec-await", "", await_start_signal=True))
            await asyncio.sleep(0.3)
            assert (await wait_status(lkapi, started.egress_id, {S.EGRESS_STARTING})).status == S.EGRESS_STARTING
            await lkapi.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
            lk.wait_for_egress(started.egress_id)
            return await wait_status(lkapi, started.egress_id, FINAL)

    final = asyncio.run(scenario())
    assert (final.status, final.error) == (S.EGRESS_ABORTED, "Start signal not received")
    assert objects(s3, "rec-await") == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"url": "ftp://example.invalid/page"}, "web url"),
        ({"url": "example.invalid/page"}, "web url"),
        ({"url": ""}, "web url"),
        ({"url": "https://exa mple.invalid/"}, "web url"),
        ({"video_only": True}, "audio_only and video_only"),
    ],
)
def test_web_egress_refusals(lk: LocalLiveKitServer, changes: dict[str, Any], field: str) -> None:
    """A non-http(s) url, or audio_only with video_only, is refused as livekit/egress pkg/config/pipeline.go does."""

    async def scenario() -> TwirpError:
        async with client(lk) as lkapi:
            return await twirp_error(lkapi.egress.start_web_egress(web_request("b", "x", **changes)))

    error = asyncio.run(scenario())
    assert (error.code, error.status, error.message) == (
        "invalid_argument",
        400,
        f"request has missing or invalid field: {field}",
    )
    assert lk.egresses == {}


# --------------------------------------------------------------------------- file naming


def test_expand_egress_filepath_matches_livekit_egress() -> None:
    """Filepath templating of livekit/egress pkg/config/output_file.go, as the local LiveKit stand-in applies it.

    (LiveKit Cloud is unreachable from here, so its egress naming is reproduced for the server on 127.0.0.1.)
    """
    when = datetime.datetime(2025, 3, 4, 5, 6, 7, 9_000, tzinfo=datetime.UTC)
    room: dict[str, Any] = {"room_name": "r", "room_id": "RM_1", "extension": ".ogg", "now": when}
    web: dict[str, Any] = {"room_name": "", "room_id": "", "extension": ".ogg", "now": when}
    assert expand_egress_filepath("a/{room_name}/{room_id}/{time}", **room) == "a/r/RM_1/2025-03-04T050607.ogg"
    assert expand_egress_filepath("{utc}-{retry}", **room) == "20250304050607009-{retry}.ogg"
    assert expand_egress_filepath("", **room) == "r-2025-03-04T050607.ogg"
    assert expand_egress_filepath("dir/", **room) == "dir/r-2025-03-04T050607.ogg"
    assert expand_egress_filepath("../../x.mp4", **room) == "x.ogg"
    assert expand_egress_filepath("a//b/./c.ogg", **room) == "a/b/c.ogg"
    assert expand_egress_filepath("v1.2", **room) == "v1.2.ogg"
    assert expand_egress_filepath("", **web) == "web-2025-03-04T050607.ogg"
    assert expand_egress_filepath("hc/{room_name}-{time}", **web) == "hc/{room_name}-2025-03-04T050607.ogg"


# --------------------------------------------------------------------------- fault injection


def test_faults_fire_in_order_then_service_resumes(lk: LocalLiveKitServer) -> None:
    """Queued faults (unavailable 503, internal 500, unauthenticated 401) fire in order; a 503 on 127.0.0.1 is not
    retried by the client.
    """
    lk.inject_fault("CreateRoom", "unavailable")
    lk.inject_fault("CreateRoom", "internal")
    lk.inject_fault("livekit.RoomService/CreateRoom", "unauthenticated")

    async def scenario() -> list[tuple[str, int]]:
        seen = []
        async with client(lk) as lkapi:
            for _ in range(3):
                error = await twirp_error(lkapi.room.create_room(api.CreateRoomRequest(name="fault-room")))
                seen.append((error.code, error.status))
            assert (await lkapi.room.create_room(api.CreateRoomRequest(name="fault-room"))).name == "fault-room"
        return seen

    assert asyncio.run(scenario()) == [("unavailable", 503), ("internal", 500), ("unauthenticated", 401)]
    assert lk.methods_called() == ["CreateRoom"] * 4
    with pytest.raises(ValueError):
        lk.inject_fault("CreateRoom", "teapot")
    with pytest.raises(ValueError):
        lk.inject_fault("ListRooms", "internal")  # not served any more


def test_timeout_fault_holds_the_answer_and_stop_cuts_it_short() -> None:
    """A "timeout" fault holds the answer for fault_delay (then answers); stop() ends a held one at once."""
    with LocalLiveKitServer(API_KEY, API_SECRET, fault_delay=0.5) as lk:
        lk.inject_fault("ListEgress", "timeout")

        async def held() -> float:
            async with client(lk) as lkapi:
                began = time.monotonic()
                await lkapi.egress.list_egress(api.ListEgressRequest())
                return time.monotonic() - began

        assert asyncio.run(held()) >= 0.45
    server = LocalLiveKitServer(API_KEY, API_SECRET, fault_delay=30.0).start()
    try:
        server.inject_fault("ListEgress", "timeout")

        async def cut() -> None:
            async with client(server) as lkapi:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(lkapi.egress.list_egress(api.ListEgressRequest()), 0.3)

        asyncio.run(cut())
    finally:
        began = time.monotonic()
        server.stop()
    assert time.monotonic() - began < 3.0


# --------------------------------------------------------------------------- hygiene


def test_no_secret_reaches_logs_state_or_responses(
    lk: LocalLiveKitServer, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the API secret, the bearer token nor the S3 keys show up in logs, repr, request log or egress info."""
    caplog.set_level(logging.DEBUG, logger="callsaver_infra.dev.livekit_local")
    s3.create_bucket(Bucket="rec-hygiene")
    lk.add_room("hygiene")
    lk.publish_audio("hygiene")
    lk.inject_fault("ListEgress", "internal")

    async def scenario() -> list[str]:
        async with client(lk) as lkapi:
            started = await lkapi.egress.start_room_composite_egress(room_request("hygiene", "rec-hygiene", "h"))
            with pytest.raises(TwirpError):
                await lkapi.egress.list_egress(api.ListEgressRequest())
            await wait_status(lkapi, started.egress_id, {S.EGRESS_ACTIVE})
            await lkapi.egress.stop_egress(api.StopEgressRequest(egress_id=started.egress_id))
            final = await wait_status(lkapi, started.egress_id, FINAL)
            return [str(started), str(final)]

    reported = asyncio.run(scenario())
    dumped = json.dumps([list(r) for r in lk.requests]) + repr(lk) + "".join(reported)
    dumped += "".join(str(info) for info in lk.egresses.values())
    for secret in (API_SECRET, S3_SECRET, S3_ACCESS_KEY):
        assert secret not in caplog.text
        assert secret not in dumped
    assert "eyJ" not in caplog.text and "eyJ" not in dumped  # no JWT (base64 of '{"') anywhere
    assert "{secret}" in dumped  # the placeholders are what is shown
