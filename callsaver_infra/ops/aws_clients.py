"""AWS clients for the operator commands, from botocore directly: the same clients boto3.client builds (same
credential chain, region, AWS_ENDPOINT_URL, retries), without importing boto3, which imports s3transfer
(~0.15 s of every command; push-egress has a 1 s budget as a process)."""

from __future__ import annotations

from typing import Any

# One session per process, as boto3's DEFAULT_SESSION (and, like it, caching the credentials it first resolved:
# set it to None to start over); its loader caches the service models between clients.
DEFAULT_SESSION: Any = None


def client(service: str, **kwargs: Any) -> Any:
    """A botocore client for service; kwargs as boto3.client's (region_name, endpoint_url, credentials)."""
    global DEFAULT_SESSION
    if DEFAULT_SESSION is None:
        import botocore.session

        DEFAULT_SESSION = botocore.session.get_session()
    return DEFAULT_SESSION.create_client(service, **kwargs)
