"""Training jobs: the spec an operator submits (a pydantic model: it is parsed from outside) and job values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.protocol.messages import Name

Scalar = str | int | float | bool | None


class TrainingStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (TrainingStatus.SUCCEEDED, TrainingStatus.FAILED)


class TrainingBackend(str, Enum):
    LOCAL = "local"


class TrainingData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(default=None, max_length=4096, description="File or folder the job trains on.")


class TrainingResources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: float | None = Field(default=None, gt=0)
    memory: str | None = Field(default=None, max_length=32)
    gpu: int | None = Field(default=None, ge=0)


class TrainingJobSpec(BaseModel):
    """What to train and where its output goes (docs/api.md, "Training entrypoint contract")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    model_name: Name
    entrypoint: str = Field(min_length=1, max_length=4096, description="Path to a Python file.")
    parameters: dict[str, Scalar] = Field(default_factory=dict)
    data: TrainingData = Field(default_factory=TrainingData)
    resources: TrainingResources = Field(default_factory=TrainingResources)
    backend: TrainingBackend = TrainingBackend.LOCAL


@dataclass(frozen=True)
class TrainingJob:
    id: str
    spec: TrainingJobSpec
    status: TrainingStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    log_path: str
    model: str | None
    version: int | None
