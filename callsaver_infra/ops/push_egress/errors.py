"""The hook's errors: HookError (exit 2) and NotReadyError (exit 1)."""

from __future__ import annotations


class HookError(Exception):
    """The hook failed; the message says what, where, and what to do. It never contains a secret."""


class NotReadyError(HookError):
    """Something the hook needs is not there yet (a stack, an output, a secret): deploy or set it first."""
