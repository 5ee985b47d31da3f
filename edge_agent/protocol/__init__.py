"""The wire contract between the control plane and edge agents.

Everything that crosses MQTT (or is copied to a device by Ansible) is defined here and nowhere else.
This package must never import anything else of the project: both sides depend on it, it depends on no one.
"""

from edge_agent.protocol.envelope import (
    PROTOCOL_VERSION,
    Envelope,
    MessageKind,
    ProtocolError,
    open_envelope,
    open_events,
    seal,
)
from edge_agent.protocol.messages import (
    ApplyOutcome,
    ApplyPhase,
    ArtifactChoice,
    ArtifactRef,
    DesiredState,
    DeviceEvent,
    DeviceTelemetry,
    EventBatch,
    EventStep,
    HardwareFacts,
    HardwareKey,
    ModelAssignment,
    ModelHealth,
    ModelStatus,
    ModelTelemetry,
    Presence,
    PresenceStatus,
    ReportedState,
    RuntimeOptions,
    SelfTestSpec,
    SignedDesiredState,
    Telemetry,
)
from edge_agent.protocol.signing import SignatureError, Signer, Verifier, canonical_json
from edge_agent.protocol.topics import Topics

__all__ = [
    "PROTOCOL_VERSION",
    "ApplyOutcome",
    "ApplyPhase",
    "ArtifactChoice",
    "ArtifactRef",
    "DesiredState",
    "DeviceEvent",
    "DeviceTelemetry",
    "Envelope",
    "EventBatch",
    "EventStep",
    "HardwareFacts",
    "HardwareKey",
    "MessageKind",
    "ModelAssignment",
    "ModelHealth",
    "ModelStatus",
    "ModelTelemetry",
    "Presence",
    "PresenceStatus",
    "ProtocolError",
    "ReportedState",
    "RuntimeOptions",
    "SelfTestSpec",
    "SignatureError",
    "SignedDesiredState",
    "Signer",
    "Telemetry",
    "Topics",
    "Verifier",
    "canonical_json",
    "open_envelope",
    "open_events",
    "seal",
]
