"""The listing probe: whether LiveKit's listing blanks sensitive fields (set, read back, remove an attribute)."""

from __future__ import annotations

from livekit import api

from callsaver_infra.ops.push_egress.session import LiveKitSession

# The probe attribute the hook sets and removes to learn whether LiveKit's listing blanks sensitive fields.
PROBE_ATTRIBUTE = "callsaver.listing-probe"


async def probe_listing_blanks(session: LiveKitSession, rule: api.SIPDispatchRuleInfo) -> bool:
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
