"""The hook's time limits: LiveKit request timeout and retries, --verify's recording length. Free of the LiveKit
client and aiohttp, so the command line can show them in --help without loading either."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TIMEOUT_SECONDS = 10.0
# How long --verify's test egress records (--verify-seconds).
VERIFY_RECORD_SECONDS = 3.0
# How often --verify asks LiveKit (ListEgress) how its test egress is doing: a few requests a second is gentle on
# LiveKit Cloud and fine-grained enough for an egress that takes seconds to start, record and upload.
VERIFY_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for connection errors, timeouts and 5xx: `attempts` tries, backoff doubling from `backoff`."""

    attempts: int = 3
    backoff_seconds: float = 0.5

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after the failed_attempt-th try (0-based)."""
        return self.backoff_seconds * 2.0**failed_attempt


DEFAULT_RETRY = RetryPolicy()
