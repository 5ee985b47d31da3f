"""Device enrollment: enrollment tokens, a device's key and its request, and who decides what a request gets.

Pure values and one pure decision, `decide` (no I/O, no clock reads: `now` comes in). The rules, in order:
1. a request signed by the device's approved key gets its identity (again: credentials are minted on hand-out);
2. a rotation signed by the device's current key, sent with that device's own token, is approved at once;
3. anything else needs a usable enrollment token; a key already asked about keeps its answer (pending, denied);
4. a device id the control plane already knows is never taken over by a token alone: an operator approves it;
5. a new device gets its identity at once with an auto-approving token, else waits for an operator.
This module must never approve a key without one of those proofs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from edge_agent.protocol import HardwareFacts
from edge_agent.protocol.enrollment import EnrollmentStatus
from edge_agent.protocol.vocabulary import Channel

MAX_CLOCK_SKEW = timedelta(minutes=10)  # a signed request dated further from the server's clock is refused
RETRY_AFTER_S = 30.0  # what a pending device is told; the agent adds jitter and caps its own backoff


@dataclass(frozen=True)
class EnrollmentToken:
    """A credential an operator hands to provisioning: who may ask to enroll, how often, until when, and what the
    devices enrolled with it start with (labels, channel, GPU class). Only the secret's sha256 is kept."""

    id: str
    name: str
    digest: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    max_uses: int | None
    uses: int
    revoked_at: datetime | None
    auto_approve: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    channel: Channel | None = None
    gpu_class: str | None = None

    def refusal(self, now: datetime) -> str | None:
        """Why this token may not start a new enrollment at `now`, or None when it may."""
        if self.revoked_at is not None:
            return "enrollment token revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "enrollment token expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return f"enrollment token used up ({self.uses} of {self.max_uses} uses)"
        return None


@dataclass(frozen=True)
class EnrollmentRequest:
    """The latest key a device asked to be enrolled with, and the answer so far."""

    public_key: str
    token_id: str | None
    hardware: HardwareFacts
    status: EnrollmentStatus
    requested_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DeviceEnrollment:
    """A device's identity as the control plane holds it: its approved key (None until one is) and its latest
    request. `artifact_token_id` is the device token handed out last (revoked when a new one is)."""

    device_id: str
    public_key: str | None
    request: EnrollmentRequest | None
    approved_at: datetime | None = None
    artifact_token_id: str | None = None

    @property
    def status(self) -> EnrollmentStatus:
        if self.request is not None and self.request.public_key != self.public_key:
            return self.request.status
        return EnrollmentStatus.APPROVED if self.public_key is not None else EnrollmentStatus.PENDING


class Outcome(str, Enum):
    ISSUE = "issue"  # hand out the identity (approving the key first when `approve`)
    PENDING = "pending"  # an operator must decide
    DENIED = "denied"  # an operator refused this key
    REFUSED = "refused"  # no proof at all: 401


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    approve: bool = False  # the request's key becomes the device's key now
    new_request: bool = False  # a new request: store it, and count one use of the token
    rotation: bool = False


@dataclass(frozen=True)
class Proofs:
    """What the caller proved, checked by the service before deciding: the request's own signature is always
    checked first (no decision is made without it)."""

    token: EnrollmentToken | None  # the enrollment token it presented, if any
    device_token_for: str | None  # the device id its device token is bound to, if it presented one
    previous_key_signed: bool  # `previous_signature` verifies against the device's approved key


def decide(
    device_id: str, key: str, record: DeviceEnrollment | None, device_known: bool, proofs: Proofs, now: datetime
) -> Decision:
    """What a signed request for `key` as `device_id` gets (see the module docstring for the rules)."""
    approved_key = record.public_key if record is not None else None
    if approved_key == key:
        return Decision(Outcome.ISSUE, "the device's approved key")
    if proofs.previous_key_signed and proofs.device_token_for == device_id and approved_key is not None:
        return Decision(Outcome.ISSUE, "key rotated: signed by the device's current key", approve=True, rotation=True)
    token = proofs.token
    if token is None:
        return Decision(Outcome.REFUSED, "enrolling a new key needs an enrollment token")
    request = record.request if record is not None else None
    if request is not None and request.public_key == key:
        if request.status is EnrollmentStatus.DENIED:
            return Decision(Outcome.DENIED, f"enrollment of {device_id} was denied" + _why(request.reason))
        if request.status is EnrollmentStatus.PENDING:
            if token.revoked_at is not None:
                return Decision(Outcome.REFUSED, "enrollment token revoked")
            return Decision(Outcome.PENDING, f"enrollment of {device_id} waits for an operator's approval")
    refusal = token.refusal(now)
    if refusal is not None:
        return Decision(Outcome.REFUSED, refusal)
    if device_known or approved_key is not None:
        return Decision(
            Outcome.PENDING,
            f"{device_id} is already enrolled: an operator must approve the new key (edgectl devices approve)",
            new_request=True,
        )
    if token.auto_approve:
        return Decision(Outcome.ISSUE, "approved by the enrollment token", approve=True, new_request=True)
    return Decision(Outcome.PENDING, f"enrollment of {device_id} waits for an operator's approval", new_request=True)


def _why(reason: str | None) -> str:
    return f": {reason}" if reason else ""


def clock_skew_refusal(signed_at: datetime, now: datetime) -> str | None:
    """A signed request must be dated within MAX_CLOCK_SKEW of the server's clock (bounds replays)."""
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        return f"the request is dated {signed_at.isoformat()}, too far from the control plane's clock; check NTP"
    return None


def derived_device_id(public_key_b64: str) -> str:
    """The id of a device that did not ask for one: stable for its key."""
    return "dev-" + hashlib.sha256(public_key_b64.encode()).hexdigest()[:12]


def key_fingerprint(public_key_b64: str) -> str:
    return "sha256:" + hashlib.sha256(public_key_b64.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Placement:
    """Where an approved device sits in the fleet: what the control plane decides, never the device."""

    channel: Channel
    labels: Mapping[str, str]
    gpu_class: str | None


def placement(
    token: EnrollmentToken | None,
    hardware: HardwareFacts,
    existing_channel: Channel | None,
    existing_labels: Mapping[str, str] | None,
    existing_gpu_class: str | None,
) -> Placement:
    """A new device starts with the token's presets (GPU class: the preset, else what it detected at enrollment,
    which an operator or an auto-approving token vouched for); a device already known keeps its own unless the
    token presets them."""
    presets = token if token is not None else None
    labels = dict(presets.labels) if presets is not None and presets.labels else dict(existing_labels or {})
    channel = (presets.channel if presets is not None else None) or existing_channel or Channel.MQTT
    gpu_class = (presets.gpu_class if presets is not None else None) or existing_gpu_class or hardware.gpu_class
    return Placement(channel=channel, labels=labels, gpu_class=gpu_class)
