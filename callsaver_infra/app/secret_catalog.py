"""Which secrets each environment holds, who owns their values, and the placeholder that marks one as unset.

Shared by the Secrets stack (creates them), the Agent stack (injects them) and `callsaver-infra secrets` (checks and
sets them), so the three can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callsaver_infra.app.config import EnvironmentConfig

# The value CloudFormation writes when it creates an operator-owned secret. CloudFormation rewrites a secret only
# when this template value changes, so changing this text would overwrite every real secret on the next deploy:
# it is pinned by tests/test_secrets_stack.py and must never change.
PLACEHOLDER = "CALLSAVER-PLACEHOLDER: not set yet; set it with `callsaver-infra secrets set`"


@dataclass(frozen=True)
class SecretSpec:
    """One secret: its namespace and key, and, for configuration values, where config holds the value."""

    namespace: str
    key: str
    from_config: Callable[[EnvironmentConfig], str] | None = None
    for_agent: bool = False

    @property
    def ref(self) -> str:
        """The short name operators type: "agent/OPENAI_API_KEY"."""
        return f"{self.namespace}/{self.key}"

    @property
    def owned_by_stack(self) -> bool:
        """True for configuration values the stack writes from config; operators set the others."""
        return self.from_config is not None


# The LiveKit API key pair: the agent's, and the one push-egress, status and rotate-egress-key sign LiveKit calls with.
LIVEKIT_API_KEY = SecretSpec("backend", "LIVEKIT_API_KEY", for_agent=True)
LIVEKIT_API_SECRET = SecretSpec("backend", "LIVEKIT_API_SECRET", for_agent=True)
LIVEKIT_KEY_REF = LIVEKIT_API_KEY.ref
LIVEKIT_SECRET_REF = LIVEKIT_API_SECRET.ref

SECRETS: tuple[SecretSpec, ...] = (
    SecretSpec("backend", "LIVEKIT_URL", from_config=lambda c: c.livekit.url),
    LIVEKIT_API_KEY,
    LIVEKIT_API_SECRET,
    SecretSpec("backend", "SESSION_S3_BUCKET", from_config=lambda c: c.storage.bucket_name),
    SecretSpec("agent", "LIVEKIT_OUTBOUND_TRUNK_ID", for_agent=True),
    SecretSpec("agent", "OPENAI_API_KEY", for_agent=True),
    SecretSpec("agent", "DEEPGRAM_API_KEY", for_agent=True),
    SecretSpec("agent", "CARTESIA_API_KEY", for_agent=True),
    SecretSpec("agent", "ANTHROPIC_API_KEY", for_agent=True),
    SecretSpec("agent", "ASSEMBLYAI_API_KEY", for_agent=True),
    SecretSpec("agent", "GOOGLE_API_KEY", for_agent=True),
)
NAMESPACES = ("backend", "agent")


def find(ref: str) -> SecretSpec | None:
    """The spec for "namespace/KEY", or None."""
    return next((s for s in SECRETS if s.ref == ref), None)
