"""Public JSON schemas of the REST API (docs/api.md) and their construction from domain values."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from control_plane.domain.fleet import DeviceEventRecord, DeviceView, Presence
from control_plane.domain.registry import Build, BuildStatus, Model, ModelVersion, TensorInfo
from control_plane.domain.rollouts import DeviceRolloutStatus, Rollout, RolloutPhase, RolloutStrategy, status_counts
from control_plane.domain.training import TrainingJob, TrainingJobSpec, TrainingStatus
from edge_agent.protocol import HardwareFacts, ReportedState
from edge_agent.protocol.messages import LabelKey, LabelValue, Name
from model_builds.catalog import TargetSpec


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
        )


class BuildRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[Name] = Field(min_length=1, max_length=32)
    precision: str = Field(default="fp32", pattern=r"^(fp32|fp16|int8)$")


class BuildOut(_Out):
    id: str
    model: str
    version: int
    target: str
    precision: str
    artifact_kind: str
    status: BuildStatus
    artifact_sha256: str | None
    artifact_size: int | None
    error: str | None
    created_at: datetime
    manifest: dict[str, Any]
    manifest_signature: str | None

    @classmethod
    def of(cls, b: Build) -> BuildOut:
        return cls(
            id=b.id,
            model=b.model,
            version=b.version,
            target=b.target,
            precision=b.precision,
            artifact_kind=b.artifact_kind,
            status=b.status,
            artifact_sha256=b.artifact_sha256,
            artifact_size=b.artifact_size,
            error=b.error,
            created_at=b.created_at,
            manifest=dict(b.manifest),
            manifest_signature=b.manifest_signature,
        )


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
        )


class DeviceEventOut(_Out):
    device_id: str
    generation: int
    step: str
    model: str | None
    version: int | None
    reason: str | None
    at: datetime

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
        )


class SelectorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    gpu_class: Name | None = None


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Name
    version: int = Field(ge=1)
    selector: SelectorIn = Field(default_factory=SelectorIn)
    strategy: RolloutStrategy = RolloutStrategy.ALL_AT_ONCE


class RolloutDeviceOut(_Out):
    device_id: str
    target: str
    build_id: str
    generation: int
    status: DeviceRolloutStatus
    reason: str | None
    updated_at: datetime


class RolloutOut(_Out):
    id: str
    model: str
    version: int
    selector: SelectorIn
    strategy: RolloutStrategy
    phase: RolloutPhase
    created_at: datetime
    updated_at: datetime
    devices: list[RolloutDeviceOut]
    counts: dict[str, int]

    @classmethod
    def of(cls, r: Rollout) -> RolloutOut:
        return cls(
            id=r.id,
            model=r.model,
            version=r.version,
            selector=SelectorIn(labels=dict(r.selector.labels), gpu_class=r.selector.gpu_class),
            strategy=r.strategy,
            phase=r.phase,
            created_at=r.created_at,
            updated_at=r.updated_at,
            devices=[
                RolloutDeviceOut(
                    device_id=d.device_id,
                    target=d.target,
                    build_id=d.build_id,
                    generation=d.generation,
                    status=d.status,
                    reason=d.reason,
                    updated_at=d.updated_at,
                )
                for d in r.devices
            ],
            counts=dict(status_counts(d.status for d in r.devices)),
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
