"""Public schemas of enrollment tokens and device enrollments (docs/security.md, Devices). A token's secret
appears in exactly one answer: the one that created it. The enrollment request and answer themselves are the
wire contract's (`edge_agent.protocol.enrollment`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from control_plane.api.schemas.base import Out
from control_plane.api.schemas.identity import MAX_TOKEN_LIFETIME_S
from control_plane.domain.enrollment import DeviceEnrollment, key_fingerprint
from edge_agent.protocol.enrollment import EnrollmentStatus
from edge_agent.protocol.messages import LabelKey, LabelValue, Name
from edge_agent.protocol.vocabulary import Channel


class EnrollmentTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="What the token is for, e.g. site-a-line-2.")
    expires_in_s: int | None = Field(
        default=None, gt=0, le=MAX_TOKEN_LIFETIME_S, description="Lifetime in seconds; none: until revoked."
    )
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000, description="Devices it may enroll; none: any.")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64, description="Preset labels.")
    channel: Channel | None = Field(default=None, description="Preset channel (default mqtt).")
    gpu_class: Name | None = Field(default=None, description="Preset GPU class (default: what the device detects).")
    auto_approve: bool = Field(default=False, description="Enroll new devices at once, without an operator.")


class EnrollmentTokenOut(Out):
    id: str
    name: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    max_uses: int | None
    uses: int
    revoked_at: datetime | None
    auto_approve: bool
    labels: dict[str, str]
    channel: Channel | None
    gpu_class: str | None


# Read from an EnrollmentToken `with_fields(token, token=secret)`: only the digest is kept.
class EnrollmentTokenCreatedOut(EnrollmentTokenOut):
    token: str = Field(description="The secret, shown this once: hand it to provisioning (edge-agent enroll).")


class EnrollmentOut(Out):
    """A device's enrolled key and its latest request."""

    device_id: str
    status: EnrollmentStatus
    key: str | None = Field(description="Fingerprint of the approved key.")
    approved_at: datetime | None
    requested_key: str | None = Field(description="Fingerprint of the key of the latest request.")
    requested_at: datetime | None
    requested_with: str | None = Field(description="Name of the enrollment token of the latest request.")
    gpu_class: str | None = Field(description="GPU class the device detected when it asked.")
    decided_by: str | None
    reason: str | None

    @classmethod
    def of(cls, e: DeviceEnrollment, token_names: dict[str, str]) -> EnrollmentOut:
        r = e.request
        return cls(
            device_id=e.device_id,
            status=e.status,
            key=key_fingerprint(e.public_key) if e.public_key else None,
            approved_at=e.approved_at,
            requested_key=key_fingerprint(r.public_key) if r else None,
            requested_at=r.requested_at if r else None,
            requested_with=token_names.get(r.token_id, r.token_id) if r and r.token_id else None,
            gpu_class=r.hardware.gpu_class if r else None,
            decided_by=r.decided_by if r else None,
            reason=r.reason if r else None,
        )


class DenyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500, description="Told to the device and kept.")


class LabelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: dict[LabelKey, LabelValue] = Field(max_length=64, description="All of the device's labels.")


class RefusalOut(Out):
    """Any refusal the API answers itself (401, 403 of a credential, 413): `{"detail": "..."}`."""

    detail: str
