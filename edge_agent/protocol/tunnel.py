"""The tunnel's part of the wire contract: where the gateway is and which host key it proves itself with (handed to
a device at enrollment), how healthy a device's link is (in its reported state), and the name the agent measures
the link's round trip with.

Both sides validate against these models. What a device receives here comes from the network and is bounded and
parsed before any of it is written to the agent's config: a host key must be an ssh-ed25519 public key, nothing
else. Link health is the device's claim: shown to operators, never acted on. This module imports nothing of the
project but the wire contract's pydantic base.
"""

from __future__ import annotations

import base64
import binascii
import struct
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ED25519 = "ssh-ed25519"
MAX_HOST_KEY_LINE = 128  # "ssh-ed25519 " and 68 characters of base64
MAX_LINK_ERROR = 500
MAX_RTT_MS = 600_000.0
RTT_PROBE = "_rtt"  # a direct connection to this name is refused at once by the gateway: its round trip is the RTT
_ED25519_BLOB = struct.pack(">I", len(ED25519)) + ED25519.encode() + struct.pack(">I", 32)

ServiceName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
LinkCounter = Annotated[int, Field(ge=0, le=2**53)]


def valid_host_key(line: str) -> str:
    """An SSH ed25519 public key line, `ssh-ed25519 AAAA...` (no comment), as a gateway's host key is pinned; a
    ValueError saying what is wrong otherwise."""
    parts = line.split()
    if len(line) > MAX_HOST_KEY_LINE or len(parts) != 2 or parts[0] != ED25519:
        raise ValueError(f"a host key must be one '{ED25519} AAAA...' line")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the host key is not base64") from exc
    if len(blob) != len(_ED25519_BLOB) + 32 or not blob.startswith(_ED25519_BLOB):
        raise ValueError(f"the host key is not an {ED25519} public key")
    return f"{ED25519} {parts[1]}"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TunnelEndpoint(_Wire):
    """Where a device reaches the tunnel gateway, and the host key the agent pins for it."""

    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9.:-]*$")
    port: int = Field(ge=1, le=65535)
    host_key: str = Field(max_length=MAX_HOST_KEY_LINE, description="'ssh-ed25519 AAAA...': pinned by the agent.")

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str) -> str:
        return valid_host_key(value)


class TunnelHealth(_Wire):
    """A device's one tunnel as its agent sees it. Bytes are the payload of the forwarded connections (exposed
    services and cloud services together) since the agent started: `bytes_in` reached the device through the
    tunnel, `bytes_out` left it; `rtt_ms` is the round trip of an SSH request the gateway answers at once."""

    connected: bool
    connected_since: datetime | None = None
    rtt_ms: float | None = Field(default=None, ge=0, le=MAX_RTT_MS)
    bytes_in: LinkCounter = 0
    bytes_out: LinkCounter = 0
    reconnects: LinkCounter = 0
    last_error: str | None = Field(default=None, max_length=MAX_LINK_ERROR)
    exposed: list[ServiceName] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _since_only_when_connected(self) -> TunnelHealth:
        if self.connected_since is not None and not self.connected:
            raise ValueError("connected_since is set only while connected")
        return self
