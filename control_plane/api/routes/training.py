"""Training jobs: submit (202, runs in the background), list, show with the log tail."""

from __future__ import annotations

from fastapi import APIRouter

from control_plane.api.deps import TrainingDep
from control_plane.api.schemas.base import with_fields
from control_plane.api.schemas.training import TrainingJobOut
from control_plane.domain.training import TrainingJob, TrainingJobSpec
from control_plane.services.training import TrainingService

router = APIRouter(prefix="/v1/training/jobs", tags=["training"])


@router.post("", status_code=202)
def submit_job(spec: TrainingJobSpec, training: TrainingDep) -> TrainingJobOut:
    return _job_out(training.submit(spec), training)


@router.get("")
def list_jobs(training: TrainingDep) -> list[TrainingJobOut]:
    return [_job_out(j, training) for j in training.list_jobs()]


@router.get("/{job_id}")
def get_job(job_id: str, training: TrainingDep) -> TrainingJobOut:
    return _job_out(training.get_job(job_id), training)


def _job_out(job: TrainingJob, training: TrainingService) -> TrainingJobOut:
    return TrainingJobOut.model_validate(with_fields(job, logs_tail=training.logs_tail(job)))
