"""Public schemas of builds: the build request (targets x kinds x precisions, TensorRT options), a build as
shown, what a request skipped, calibration sets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.api.schemas.base import Out, with_fields
from control_plane.domain.bounds import INT32_MAX
from control_plane.domain.builds import BuildView
from control_plane.domain.registry import BuildStatus
from edge_agent.protocol.messages import Name, Sha256

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

    targets: list[Name] = Field(
        default_factory=list, max_length=32, description="GPU classes; empty: the classes of the enrolled devices."
    )
    kinds: list[str] = Field(default_factory=lambda: ["onnx"], min_length=1, max_length=8)
    precisions: list[str] | None = Field(default=None, min_length=1, max_length=3)
    options: BuildOptionsIn | None = None
    calibration: Sha256 | None = Field(default=None, description="sha256 of an uploaded calibration set (.npz).")


# Read from a BuildView: the build's own fields, with the status derived against the builders seen.
class BuildOut(Out):
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

    @model_validator(mode="before")
    @classmethod
    def _of_view(cls, value: Any) -> Any:
        if isinstance(value, BuildView):
            b = value.build
            return with_fields(b, kind=b.artifact_kind, status=value.status, waiting_for=value.waiting_for)
        return value


class SkippedOut(Out):
    target: str
    kind: str
    precision: str
    reason: str


class BuildsCreatedOut(Out):
    builds: list[BuildOut]
    skipped: list[SkippedOut]
    targets: list[str] = Field(default_factory=list, description="The GPU classes built for.")
    targets_from_fleet: bool = Field(
        default=False, description="True when none were asked for: the classes of the enrolled devices."
    )


class CalibrationOut(Out):
    sha256: str
    size: int
    sample_count: int
