"""The push receipt (an SSM parameter): which key fingerprint each dispatch rule last received."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from callsaver_infra.ops.push_egress.errors import HookError


class PushReceipt:
    """Which key pair the last push wrote into each rule, as one-way fingerprints in an SSM parameter.

    LiveKit may list a rule with its access key id masked (egress/redact.go `{access_key}`) or blanked
    (utils/proto.go), and then only this record tells a rotated key from the one LiveKit holds.
    """

    def __init__(self, client: Any, name: str) -> None:
        self._client = client
        self.name = name
        self.entries: dict[str, str] = {}
        self.readable = True

    def load(self) -> PushReceipt:
        try:
            value = self._client.get_parameter(Name=self.name)["Parameter"]["Value"]
        except ClientError as e:
            # No receipt means "unknown": the push then rewrites, which is safe.
            self.readable = e.response["Error"]["Code"] == "ParameterNotFound"
            return self
        try:
            data = json.loads(value)
        except ValueError:
            data = {}
        if isinstance(data, dict):
            self.entries = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
        return self

    def save(self) -> None:
        value = json.dumps(dict(sorted(self.entries.items())), separators=(",", ":"))
        try:
            self._client.put_parameter(Name=self.name, Value=value, Type="String", Overwrite=True)
        except ClientError as e:
            raise HookError(
                f"pushed, but could not record the push in SSM parameter {self.name} "
                f"({e.response['Error']['Code']}): the next run will push again; the deploy role needs "
                "ssm:PutParameter on it"
            ) from None
