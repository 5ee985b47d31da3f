"""Persistence of models, versions and training jobs. Returns domain values only (builds: build_repository)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from control_plane.adapters.db.convert import (
    job_from_row,
    tensors_to_json,
    to_row,
    utc,
    version_from_row,
)
from control_plane.adapters.db.registry_deletion import delete_unused
from control_plane.adapters.db.tables import ModelRow, TrainingJobRow, VersionRow
from control_plane.domain.errors import Conflict
from control_plane.domain.registry import Deletion, Model, ModelVersion, NewVersion, VersionUsage
from control_plane.domain.training import TrainingJob, TrainingStatus


class RegistryRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # -- models and versions ---------------------------------------------------------------------------------
    def add_version(self, new: NewVersion) -> ModelVersion:
        """Allocate the next version number of the model (creating the model) and store the version."""
        for _attempt in range(3):
            try:
                with self._sessions.begin() as session:
                    return self._insert_version(session, new)
            except IntegrityError:
                continue  # a concurrent upload took the number; try the next one
        raise Conflict(f"could not allocate a version number for model {new.model!r}; retry")

    def _insert_version(self, session: Session, new: NewVersion) -> ModelVersion:
        if session.get(ModelRow, new.model) is None:
            session.add(ModelRow(name=new.model, created_at=new.created_at))
            session.flush()
        latest = session.scalar(select(func.max(VersionRow.version)).where(VersionRow.model_name == new.model))
        row = to_row(
            VersionRow,
            new,
            model_name=new.model,
            version=(latest or 0) + 1,
            inputs=tensors_to_json(new.inputs),
            outputs=tensors_to_json(new.outputs),
            tolerances={k: dict(v) for k, v in new.tolerances.items()},
        )
        session.add(row)
        session.flush()
        return version_from_row(row)

    def list_models(self) -> list[Model]:
        stmt = (
            select(ModelRow, func.max(VersionRow.version), func.count(VersionRow.id))
            .outerjoin(VersionRow, VersionRow.model_name == ModelRow.name)
            .group_by(ModelRow.name)
            .order_by(ModelRow.name)
        )
        with self._sessions() as session:
            return [
                Model(name=row.name, created_at=utc(row.created_at), latest_version=latest, version_count=count)
                for row, latest, count in session.execute(stmt).all()
            ]

    def get_model(self, name: str) -> Model | None:
        return next((m for m in self.list_models() if m.name == name), None)

    def list_versions(self, name: str) -> list[ModelVersion]:
        stmt = select(VersionRow).where(VersionRow.model_name == name).order_by(VersionRow.version)
        with self._sessions() as session:
            return [version_from_row(r) for r in session.scalars(stmt)]

    def get_version(self, name: str, version: int) -> ModelVersion | None:
        with self._sessions() as session:
            row = self._version_row(session, name, version)
            return version_from_row(row) if row else None

    @staticmethod
    def _version_row(session: Session, name: str, version: int) -> VersionRow | None:
        stmt = select(VersionRow).where(VersionRow.model_name == name, VersionRow.version == version)
        return session.scalars(stmt).first()

    def delete_unused(self, name: str, version: int | None) -> VersionUsage | Deletion:
        """Delete the model (version None) or one version in one transaction, unless something uses it: then
        nothing is deleted and what uses it is returned (registry_deletion.py)."""
        with self._sessions.begin() as session:
            return delete_unused(session, name, version)

    # -- training jobs ----------------------------------------------------------------------------------------
    def save_job(self, job: TrainingJob) -> TrainingJob:
        with self._sessions.begin() as session:
            session.merge(to_row(TrainingJobRow, job, model_name=job.model))
        return job

    def get_job(self, job_id: str) -> TrainingJob | None:
        with self._sessions() as session:
            row = session.get(TrainingJobRow, job_id)
            return job_from_row(row) if row else None

    def list_jobs(self) -> list[TrainingJob]:
        with self._sessions() as session:
            stmt = select(TrainingJobRow).order_by(TrainingJobRow.created_at.desc())
            return [job_from_row(r) for r in session.scalars(stmt)]

    def fail_unfinished_jobs(self, reason: str, now: datetime) -> int:
        """Mark jobs left queued/running by a previous process as failed; how many there were."""
        unfinished = [TrainingStatus.QUEUED.value, TrainingStatus.RUNNING.value]
        with self._sessions.begin() as session:
            result = session.execute(
                update(TrainingJobRow)
                .where(TrainingJobRow.status.in_(unfinished))
                .values(status=TrainingStatus.FAILED.value, error=reason, finished_at=now)
            )
            return int(getattr(result, "rowcount", 0) or 0)
