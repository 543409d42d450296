"""`callsaver-infra push-egress`: the post-deploy hook that writes the recording settings into LiveKit's dispatch rules.

The modules, one concern each: command (the orchestration and its options), credentials and outputs (what it reads
from AWS), rules and owned (the field it writes, the plan and diff per rule, the read-back check), masking (credentials
LiveKit hands back masked or blanked), probe (the listing probe), session (LiveKit's API with retries), receipt (the
push receipt), verify (--verify's web egress), dispatch_rules (which rules an environment's are), egress_key_check
(the key works before it is pushed) and limits (timeouts, retries, --verify's length).

This package's names below are its interface for the CLI, status and tests. Each loads on first use, so a command
that needs only the limits and the errors (every `callsaver-infra` command, for its --help and exit codes) does not
load the LiveKit client and aiohttp (tests/test_imports.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy's view (`X as X`: re-exported); at run time __getattr__ loads each name on first use
    from callsaver_infra.ops.push_egress.command import LOCAL_ACCOUNT as LOCAL_ACCOUNT
    from callsaver_infra.ops.push_egress.command import HookOptions as HookOptions
    from callsaver_infra.ops.push_egress.command import check_local_overrides as check_local_overrides
    from callsaver_infra.ops.push_egress.command import run_hook as run_hook
    from callsaver_infra.ops.push_egress.credentials import EgressCredentials as EgressCredentials
    from callsaver_infra.ops.push_egress.credentials import LiveKitCredentials as LiveKitCredentials
    from callsaver_infra.ops.push_egress.credentials import Redactor as Redactor
    from callsaver_infra.ops.push_egress.credentials import read_egress_credentials as read_egress_credentials
    from callsaver_infra.ops.push_egress.credentials import read_livekit_credentials as read_livekit_credentials
    from callsaver_infra.ops.push_egress.dispatch_rules import mask_key as mask_key
    from callsaver_infra.ops.push_egress.errors import HookError as HookError
    from callsaver_infra.ops.push_egress.errors import NotReadyError as NotReadyError
    from callsaver_infra.ops.push_egress.limits import DEFAULT_RETRY as DEFAULT_RETRY
    from callsaver_infra.ops.push_egress.limits import DEFAULT_TIMEOUT_SECONDS as DEFAULT_TIMEOUT_SECONDS
    from callsaver_infra.ops.push_egress.limits import VERIFY_POLL_SECONDS as VERIFY_POLL_SECONDS
    from callsaver_infra.ops.push_egress.limits import VERIFY_RECORD_SECONDS as VERIFY_RECORD_SECONDS
    from callsaver_infra.ops.push_egress.limits import RetryPolicy as RetryPolicy
    from callsaver_infra.ops.push_egress.masking import credential_fingerprint as credential_fingerprint
    from callsaver_infra.ops.push_egress.owned import OWNED_FIELD as OWNED_FIELD
    from callsaver_infra.ops.push_egress.owned import unowned_part as unowned_part
    from callsaver_infra.ops.push_egress.probe import PROBE_ATTRIBUTE as PROBE_ATTRIBUTE
    from callsaver_infra.ops.push_egress.receipt import PushReceipt as PushReceipt
    from callsaver_infra.ops.push_egress.rules import EgressSettings as EgressSettings
    from callsaver_infra.ops.push_egress.rules import RulePlan as RulePlan
    from callsaver_infra.ops.push_egress.rules import changed_fields as changed_fields
    from callsaver_infra.ops.push_egress.rules import render_diff as render_diff
    from callsaver_infra.ops.push_egress.rules import room_composite_request as room_composite_request
    from callsaver_infra.ops.push_egress.session import LiveKitSession as LiveKitSession
    from callsaver_infra.ops.push_egress.session import api_url as api_url
    from callsaver_infra.ops.push_egress.verify import VERIFY_PAGE_URL as VERIFY_PAGE_URL
    from callsaver_infra.ops.push_egress.verify import verify_egress as verify_egress

# Each exported name's module.
_HOME = {
    "command": ("LOCAL_ACCOUNT", "HookOptions", "check_local_overrides", "run_hook"),
    "credentials": (
        "EgressCredentials",
        "LiveKitCredentials",
        "Redactor",
        "read_egress_credentials",
        "read_livekit_credentials",
    ),
    "dispatch_rules": ("mask_key",),
    "errors": ("HookError", "NotReadyError"),
    "limits": (
        "DEFAULT_RETRY",
        "DEFAULT_TIMEOUT_SECONDS",
        "VERIFY_POLL_SECONDS",
        "VERIFY_RECORD_SECONDS",
        "RetryPolicy",
    ),
    "masking": ("credential_fingerprint",),
    "owned": ("OWNED_FIELD", "unowned_part"),
    "probe": ("PROBE_ATTRIBUTE",),
    "receipt": ("PushReceipt",),
    "rules": ("EgressSettings", "RulePlan", "changed_fields", "render_diff", "room_composite_request"),
    "session": ("LiveKitSession", "api_url"),
    "verify": ("VERIFY_PAGE_URL", "verify_egress"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later reads (and monkeypatch.setattr) see a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
