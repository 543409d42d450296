"""`callsaver-infra push-egress`: the post-deploy hook that writes the recording settings into LiveKit's dispatch rules.

The modules, one concern each: command (the orchestration and its options), credentials and outputs (what it reads
from AWS), rules and owned (the field it writes, the plan and diff per rule, the read-back check), masking (credentials
LiveKit hands back masked or blanked), probe (the listing probe), session (LiveKit's API with retries), receipt (the
push receipt), verify (--verify's web egress), dispatch_rules (which rules an environment's are) and egress_key_check
(the key works before it is pushed). This package's names below are its interface for the CLI, status and tests.
"""

from callsaver_infra.ops.push_egress.command import LOCAL_ACCOUNT, HookOptions, check_local_overrides, run_hook
from callsaver_infra.ops.push_egress.credentials import (
    EgressCredentials,
    LiveKitCredentials,
    Redactor,
    read_egress_credentials,
    read_livekit_credentials,
)
from callsaver_infra.ops.push_egress.dispatch_rules import mask_key
from callsaver_infra.ops.push_egress.errors import HookError, NotReadyError
from callsaver_infra.ops.push_egress.masking import credential_fingerprint
from callsaver_infra.ops.push_egress.owned import OWNED_FIELD, unowned_part
from callsaver_infra.ops.push_egress.probe import PROBE_ATTRIBUTE
from callsaver_infra.ops.push_egress.receipt import PushReceipt
from callsaver_infra.ops.push_egress.rules import (
    EgressSettings,
    RulePlan,
    changed_fields,
    render_diff,
    room_composite_request,
)
from callsaver_infra.ops.push_egress.session import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT_SECONDS,
    LiveKitSession,
    RetryPolicy,
    api_url,
)
from callsaver_infra.ops.push_egress.verify import VERIFY_PAGE_URL, VERIFY_RECORD_SECONDS, verify_egress

__all__ = [
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT_SECONDS",
    "LOCAL_ACCOUNT",
    "OWNED_FIELD",
    "PROBE_ATTRIBUTE",
    "VERIFY_PAGE_URL",
    "VERIFY_RECORD_SECONDS",
    "EgressCredentials",
    "EgressSettings",
    "HookError",
    "HookOptions",
    "LiveKitCredentials",
    "LiveKitSession",
    "NotReadyError",
    "PushReceipt",
    "Redactor",
    "RetryPolicy",
    "RulePlan",
    "api_url",
    "changed_fields",
    "check_local_overrides",
    "credential_fingerprint",
    "mask_key",
    "read_egress_credentials",
    "read_livekit_credentials",
    "render_diff",
    "room_composite_request",
    "run_hook",
    "unowned_part",
    "verify_egress",
]
