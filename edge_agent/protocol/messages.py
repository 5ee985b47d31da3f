"""Message bodies of the wire contract (see DESIGN.md, "Wire contract").

Every model forbids unknown fields, bounds its strings and numbers, and is what both sides validate against.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.protocol.tunnel import TunnelHealth
from edge_agent.protocol.vocabulary import ArtifactKind, Channel, ExecutionProvider, Precision

SHA256_PATTERN = r"^[0-9a-f]{64}$"
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
LabelKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")]
LabelValue = Annotated[str, Field(max_length=128)]
Short = Annotated[str, Field(max_length=64)]
Counter = Annotated[int, Field(ge=0, le=2**53)]  # JSON-safe, and far from the database's 64-bit limit
MAX_MODELS = 32  # models one device serves, reports and sends telemetry for


def is_sha256(text: str) -> bool:
    """A lowercase hex sha256 digest (what artifacts are named by: nothing else may reach a file path)."""
    return bool(re.fullmatch(SHA256_PATTERN, text))


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArtifactRef(_Wire):
    """Where to fetch a file and how to know it is the right one."""

    url: str = Field(min_length=1, max_length=2048)
    sha256: Sha256
    size: int = Field(gt=0)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not re.match(r"^(https?|file)://", url):
            raise ValueError("artifact url must be http://, https:// or file://")
        return url


class SelfTestSpec(_Wire):
    """Sample inputs and reference outputs (one .npz: `input:NAME` and `output:NAME` arrays) and tolerances."""

    artifact: ArtifactRef
    atol: float = Field(ge=0, default=1e-4)
    rtol: float = Field(ge=0, default=1e-3)


class RuntimeOptions(_Wire):
    precision: Precision = Precision.FP32
    # Preferred execution providers, best first; empty means "choose from detected hardware".
    providers: list[ExecutionProvider] = Field(default_factory=list, max_length=8)
    provider_options: dict[ExecutionProvider, dict[str, str]] = Field(default_factory=dict)


class HardwareKey(_Wire):
    """The hardware a hardware-specific artifact (a TensorRT plan) was built for.

    A plan runs only on the compute capability and TensorRT version it was built with (unless it was built
    hardware-compatible, e.g. `ampere+`); an agent refuses a plan whose key does not accept its hardware.
    """

    gpu_class: Name
    compute_capability: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    tensorrt_version: str | None = Field(default=None, max_length=32)
    jetpack_version: str | None = Field(default=None, max_length=32)
    hardware_compatibility_level: str | None = Field(default=None, pattern=r"^(none|ampere\+|same_compute_capability)$")

    def refusal(self, facts: HardwareFacts) -> str | None:
        """Why this key does not accept `facts`, or None when it does. Pure; shared by both sides."""
        if facts.gpu_class != self.gpu_class:
            return f"built for GPU class {self.gpu_class}, this device is {facts.gpu_class}"
        if self.compute_capability is not None:
            if facts.compute_capability is None:
                return f"built for compute capability {self.compute_capability}, no GPU detected"
            if not _capability_accepted(
                self.compute_capability, facts.compute_capability, self.hardware_compatibility_level
            ):
                return f"built for compute capability {self.compute_capability}, this GPU is {facts.compute_capability}"
        if self.tensorrt_version is not None and facts.tensorrt_version != self.tensorrt_version:
            found = facts.tensorrt_version or "no TensorRT"
            return f"built with TensorRT {self.tensorrt_version}, this device has {found}"
        return None


def _capability_accepted(built: str, found: str, level: str | None) -> bool:
    if level == "ampere+":
        return tuple(int(p) for p in found.split(".")) >= (8, 0)
    return built == found


class ArtifactChoice(_Wire):
    """An alternative artifact for the same model version, e.g. the class's portable ONNX behind a plan."""

    build_id: str = Field(min_length=1, max_length=64)
    artifact_kind: ArtifactKind
    artifact: ArtifactRef
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions)
    hardware_key: HardwareKey | None = None
    # Self-test tolerances for this artifact (its precision may differ from the primary's).
    atol: float = Field(ge=0, default=1e-4)
    rtol: float = Field(ge=0, default=1e-3)


class ModelAssignment(_Wire):
    """One model a device must serve: the preferred artifact, and what to fall back to if it does not fit."""

    name: Name
    version: int = Field(ge=1)
    build_id: str = Field(min_length=1, max_length=64)
    target: Name
    artifact_kind: ArtifactKind = ArtifactKind.ONNX
    artifact: ArtifactRef
    selftest: SelfTestSpec
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions)
    # Set for hardware-specific artifacts: the agent refuses the primary artifact when it does not match.
    hardware_key: HardwareKey | None = None
    # Used, with an `artifact_fallback` event saying why, when the primary artifact does not fit this device.
    fallback: ArtifactChoice | None = None

    def artifact_refs(self) -> list[ArtifactRef]:
        """Every artifact the assignment names: the primary, the self-test samples, the fallback if any."""
        refs = [self.artifact, self.selftest.artifact]
        return refs if self.fallback is None else [*refs, self.fallback.artifact]


class DesiredState(_Wire):
    """What one device must run. Generations are monotonic per device; a replayed or older one is ignored."""

    device_id: Name
    generation: int = Field(ge=1)
    issued_at: datetime
    rollout_id: str | None = Field(default=None, max_length=64)
    models: list[ModelAssignment] = Field(default_factory=list, max_length=32)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelAssignment]) -> list[ModelAssignment]:
        names = [m.name for m in models]
        if len(names) != len(set(names)):
            raise ValueError("each model name may appear once")
        return models

    def artifact_refs(self) -> list[ArtifactRef]:
        """Every artifact the document names, model by model (what a push must carry to the device)."""
        return [ref for model in self.models for ref in model.artifact_refs()]


class SignedDesiredState(_Wire):
    """A DesiredState as the exact JSON text that was signed, with its ed25519 signature.

    The document is carried as text so the verifier checks the very bytes that were signed, never a
    re-serialisation of them.
    """

    document: str = Field(min_length=2, max_length=1_000_000)
    signature: str = Field(min_length=1, max_length=200)
    key_id: str = Field(min_length=1, max_length=64)


class HardwareFacts(_Wire):
    """What the agent detected about its host; the control plane groups and targets devices by it."""

    gpu_class: Name
    arch: str = Field(max_length=32)
    gpu_name: str | None = Field(default=None, max_length=128)
    compute_capability: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    driver_version: Short | None = None
    cuda_version: Short | None = None
    tensorrt_version: Short | None = None
    jetpack_version: Short | None = None
    l4t_version: Short | None = None
    onnxruntime_version: Short | None = None
    available_providers: list[Short] = Field(default_factory=list, max_length=16)
    cpu_count: int = Field(ge=1, le=1_000_000, default=1)
    memory_mb: int = Field(ge=0, le=2**40, default=0)


class ModelHealth(str, Enum):
    SERVING = "serving"
    FAILED = "failed"


class ModelStatus(_Wire):
    name: Name
    version: int = Field(ge=1, le=2**31)
    build_id: str = Field(min_length=1, max_length=64)
    active_slot: str = Field(max_length=256)
    provider: Short
    health: ModelHealth
    previous_version: int | None = Field(default=None, ge=1, le=2**31)
    # The kind of the artifact installed (e.g. `onnx` when a `tensorrt-plan` did not fit), and why it fell back.
    artifact_kind: ArtifactKind | None = None
    fallback_reason: str | None = Field(default=None, max_length=2000)


class ApplyPhase(str, Enum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class EventStep(str, Enum):
    RECEIVED = "received"
    REJECTED = "rejected"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    VERIFIED = "verified"
    LOADED = "loaded"
    SELF_TEST_PASSED = "self_test_passed"
    SELF_TEST_FAILED = "self_test_failed"
    ACTIVATED = "activated"
    ROLLED_BACK = "rolled_back"
    ARTIFACT_FALLBACK = "artifact_fallback"
    ERROR = "error"


class ApplyOutcome(_Wire):
    generation: int = Field(ge=0)
    phase: ApplyPhase
    step: EventStep | None = None
    reason: str | None = Field(default=None, max_length=2000)
    at: datetime


class ReportedState(_Wire):
    """What a device says about itself. The control plane checks it against what it issued (generations, builds)
    and never takes labels, channel, GPU class or hardware from it: those are claims (docs/security.md)."""

    device_id: Name
    agent_version: Short
    applied_generation: int = Field(ge=0, le=2**53)
    last_apply: ApplyOutcome | None = None
    models: list[ModelStatus] = Field(default_factory=list, max_length=MAX_MODELS)
    hardware: HardwareFacts
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)
    channel: Channel = Channel.MQTT
    serving_url: str | None = Field(default=None, max_length=512)
    # Only while the agent keeps a tunnel, and left out of the message when None: a control plane older than the
    # field refuses unknown fields, so an agent without a tunnel sends what it always sent (docs/tunnels.md).
    tunnel: TunnelHealth | None = Field(default=None, exclude_if=lambda value: value is None)

    @field_validator("serving_url")
    @classmethod
    def _serving_url(cls, url: str | None) -> str | None:
        return None if url is None else check_serving_url(url)


def check_serving_url(url: str) -> str:
    """An inference URL is http(s)://host[:port][/path], without credentials, query or fragment."""
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or 1 <= parts.port <= 65535
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError("serving_url must be http:// or https:// with a host and a valid port")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError("serving_url must not carry credentials, a query or a fragment")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError("serving_url must not contain spaces or control characters")
    return url


class DeviceEvent(_Wire):
    generation: int = Field(ge=0, le=2**53)
    step: EventStep
    model: str | None = Field(default=None, max_length=128)
    version: int | None = Field(default=None, ge=0, le=2**31)
    reason: str | None = Field(default=None, max_length=2000)
    at: datetime


MAX_EVENTS_PER_MESSAGE = 16  # step events one message carries at most (an install emits 7)


class EventBatch(_Wire):
    """Step events in the order they happened, as one message: an agent sends what it emitted within a fraction
    of a second together (docs/decisions/0016), so an install costs the broker and the control plane one or two
    event messages instead of seven."""

    events: list[DeviceEvent] = Field(min_length=1, max_length=MAX_EVENTS_PER_MESSAGE)


class ModelTelemetry(_Wire):
    name: Name
    version: int = Field(ge=1, le=2**31)
    requests: Counter
    errors: Counter
    p50_ms: float | None = Field(default=None, ge=0, le=1e9)
    p99_ms: float | None = Field(default=None, ge=0, le=1e9)


class DeviceTelemetry(_Wire):
    cpu_percent: float | None = None
    memory_percent: float | None = None
    gpu_percent: float | None = None
    temperature_c: float | None = None


class Telemetry(_Wire):
    window_s: float = Field(gt=0, le=86_400)
    models: list[ModelTelemetry] = Field(default_factory=list, max_length=MAX_MODELS)
    device: DeviceTelemetry = Field(default_factory=DeviceTelemetry)


class PresenceStatus(str, Enum):
    ONLINE = "online"
    OFFLINE = "offline"


class Presence(_Wire):
    state: PresenceStatus
