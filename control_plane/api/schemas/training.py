"""Public schema of a training job: its spec, status and the tail of its log."""

from __future__ import annotations

from datetime import datetime

from control_plane.api.schemas.base import Out
from control_plane.domain.training import TrainingJobSpec, TrainingStatus


# Read from a TrainingJob `with_fields(job, logs_tail=...)`: the log is not part of the job.
class TrainingJobOut(Out):
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
