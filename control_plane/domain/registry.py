"""Values of the model registry and of builds: models, immutable versions, build records.

Plain frozen values only: no I/O, no clock reads. The decisions about builds (claims, leases, what a build waits
for) live in `control_plane.domain.builds`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from edge_agent.protocol.vocabulary import ArtifactKind, Precision


class LineageSource(str, Enum):
    UPLOAD = "upload"
    TRAINING = "training"


class BuildStatus(str, Enum):
    QUEUED = "queued"
    # Never stored: a queued build is shown so while no builder seen recently can build it.
    WAITING_FOR_BUILDER = "waiting_for_builder"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"  # built, but outside the parity tolerances: never rolled out
    FAILED = "failed"  # could not be built; `error` says why
    CANCELLED = "cancelled"  # an operator cancelled it; never requeued by a restart, only by a new request

    @property
    def finished(self) -> bool:
        return self in (BuildStatus.SUCCEEDED, BuildStatus.REJECTED, BuildStatus.FAILED, BuildStatus.CANCELLED)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class Model:
    name: str
    created_at: datetime
    latest_version: int | None
    version_count: int


@dataclass(frozen=True)
class NewVersion:
    """Everything of a version except the number the registry allocates."""

    model: str
    created_at: datetime
    source_sha256: str
    source_size: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    samples_sha256: str
    sample_count: int
    samples_synthesised: bool
    reference_outputs_computed: bool
    lineage: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    # Per-precision parity tolerance overrides, e.g. {"fp16": {"atol": 0.05}} (docs/builds.md).
    tolerances: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion(NewVersion):
    version: int = 0


@dataclass(frozen=True)
class Build:
    id: str
    model: str
    version: int
    target: str  # a GPU class of the catalog (user-defined: a name, not a fixed word)
    precision: Precision
    artifact_kind: ArtifactKind
    status: BuildStatus
    artifact_sha256: str | None
    artifact_size: int | None
    error: str | None
    created_at: datetime
    manifest: Mapping[str, Any]
    manifest_signature: str | None
    key: str = ""
    compute_capability: str | None = None
    tensorrt_version: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    calibration_sha256: str | None = None
    builder_id: str | None = None  # the builder's own label (display only: it proves nothing)
    # The lease holder: the authenticated identity (`Principal.subject`) that claimed the build. Only it may
    # heartbeat, complete or fail the build.
    builder_subject: str | None = None
    lease_expires_at: datetime | None = None
    progress: float | None = None
    message: str | None = None
    parity: Mapping[str, Any] | None = None  # the figures that decided: the control plane's own where it re-proved
    reported_parity: Mapping[str, Any] | None = None  # what the builder claimed (recorded, never deciding)
    latency: Mapping[str, Any] | None = None
    hardware_key: Mapping[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class BuildLogLine:
    build_id: str
    at: datetime
    message: str


@dataclass(frozen=True)
class BuilderRecord:
    """A builder as last seen: what it said it can build (`BuilderInfo.as_dict()`), and when. `builder_id` is the
    label it gave itself; `subject` the identity it authenticated as (one identity may run several builders)."""

    builder_id: str
    hostname: str
    info: Mapping[str, Any]
    last_seen: datetime
    subject: str | None = None


@dataclass(frozen=True)
class VersionUsage:
    """What still uses a model (or one version): unfinished rollouts that install it, fall back to it or would
    restore it, and devices whose desired or reported state names it."""

    rollouts: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()  # the first few device ids, for the message
    device_count: int = 0
    running_builds: tuple[str, ...] = ()  # a builder holds them under a lease

    @property
    def in_use(self) -> bool:
        return bool(self.rollouts) or self.device_count > 0 or bool(self.running_builds)


@dataclass(frozen=True)
class Deletion:
    """What deleting a model (version None) or one version removed."""

    model: str
    version: int | None
    versions: int
    builds: int
    artifacts: tuple[str, ...]  # the digests no remaining version or build refers to: removed from the store
    finished_rollouts: int


def deletion_refusal(what: str, usage: VersionUsage) -> str | None:
    """Why `what` (e.g. "model m v2") may not be deleted now, naming what holds it and the way forward; None: it
    may."""
    if not usage.in_use:
        return None
    held: list[str] = []
    if usage.rollouts:
        held.append(f"unfinished rollout(s) {', '.join(usage.rollouts)} use it (finish or abort them first)")
    if usage.device_count:
        shown = ", ".join(usage.devices)
        more = f" and {usage.device_count - len(usage.devices)} more" if usage.device_count > len(usage.devices) else ""
        held.append(
            f"{usage.device_count} device(s) run it or are told to ({shown}{more}; roll another version out to them "
            "first)"
        )
    if usage.running_builds:
        held.append(f"build(s) {', '.join(usage.running_builds)} are running (`edgectl builds cancel ID` first)")
    return f"cannot delete {what}: " + "; ".join(held)
