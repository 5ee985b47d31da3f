"""Public JSON schemas of the REST API (docs/api.md) and their construction from domain values."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from control_plane.domain.bounds import INT32_MAX
from control_plane.domain.builds import BuildView
from control_plane.domain.fleet import DeliveryFailure, DeviceEventRecord, DeviceView, EventSource, Presence
from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.registry import BuilderRecord, BuildStatus, Model, ModelVersion, TensorInfo
from control_plane.domain.rollout_plan import (
    DeviceStatus,
    DeviceTrack,
    Operator,
    RolloutPhase,
    RolloutState,
    Verdict,
    allowed_commands,
)
from control_plane.domain.rollout_spec import RolloutRequest, SelectorIn, StrategyType
from control_plane.domain.telemetry import ModelWindow
from control_plane.domain.training import TrainingJob, TrainingJobSpec, TrainingStatus
from edge_agent.protocol import HardwareFacts, ReportedState
from edge_agent.protocol.messages import LabelKey, LabelValue, Name, Sha256
from model_builds.catalog import TargetSpec
from model_builds.planner import Skipped


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class HealthOut(_Out):
    status: str
    mqtt_connected: bool


class SigningKeyOut(_Out):
    algorithm: str
    key_id: str
    public_key: str


class ModelOut(_Out):
    name: str
    created_at: datetime
    latest_version: int | None
    version_count: int

    @classmethod
    def of(cls, m: Model) -> ModelOut:
        return cls(name=m.name, created_at=m.created_at, latest_version=m.latest_version, version_count=m.version_count)


class TensorOut(_Out):
    name: str
    shape: list[int | str]
    dtype: str

    @classmethod
    def of(cls, t: TensorInfo) -> TensorOut:
        return cls(name=t.name, shape=list(t.shape), dtype=t.dtype)


class VersionOut(_Out):
    model: str
    version: int
    created_at: datetime
    source_sha256: str
    source_size: int
    inputs: list[TensorOut]
    outputs: list[TensorOut]
    samples_sha256: str
    sample_count: int
    samples_synthesised: bool = Field(description="True when no samples were uploaded and random inputs were made.")
    reference_outputs_computed: bool
    lineage: dict[str, Any]
    metrics: dict[str, Any]
    tolerances: dict[str, dict[str, float]] = Field(description="Per-precision parity tolerance overrides.")

    @classmethod
    def of(cls, v: ModelVersion) -> VersionOut:
        return cls(
            model=v.model,
            version=v.version,
            created_at=v.created_at,
            source_sha256=v.source_sha256,
            source_size=v.source_size,
            inputs=[TensorOut.of(t) for t in v.inputs],
            outputs=[TensorOut.of(t) for t in v.outputs],
            samples_sha256=v.samples_sha256,
            sample_count=v.sample_count,
            samples_synthesised=v.samples_synthesised,
            reference_outputs_computed=v.reference_outputs_computed,
            lineage=dict(v.lineage),
            metrics=dict(v.metrics),
            tolerances={k: dict(t) for k, t in v.tolerances.items()},
        )


Dim = Annotated[int, Field(ge=1, le=INT32_MAX)]  # a tensor dimension of a TensorRT profile


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: list[Dim] = Field(min_length=1, max_length=8)
    opt: list[Dim] = Field(min_length=1, max_length=8)
    max: list[Dim] = Field(min_length=1, max_length=8)


class BuildOptionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workspace_mb: int = Field(default=1024, ge=16, le=1024 * 1024)
    hardware_compatibility_level: str | None = Field(default=None, pattern=r"^(none|ampere\+|same_compute_capability)$")
    profiles: dict[str, ProfileIn] | None = Field(default=None, max_length=32)


class BuildRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[Name] = Field(min_length=1, max_length=32)
    kinds: list[str] = Field(default_factory=lambda: ["onnx"], min_length=1, max_length=8)
    precisions: list[str] | None = Field(default=None, min_length=1, max_length=3)
    options: BuildOptionsIn | None = None
    calibration: Sha256 | None = Field(default=None, description="sha256 of an uploaded calibration set (.npz).")


class BuildOut(_Out):
    id: str
    model: str
    version: int
    target: str
    kind: str
    precision: str
    artifact_kind: str = Field(description="Same as `kind` (kept for older clients).")
    key: str
    status: BuildStatus
    waiting_for: str | None = Field(description="While waiting_for_builder: the builder the build needs.")
    compute_capability: str | None
    tensorrt_version: str | None
    options: dict[str, Any]
    builder_id: str | None = Field(description="The builder's own label (display only).")
    builder_subject: str | None = Field(description="The identity that holds (or held) the build's lease.")
    progress: float | None
    message: str | None
    artifact_sha256: str | None
    artifact_size: int | None
    error: str | None
    parity: dict[str, Any] | None = Field(
        description="The figures that decided: the control plane's own measurement for the ONNX kinds "
        "(`measured_by: control-plane`), a registered builder's for a TensorRT plan (`measured_by: builder`)."
    )
    reported_parity: dict[str, Any] | None = Field(description="What the builder reported (recorded, never deciding).")
    latency: dict[str, Any] | None
    hardware_key: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    manifest: dict[str, Any]
    manifest_signature: str | None

    @classmethod
    def of(cls, v: BuildView) -> BuildOut:
        b = v.build
        return cls(
            id=b.id,
            model=b.model,
            version=b.version,
            target=b.target,
            kind=b.artifact_kind,
            precision=b.precision,
            artifact_kind=b.artifact_kind,
            key=b.key,
            status=v.status,
            waiting_for=v.waiting_for,
            compute_capability=b.compute_capability,
            tensorrt_version=b.tensorrt_version,
            options=dict(b.options),
            builder_id=b.builder_id,
            builder_subject=b.builder_subject,
            progress=b.progress,
            message=b.message,
            artifact_sha256=b.artifact_sha256,
            artifact_size=b.artifact_size,
            error=b.error,
            parity=None if b.parity is None else dict(b.parity),
            reported_parity=None if b.reported_parity is None else dict(b.reported_parity),
            latency=None if b.latency is None else dict(b.latency),
            hardware_key=None if b.hardware_key is None else dict(b.hardware_key),
            created_at=b.created_at,
            started_at=b.started_at,
            finished_at=b.finished_at,
            manifest=dict(b.manifest),
            manifest_signature=b.manifest_signature,
        )


class SkippedOut(_Out):
    target: str
    kind: str
    precision: str
    reason: str

    @classmethod
    def of(cls, s: Skipped) -> SkippedOut:
        return cls(target=s.target, kind=s.kind.value, precision=s.precision.value, reason=s.reason)


class BuildsCreatedOut(_Out):
    builds: list[BuildOut]
    skipped: list[SkippedOut]


class CalibrationOut(_Out):
    sha256: str
    size: int
    sample_count: int


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="ignore")  # newer builders may say more about themselves

    # A label for people (shown in builds and `GET /v1/builders`); the lease belongs to the token's identity.
    builder_id: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"
    )
    kinds: list[str] = Field(default_factory=list, max_length=8)
    gpu_class: str | None = Field(default=None, max_length=128)
    compute_capability: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    tensorrt_version: str | None = Field(default=None, max_length=32)
    hostname: str = Field(default="", max_length=255)
    gpu_name: str | None = Field(default=None, max_length=255)
    reasons: list[str] = Field(default_factory=list, max_length=16)


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    builder_id: str | None = Field(default=None, max_length=128, description="Ignored: the token says who calls.")
    message: str | None = Field(default=None, max_length=4000)
    progress: float | None = Field(default=None, ge=0, le=1)


class FailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    builder_id: str | None = Field(default=None, max_length=128, description="Ignored: the token says who calls.")
    error: str = Field(min_length=1, max_length=20000)


class BuilderOut(_Out):
    builder_id: str
    subject: str | None = Field(description="The identity the builder authenticated as.")
    hostname: str
    last_seen: datetime
    kinds: list[str]
    gpu_class: str | None
    compute_capability: str | None
    tensorrt_version: str | None
    gpu_name: str | None
    reasons: list[str]

    @classmethod
    def of(cls, r: BuilderRecord) -> BuilderOut:
        info = r.info
        return cls(
            builder_id=r.builder_id,
            subject=r.subject,
            hostname=r.hostname,
            last_seen=r.last_seen,
            kinds=[str(k) for k in info.get("kinds") or []],
            gpu_class=info.get("gpu_class"),
            compute_capability=info.get("compute_capability"),
            tensorrt_version=info.get("tensorrt_version"),
            gpu_name=info.get("gpu_name"),
            reasons=[str(x) for x in info.get("reasons") or []],
        )


class AnsibleConnectionIO(BaseModel):
    """How Ansible reaches the device: its inventory variables (ansible_host, _port, _user, _connection,
    ansible_python_interpreter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Each value becomes an inventory variable: none may start like an ssh option ("-oProxyCommand=...") or hold a
    # template; there is no field for ssh arguments at all (those are the operator's `ansible.ssh_args`).
    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]*$",
        description="Default: the id.",
    )
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
    connection: Literal["ssh", "local"] = "ssh"
    python: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z0-9_./+~][A-Za-z0-9_./+~-]*$",
        description="ansible_python_interpreter: a path (or auto, auto_silent).",
    )

    def to_domain(self) -> AnsibleConnection:
        return AnsibleConnection(self.host, self.port, self.user, self.connection, self.python)

    @classmethod
    def of(cls, c: AnsibleConnection) -> AnsibleConnectionIO:
        connection: Literal["ssh", "local"] = "local" if c.connection == "local" else "ssh"
        # Not validated again: a connection stored under an older, looser pattern is still shown.
        return cls.model_construct(host=c.host, port=c.port, user=c.user, connection=connection, python=c.python)


class EnrollmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["mqtt", "ansible"] = "ansible"
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)
    gpu_class: Name | None = Field(default=None, description="Default: the class of `hardware`, when given.")
    hardware: HardwareFacts | None = None
    ansible: AnsibleConnectionIO | None = Field(default=None, description="Default on the Ansible channel: ssh to ID.")


class DeliveryFailureOut(_Out):
    generation: int
    reason: str
    at: datetime

    @classmethod
    def of(cls, f: DeliveryFailure) -> DeliveryFailureOut:
        return cls(generation=f.generation, reason=f.reason, at=f.at)


class DeviceOut(_Out):
    id: str
    presence: Presence
    last_seen: datetime | None
    channel: str
    gpu_class: str | None
    labels: dict[str, str]
    hardware: HardwareFacts | None
    reported: ReportedState | None
    desired_generation: int
    telemetry: list[TelemetryWindowOut] = Field(
        default_factory=list, description="Recent telemetry windows per model version, newest first."
    )
    ansible: AnsibleConnectionIO | None = None
    delivery_failure: DeliveryFailureOut | None = None

    @classmethod
    def of(cls, view: DeviceView) -> DeviceOut:
        d = view.device
        return cls(
            id=d.id,
            presence=view.presence,
            last_seen=d.last_seen,
            channel=d.channel,
            gpu_class=d.gpu_class,
            labels=dict(d.labels),
            hardware=d.hardware,
            reported=d.reported,
            desired_generation=d.desired_generation,
            telemetry=[TelemetryWindowOut.of(w) for w in view.telemetry],
            ansible=AnsibleConnectionIO.of(d.ansible) if d.ansible is not None else None,
            delivery_failure=DeliveryFailureOut.of(d.delivery_failure) if d.delivery_failure is not None else None,
        )


class DeviceEventOut(_Out):
    device_id: str
    generation: int
    step: str
    model: str | None
    version: int | None
    reason: str | None
    at: datetime
    source: EventSource = Field(description="device: what the device sent; control-plane: what was recorded about it.")

    @classmethod
    def of(cls, e: DeviceEventRecord) -> DeviceEventOut:
        return cls(
            device_id=e.device_id,
            generation=e.generation,
            step=e.step,
            model=e.model,
            version=e.version,
            reason=e.reason,
            at=e.at,
            source=e.source,
        )


class TelemetryWindowOut(_Out):
    model: str
    version: int
    at: datetime
    window_s: float
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None

    @classmethod
    def of(cls, w: ModelWindow) -> TelemetryWindowOut:
        return cls(
            model=w.model,
            version=w.version,
            at=w.at,
            window_s=w.window_s,
            requests=w.requests,
            errors=w.errors,
            p50_ms=w.p50_ms,
            p99_ms=w.p99_ms,
        )


class RolloutDeviceOut(_Out):
    device_id: str
    step: str
    target: str
    build_id: str
    generation: int | None
    status: DeviceStatus
    reason: str | None
    published_at: datetime | None
    previous_version: int | None
    previous_build_id: str | None
    updated_at: datetime | None

    @classmethod
    def of(cls, t: DeviceTrack) -> RolloutDeviceOut:
        return cls(
            device_id=t.device_id,
            step=t.step,
            target=t.target,
            build_id=t.build_id,
            generation=t.generation,
            status=t.status,
            reason=t.reason,
            published_at=t.published_at,
            previous_version=t.previous.version if t.previous else None,
            previous_build_id=t.previous.build_id if t.previous else None,
            updated_at=t.updated_at,
        )


class StepOut(_Out):
    name: str
    state: str = Field(description="waiting | running | baking | done")
    devices: int
    counts: dict[str, int]
    verdict: Verdict | None
    verdict_reason: str | None


class RolloutOut(_Out):
    id: str
    model: str
    version: int
    selector: SelectorIn
    strategy: StrategyType
    spec: RolloutRequest
    phase: RolloutPhase
    reason: str | None
    current_step: str | None
    step_started_at: datetime | None
    baked_since: datetime | None
    steps: list[StepOut]
    allowed_commands: list[Operator]
    created_at: datetime
    updated_at: datetime
    devices: list[RolloutDeviceOut]
    counts: dict[str, int]

    @classmethod
    def of(cls, r: RolloutState) -> RolloutOut:
        return cls(
            id=r.id,
            model=r.model,
            version=r.version,
            selector=r.spec.selector,
            strategy=r.spec.strategy.type,
            spec=r.spec,
            phase=r.phase,
            reason=r.reason,
            current_step=r.current_step,
            step_started_at=r.step_started_at,
            baked_since=r.baked_since,
            steps=[_step_out(r, i, name) for i, name in enumerate(r.steps)],
            allowed_commands=sorted(allowed_commands(r.phase), key=lambda c: c.value),
            created_at=r.created_at,
            updated_at=r.updated_at,
            devices=[RolloutDeviceOut.of(t) for t in r.devices],
            counts=_counts(t.status for t in r.devices),
        )


def _counts(statuses: Iterable[DeviceStatus]) -> dict[str, int]:
    counts = {s.value: 0 for s in DeviceStatus}
    for status in statuses:
        counts[status.value] += 1
    return counts


def _step_out(r: RolloutState, index: int, name: str) -> StepOut:
    tracks = [t for t in r.devices if t.step == name]
    verdicts = [v for v in r.verdicts if v.step == name]
    last = verdicts[-1] if verdicts else None
    if index < r.step_index:
        state = "done"
    elif index > r.step_index or r.step_started_at is None or r.phase.final:
        state = "done" if r.phase.final and last is not None else "waiting"
    else:
        state = "baking" if r.baked_since is not None else "running"
    return StepOut(
        name=name,
        state=state,
        devices=len(tracks),
        counts=_counts(t.status for t in tracks),
        verdict=last.verdict if last else None,
        verdict_reason=last.reason if last else None,
    )


class TrainingJobOut(_Out):
    id: str
    spec: TrainingJobSpec
    status: TrainingStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    logs_tail: str
    model: str | None
    version: int | None

    @classmethod
    def of(cls, job: TrainingJob, logs_tail: str) -> TrainingJobOut:
        return cls(
            id=job.id,
            spec=job.spec,
            status=job.status,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
            logs_tail=logs_tail,
            model=job.model,
            version=job.version,
        )


def target_out(spec: TargetSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")
