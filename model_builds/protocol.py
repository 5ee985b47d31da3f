"""The builder protocol (docs/builds.md "Builders"): every value a builder and the control plane exchange, once.

A claim (what a builder can build), the task it gets (what to build, from which files, to which tolerances),
its heartbeats and failures, and the report it completes with (parity, latency, toolchain, hardware, options) are
validated against these models on both sides, as the agent's wire contract is (edge_agent/protocol). Values that
are also used inside a side (a build's spec, options, tolerances, parity figures) are pydantic dataclasses: frozen
values that validate on construction and travel inside the messages unchanged. Builders may be hostile: every
field is bounded, and what the control plane reads of a report it never trusts (it re-proves or re-judges it).

It must never import anything but pydantic and the vocabulary (edge_agent/protocol/vocabulary.py): the control
plane, remote builders and agents acting as builders all import it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from pydantic.dataclasses import dataclass

from edge_agent.protocol.vocabulary import ArtifactKind, Precision

__all__ = [
    "BatchLatency",
    "BuildFailure",
    "BuildHeartbeat",
    "BuildOptions",
    "BuildReport",
    "BuildSpec",
    "BuildTask",
    "BuilderClaim",
    "BuilderInfo",
    "LatencyReport",
    "OutputParity",
    "ParityReport",
    "ProfileShape",
    "RemoteFile",
    "Tolerances",
    "default_tolerances",
    "wire",
]

MAX_MESSAGE = 4000  # a heartbeat's progress message
MAX_ERROR = 20000  # a failure's reason
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Label = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")]
ComputeCapability = Annotated[str, Field(pattern=r"^\d+\.\d+$")]
Version = Annotated[str, Field(max_length=32)]
Reason = Annotated[str, Field(max_length=2000)]

# Values the control plane also reads from hostile builders ignore unknown fields (a newer builder may say more),
# as the hand-written readers did; messages the control plane sends forbid nothing it might add either.
_VALUE = ConfigDict(extra="ignore", ser_json_inf_nan="constants")


@dataclass(frozen=True, config=_VALUE)
class BuildSpec:
    """One artifact to build: the key's hardware half (compute capability, TensorRT) is set for plans only."""

    target: str
    kind: ArtifactKind
    precision: Precision
    compute_capability: str | None = None
    tensorrt_version: str | None = None


@dataclass(frozen=True, config=_VALUE)
class ProfileShape:
    """A TensorRT optimisation profile for one input: the smallest, typical and largest shapes it serves."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True, config=_VALUE)
class BuildOptions:
    """Everything besides the source and the spec that decides an artifact's bytes (so it is part of the key)."""

    workspace_mb: int = 1024
    hardware_compatibility_level: str | None = None
    profiles: dict[str, ProfileShape] | None = None
    calibration_sha256: str | None = None

    # No profiles and no workspace mean the defaults (so they key the same build as leaving them out).
    @field_validator("workspace_mb", mode="before")
    @classmethod
    def _default_workspace(cls, value: Any) -> Any:
        return value or 1024

    @field_validator("profiles", mode="before")
    @classmethod
    def _no_profiles(cls, value: Any) -> Any:
        return value or None


@dataclass(frozen=True, config=_VALUE)
class Tolerances:
    """What a candidate must meet against the fp32 source; `top1` None means top-1 agreement is not required."""

    atol: float
    rtol: float
    cosine: float
    top1: float | None = None

    @classmethod
    def from_overrides(cls, precision: Precision, overrides: Any) -> Tolerances:
        """The precision's defaults, with a model's `tolerances: {fp16: {atol: ...}}` applied on top."""
        base = default_tolerances(precision)
        mine = dict((overrides or {}).get(precision.value) or {})
        unknown = sorted(set(mine) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown tolerance(s) {unknown} for {precision.value}; known: atol, rtol, cosine, top1")
        merged: dict[str, Any] = wire(base) | {k: (None if v is None else float(v)) for k, v in mine.items()}
        return cls(**merged)


_DEFAULT_TOLERANCES = {
    Precision.FP32: Tolerances(atol=1e-4, rtol=1e-3, cosine=0.99999),
    Precision.FP16: Tolerances(atol=1e-2, rtol=1e-2, cosine=0.999),
    Precision.INT8: Tolerances(atol=0.25, rtol=0.25, cosine=0.98, top1=0.9),
}


def default_tolerances(precision: Precision) -> Tolerances:
    return _DEFAULT_TOLERANCES[precision]


@dataclass(frozen=True, config=_VALUE)
class OutputParity:
    """Figures for one output. A candidate is within tolerance when max_abs <= atol + rtol * reference_scale."""

    name: str
    max_abs: float
    max_rel: float  # max_abs relative to the reference's largest magnitude
    reference_scale: float
    cosine: float
    top1_agreement: float | None = None  # None when the output has no class axis


@dataclass(frozen=True, config=_VALUE)
class ParityReport:
    outputs: tuple[OutputParity, ...]
    tolerances: Tolerances
    passed: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, config=_VALUE)
class BatchLatency:
    batch: int
    runs: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, config=_VALUE)
class LatencyReport:
    provider: str
    batches: tuple[BatchLatency, ...]


class _HasSpec(Protocol):
    @property
    def kind(self) -> ArtifactKind: ...
    @property
    def compute_capability(self) -> str | None: ...
    @property
    def tensorrt_version(self) -> str | None: ...


@dataclass(frozen=True, config=_VALUE)
class BuilderInfo:
    """What a builder says it can build (its claim), and the reasons for each kind it left out."""

    builder_id: Annotated[str, Field(min_length=1, max_length=128)]  # a label for people; proves nothing
    hostname: Annotated[str, Field(max_length=255)]
    kinds: Annotated[tuple[ArtifactKind, ...], Field(max_length=8)]
    gpu_class: Annotated[str, Field(max_length=128)] | None = None
    compute_capability: ComputeCapability | None = None
    tensorrt_version: Version | None = None
    gpu_name: Annotated[str, Field(max_length=255)] | None = None
    reasons: Annotated[tuple[str, ...], Field(max_length=16)] = ()

    def can_build(self, spec: _HasSpec) -> bool:
        """The kind is one this host builds; a plan also needs this GPU's compute capability and TensorRT."""
        if spec.kind not in self.kinds:
            return False
        if spec.kind is ArtifactKind.TENSORRT_PLAN:
            return spec.compute_capability == self.compute_capability and spec.tensorrt_version == self.tensorrt_version
        return True

    def as_dict(self) -> dict[str, Any]:
        """The claim as JSON-ready data (what a builder record keeps)."""
        return wire(self)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuilderClaim(BaseModel):
    """POST /v1/builders/claim: a BuilderInfo whose `builder_id` label may be left to the token's name."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # newer builders may say more about themselves

    # A label for people (shown in builds and `GET /v1/builders`); the lease belongs to the token's identity.
    builder_id: Label | None = None
    # Read as words by `info` (an unknown kind is refused there, naming it).
    kinds: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=8)
    gpu_class: str | None = Field(default=None, max_length=128)
    compute_capability: ComputeCapability | None = None
    tensorrt_version: Version | None = None
    hostname: str = Field(default="", max_length=255)
    gpu_name: str | None = Field(default=None, max_length=255)
    reasons: list[str] = Field(default_factory=list, max_length=16)

    @classmethod
    def of(cls, info: BuilderInfo) -> BuilderClaim:
        return cls.model_validate(wire(info))

    def info(self, default_label: str) -> BuilderInfo:
        """The builder as the control plane records it (`default_label` when it gave none)."""
        return BuilderInfo(**(self.model_dump() | {"builder_id": self.builder_id or default_label}))


@dataclass(frozen=True, config=_VALUE)
class RemoteFile:
    """Where a builder fetches one input, and how it knows it got the right bytes."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    sha256: Sha256
    size: Annotated[int, Field(ge=0)]


class BuildTask(BaseModel):
    """A claimed build, as the control plane hands it to the builder that holds its lease."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # a newer control plane may send more

    build_id: str = Field(min_length=1, max_length=64)
    key: str = Field(max_length=64)
    model: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1)
    target: str = Field(min_length=1, max_length=128)
    kind: ArtifactKind
    precision: Precision
    compute_capability: ComputeCapability | None = None
    tensorrt_version: Version | None = None
    options: BuildOptions = BuildOptions()
    source: RemoteFile
    samples: RemoteFile
    calibration: RemoteFile | None = None
    tolerances: Tolerances
    lease_s: float = Field(default=60.0, gt=0)

    @property
    def spec(self) -> BuildSpec:
        return BuildSpec(self.target, self.kind, self.precision, self.compute_capability, self.tensorrt_version)


class BuildHeartbeat(_Message):
    """POST /v1/builds/{id}/heartbeat: the lease renewed, with progress."""

    builder_id: str | None = Field(default=None, max_length=128, description="Ignored: the token says who calls.")
    message: str | None = Field(default=None, max_length=MAX_MESSAGE)
    progress: float | None = Field(default=None, ge=0, le=1)


class BuildFailure(_Message):
    """POST /v1/builds/{id}/fail: why the build could not be built."""

    builder_id: str | None = Field(default=None, max_length=128, description="Ignored: the token says who calls.")
    error: str = Field(min_length=1, max_length=MAX_ERROR)


class BuildReport(BaseModel):
    """The `report` of POST /v1/builds/{id}/complete. The control plane records it and reads its figures as claims
    (`control_plane.domain.build_manifest`): each part stays the object the builder sent."""

    model_config = ConfigDict(extra="ignore", frozen=True, ser_json_inf_nan="constants")  # an infinite error stays

    parity: dict[str, Any] = Field(default_factory=dict)
    latency: dict[str, Any] = Field(default_factory=dict)
    toolchain: dict[str, Any] = Field(default_factory=dict)
    hardware: dict[str, Any] = Field(default_factory=dict)
    build_options: dict[str, Any] = Field(default_factory=dict)


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def wire(value: Any) -> dict[str, Any]:
    """A protocol value as JSON-ready data (enums as their spellings, tuples as lists; inf stays a float)."""
    kind = type(value)
    adapter = _ADAPTERS.get(kind) or _ADAPTERS.setdefault(kind, TypeAdapter(kind))
    data: dict[str, Any] = adapter.dump_python(value, mode="json")
    return data
