"""Public schemas of models and their versions (the registry)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from control_plane.api.schemas.base import Out


class ModelOut(Out):
    name: str
    created_at: datetime
    latest_version: int | None
    version_count: int


class TensorOut(Out):
    name: str
    shape: list[int | str]
    dtype: str


class VersionOut(Out):
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


class DeletionOut(Out):
    """What `DELETE /v1/models/{name}[/versions/{version}]` removed (version null: the whole model)."""

    model: str
    version: int | None
    versions: int
    builds: int
    artifacts: int
    finished_rollouts: int
