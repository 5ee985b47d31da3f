"""The enrollment contract: how a device asks the control plane for its identity (`POST /v1/enroll`).

The device makes its own ed25519 key pair and never sends the private key. Each request is signed with the key it
names (proof of possession); a key rotation is also signed by the device's current key. The answer is `pending`
(ask again later), `approved` with the identity (broker credentials, the pinned signing key, an artifact
credential, and the tunnel gateway with its host key when the agent accepts it), or a refusal. Both sides validate
against these models; this module imports nothing of the project but the wire contract.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.protocol.messages import HardwareFacts, Name
from edge_agent.protocol.signing import Signer, canonical_json, valid_public_key
from edge_agent.protocol.tunnel import TunnelEndpoint

ENROLL_PATH = "/v1/enroll"
ENROLLMENT_TOKEN_PREFIX = "enroll_"  # noqa: S105 (marks enrollment tokens apart from API tokens; not a secret)
MAX_ENROLL_BODY_BYTES = 16 * 1024
# What of the identity an agent understands beyond the fields every agent knows (comma-separated). An older agent
# refuses an identity with a field it does not know, so the control plane adds `tunnel` only when asked for it.
ENROLL_ACCEPTS_HEADER = "Edge-Enroll-Accepts"
ACCEPTS_TUNNEL = "tunnel"
Signature = str  # base64 of a raw 64-byte ed25519 signature


class EnrollmentStatus(str, Enum):
    PENDING = "pending"  # an operator has not decided yet: ask again after `retry_after_s`
    APPROVED = "approved"  # the key is the device's identity; the answer carries the credentials
    DENIED = "denied"  # an operator refused this key: stop asking


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnrollRequest(_Wire):
    """A device asking for (or rotating) its identity. `signature` is by `public_key` over `signed_bytes()`;
    `previous_signature`, for a rotation, by the device's current key over the same bytes."""

    device_id: Name | None = Field(default=None, description="Wanted id; default: derived from the public key.")
    public_key: str = Field(min_length=44, max_length=44, description="base64 of the raw 32-byte ed25519 key.")
    hardware: HardwareFacts
    at: datetime = Field(description="When the device signed the request; far from the server's clock: refused.")
    signature: Signature = Field(min_length=88, max_length=88)
    previous_signature: Signature | None = Field(default=None, min_length=88, max_length=88)

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        return valid_public_key(value)

    @field_validator("signature", "previous_signature")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("not base64") from exc
        return value

    def signed_bytes(self) -> bytes:
        """The exact bytes both signatures cover: every field but the signatures, as canonical JSON."""
        data = self.model_dump(mode="json", exclude={"signature", "previous_signature"})
        return canonical_json(data).encode()


def signed_request(
    key: Signer,
    hardware: HardwareFacts,
    at: datetime,
    device_id: str | None = None,
    previous_key: Signer | None = None,
) -> EnrollRequest:
    """A request for `key`, signed by it (and by `previous_key` for a rotation)."""
    unsigned = EnrollRequest.model_construct(
        device_id=device_id,
        public_key=key.public_key_b64,
        hardware=hardware,
        at=at,
        signature="",
        previous_signature=None,
    )
    data = unsigned.signed_bytes()
    return EnrollRequest(
        device_id=device_id,
        public_key=key.public_key_b64,
        hardware=hardware,
        at=at,
        signature=key.sign(data),
        previous_signature=previous_key.sign(data) if previous_key is not None else None,
    )


class DeviceIdentity(_Wire):
    """What an approved device receives. The secrets are minted when it is handed out and never stored in clear."""

    device_id: Name
    mqtt_username: str = Field(min_length=1, max_length=128)
    mqtt_password: str = Field(min_length=16, max_length=256)
    mqtt_host: str | None = Field(default=None, max_length=255, description="Where devices reach the broker.")
    mqtt_port: int | None = Field(default=None, ge=1, le=65535)
    topic_prefix: str = Field(default="edge", min_length=1, max_length=128)
    control_plane_public_key: str = Field(min_length=44, max_length=44, description="The key to pin.")
    control_plane_token: str = Field(min_length=16, max_length=256, description="The device's artifact credential.")
    broker_ca_pem: str | None = Field(
        default=None,
        max_length=32_768,
        description="The CA (PEM) the broker's TLS certificate chains to; None when the broker speaks plain MQTT.",
    )
    tunnel: TunnelEndpoint | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="The tunnel gateway and its host key to pin; None when the control plane announces no gateway.",
    )


class EnrollAnswer(_Wire):
    status: EnrollmentStatus
    device_id: Name
    message: str = Field(max_length=2000)
    retry_after_s: float | None = Field(default=None, ge=0, le=86_400)
    identity: DeviceIdentity | None = None
