"""Values of the fleet: devices as the control plane knows them, their events, and presence derivation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.telemetry import ModelWindow
from edge_agent.protocol import (
    DesiredState,
    HardwareFacts,
    PresenceStatus,
    ReportedState,
    SignedDesiredState,
    Telemetry,
)
from edge_agent.protocol.vocabulary import Channel


class Presence(str, Enum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DeliveryFailure:
    """A push (the Ansible channel) that did not reach the agent: unreachable host, failed copy, cancelled run.
    The device reported nothing for that generation; the rollout counts it failed with this reason."""

    generation: int
    reason: str
    at: datetime


@dataclass(frozen=True)
class Device:
    id: str
    created_at: datetime
    gpu_class: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    hardware: HardwareFacts | None = None
    reported: ReportedState | None = None
    channel: Channel = Channel.MQTT
    status: PresenceStatus | None = None  # from the retained status topic / last will, if ever received
    last_seen: datetime | None = None
    desired_generation: int = 0
    desired: SignedDesiredState | None = None
    telemetry: Telemetry | None = None
    ansible: AnsibleConnection | None = None  # set by enrollment; devices on the Ansible channel need it
    delivery_failure: DeliveryFailure | None = None  # the latest push that did not reach the agent
    # Builds sent to the device in its desired states (build id -> model, version): what a report may name.
    issued_builds: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def desired_document(self) -> DesiredState | None:
        if self.desired is None:
            return None
        return DesiredState.model_validate_json(self.desired.document)


@dataclass(frozen=True)
class DeviceFacts:
    """A device without its three documents (reported state, desired state, telemetry): what the control plane
    enrolled, issued and last heard of it. What the ingest writer checks every message against and the rollout
    executor reads presence from, batch after batch, so it is read from the small columns alone."""

    id: str
    gpu_class: str | None
    labels: Mapping[str, str]
    hardware: HardwareFacts | None
    channel: Channel
    status: PresenceStatus | None
    last_seen: datetime | None
    desired_generation: int
    delivery_failure: DeliveryFailure | None
    issued_builds: Mapping[str, tuple[str, int]]


class EventSource(str, Enum):
    DEVICE = "device"  # what the device published; the newest `device_events_kept` are kept
    CONTROL_PLANE = "control-plane"  # what the control plane recorded about it (refusals, enrollment); never trimmed


@dataclass(frozen=True)
class DeviceEventRecord:
    device_id: str
    generation: int
    step: str
    model: str | None
    version: int | None
    reason: str | None
    at: datetime
    source: EventSource = EventSource.DEVICE


class ControlPlaneStep(str, Enum):
    """Steps of the events the control plane records about a device (beside the agent's own EventStep)."""

    REPORT_REFUSED = "report_refused"
    CLAIM_IGNORED = "claim_ignored"
    RATE_LIMITED = "rate_limited"
    ENROLLMENT_REQUESTED = "enrollment_requested"
    ENROLLED = "enrolled"
    ENROLLMENT_DENIED = "enrollment_denied"
    KEY_ROTATED = "key_rotated"
    LABELS_SET = "labels_set"


def presence(device: Device | DeviceFacts, now: datetime, offline_after: timedelta) -> Presence:
    """The status topic wins when the device (or its broker last will) ever published one; otherwise a device
    is online while it keeps talking, offline once silent for `offline_after`, unknown if never heard from.
    A device on the Ansible channel is online just after a playbook reached it, unknown otherwise."""
    if device.status is not None:
        return Presence.ONLINE if device.status is PresenceStatus.ONLINE else Presence.OFFLINE
    if device.last_seen is None or (device.channel is Channel.ANSIBLE and now - device.last_seen > offline_after):
        # An Ansible device talks only when a playbook reaches it: silence says nothing about it.
        return Presence.UNKNOWN
    return Presence.ONLINE if now - device.last_seen <= offline_after else Presence.OFFLINE


@dataclass(frozen=True)
class DeviceView:
    """A device with its presence as of the moment it was read."""

    device: Device
    presence: Presence
    telemetry: tuple[ModelWindow, ...] = ()  # per model version, newest first (only when one device is read)
