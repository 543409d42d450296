"""The LiveKit API session: dispatch rule listing and update, egress calls, with retries and redaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aiohttp
from livekit import api
from livekit.api.twirp_client import ServerError

from callsaver_infra.app.names import (
    EnvNames,
)
from callsaver_infra.app.secret_catalog import LIVEKIT_KEY_REF, LIVEKIT_SECRET_REF
from callsaver_infra.ops.push_egress.credentials import LiveKitCredentials, Redactor
from callsaver_infra.ops.push_egress.errors import HookError
from callsaver_infra.ops.push_egress.limits import DEFAULT_RETRY, DEFAULT_TIMEOUT_SECONDS, RetryPolicy

T = TypeVar("T")


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
