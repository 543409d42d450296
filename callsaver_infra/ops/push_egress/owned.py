"""The one field of a dispatch rule the hook owns; every other field is the operator's and goes back as read."""

from __future__ import annotations

from livekit import api

# The part of a rule the hook owns and writes. Everything else is the operator's and goes back exactly as read.
OWNED_FIELD = "room_config.egress.room"


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
