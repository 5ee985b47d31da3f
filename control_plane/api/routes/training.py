"""Training jobs: submit (202, runs in the background), list, show with the log tail."""

from __future__ import annotations

from fastapi import APIRouter

from control_plane.api.deps import TrainingDep
from control_plane.api.schemas import TrainingJobOut
from control_plane.domain.training import TrainingJobSpec

router = APIRouter(prefix="/v1/training/jobs", tags=["training"])


@router.post("", status_code=202)
def submit_job(spec: TrainingJobSpec, training: TrainingDep) -> TrainingJobOut:
    job = training.submit(spec)
    return TrainingJobOut.of(job, training.logs_tail(job))


@router.get("")
def list_jobs(training: TrainingDep) -> list[TrainingJobOut]:
    return [TrainingJobOut.of(j, training.logs_tail(j)) for j in training.list_jobs()]


@router.get("/{job_id}")
def get_job(job_id: str, training: TrainingDep) -> TrainingJobOut:
    job = training.get_job(job_id)
    return TrainingJobOut.of(job, training.logs_tail(job))
