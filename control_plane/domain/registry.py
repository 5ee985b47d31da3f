"""Values of the model registry and of builds: models, immutable versions, build records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class LineageSource(str, Enum):
    UPLOAD = "upload"
    TRAINING = "training"


class BuildStatus(str, Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


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


@dataclass(frozen=True)
class ModelVersion(NewVersion):
    version: int = 0


@dataclass(frozen=True)
class Build:
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
    manifest: Mapping[str, Any]
    manifest_signature: str | None
