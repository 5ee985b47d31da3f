"""Persistence of models, versions, builds and training jobs. Returns domain values only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from control_plane.adapters.db.convert import (
    build_from_row,
    job_from_row,
    tensors_to_json,
    utc,
    version_from_row,
)
from control_plane.adapters.db.tables import BuildRow, ModelRow, TrainingJobRow, VersionRow
from control_plane.domain.errors import Conflict, NotFound
from control_plane.domain.registry import Build, Model, ModelVersion, NewVersion
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
        row = VersionRow(
            model_name=new.model,
            version=(latest or 0) + 1,
            created_at=new.created_at,
            source_sha256=new.source_sha256,
            source_size=new.source_size,
            inputs=tensors_to_json(new.inputs),
            outputs=tensors_to_json(new.outputs),
            samples_sha256=new.samples_sha256,
            sample_count=new.sample_count,
            samples_synthesised=new.samples_synthesised,
            reference_outputs_computed=new.reference_outputs_computed,
            lineage=dict(new.lineage),
            metrics=dict(new.metrics),
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

    # -- builds -----------------------------------------------------------------------------------------------
    def find_build(self, name: str, version: int, target: str, precision: str) -> Build | None:
        stmt = select(BuildRow).where(
            BuildRow.model_name == name,
            BuildRow.version == version,
            BuildRow.target == target,
            BuildRow.precision == precision,
        )
        with self._sessions() as session:
            row = session.scalars(stmt).first()
            return build_from_row(row) if row else None

    def save_build(self, build: Build) -> Build:
        """Store a build, replacing an earlier one with the same key (only failed builds are ever retried)."""
        with self._sessions.begin() as session:
            version = self._version_row(session, build.model, build.version)
            if version is None:
                raise NotFound(f"model {build.model!r} has no version {build.version}")
            old = session.scalars(
                select(BuildRow).where(
                    BuildRow.version_id == version.id,
                    BuildRow.target == build.target,
                    BuildRow.precision == build.precision,
                )
            ).first()
            if old is not None:
                session.delete(old)
                session.flush()
            session.add(_build_row(build, version.id))
        return build

    def get_build(self, build_id: str) -> Build | None:
        with self._sessions() as session:
            row = session.get(BuildRow, build_id)
            return build_from_row(row) if row else None

    def list_builds(self, name: str, version: int) -> list[Build]:
        stmt = (
            select(BuildRow)
            .where(BuildRow.model_name == name, BuildRow.version == version)
            .order_by(BuildRow.target, BuildRow.precision)
        )
        with self._sessions() as session:
            return [build_from_row(r) for r in session.scalars(stmt)]

    # -- training jobs ----------------------------------------------------------------------------------------
    def save_job(self, job: TrainingJob) -> TrainingJob:
        with self._sessions.begin() as session:
            session.merge(
                TrainingJobRow(
                    id=job.id,
                    spec=job.spec.model_dump(mode="json"),
                    status=job.status.value,
                    created_at=job.created_at,
                    started_at=job.started_at,
                    finished_at=job.finished_at,
                    error=job.error,
                    log_path=job.log_path,
                    model_name=job.model,
                    version=job.version,
                )
            )
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


def _build_row(build: Build, version_id: int) -> BuildRow:
    return BuildRow(
        id=build.id,
        version_id=version_id,
        model_name=build.model,
        version=build.version,
        target=build.target,
        precision=build.precision,
        artifact_kind=build.artifact_kind,
        status=build.status.value,
        artifact_sha256=build.artifact_sha256,
        artifact_size=build.artifact_size,
        error=build.error,
        created_at=build.created_at,
        manifest=dict(build.manifest),
        manifest_signature=build.manifest_signature,
    )
