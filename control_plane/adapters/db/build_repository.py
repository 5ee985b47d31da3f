"""Persistence of the build queue: builds, their logs, and the builders seen. Returns domain values only.

Every state change of a build is one conditional UPDATE (`WHERE status = expected AND builder_subject = expected`),
so two builders can never both win a claim and a builder that does not hold the lease (another identity, or one
whose lease lapsed or whose build was cancelled) can never complete it. Deciding
which change to make is the domain's job; this module only applies it atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from control_plane.adapters.db.convert import build_from_row, utc
from control_plane.adapters.db.tables import (
    BuilderRegistrationRow,
    BuilderRow,
    BuildLogRow,
    BuildRow,
    DeviceRow,
    VersionRow,
)
from control_plane.domain.build_trust import BuilderRegistration
from control_plane.domain.errors import NotFound
from control_plane.domain.registry import Build, BuilderRecord, BuildLogLine, BuildStatus

ANY_BUILDER = "*"
_RENAMED = {"model": "model_name"}


class BuildRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # -- builds -----------------------------------------------------------------------------------------------
    def insert_build(self, build: Build) -> Build:
        """Store a new build; when its key exists already (a concurrent request), the existing build."""
        try:
            with self._sessions.begin() as session:
                version = session.scalars(
                    select(VersionRow).where(VersionRow.model_name == build.model, VersionRow.version == build.version)
                ).first()
                if version is None:
                    raise NotFound(f"model {build.model!r} has no version {build.version}")
                session.add(_row(build, version.id))
            return build
        except IntegrityError:
            existing = self.find_by_key(build.model, build.version, build.key)
            if existing is None:
                raise
            return existing

    def find_by_key(self, name: str, version: int, key: str) -> Build | None:
        stmt = select(BuildRow).where(BuildRow.model_name == name, BuildRow.version == version, BuildRow.key == key)
        with self._sessions() as session:
            row = session.scalars(stmt).first()
            return build_from_row(row) if row else None

    def get_build(self, build_id: str) -> Build | None:
        with self._sessions() as session:
            row = session.get(BuildRow, build_id)
            return build_from_row(row) if row else None

    def list_builds(self, name: str, version: int) -> list[Build]:
        stmt = (
            select(BuildRow)
            .where(BuildRow.model_name == name, BuildRow.version == version)
            .order_by(BuildRow.target, BuildRow.artifact_kind, BuildRow.precision, BuildRow.created_at)
        )
        with self._sessions() as session:
            return [build_from_row(r) for r in session.scalars(stmt)]

    def list_by_status(self, statuses: Iterable[BuildStatus]) -> list[Build]:
        stmt = (
            select(BuildRow)
            .where(BuildRow.status.in_([s.value for s in statuses]))
            .order_by(BuildRow.created_at, BuildRow.id)
        )
        with self._sessions() as session:
            return [build_from_row(r) for r in session.scalars(stmt)]

    def transition(
        self, build_id: str, expect: BuildStatus, holder: str | None, changes: Mapping[str, Any]
    ) -> Build | None:
        """Apply `changes` (Build field names) only if the build is in `expect` status and, unless `holder` is
        ANY_BUILDER, its lease is held by that identity (None: by nobody). The updated build, or None when the
        condition did not hold."""
        conditions = [BuildRow.id == build_id, BuildRow.status == expect.value]
        if holder != ANY_BUILDER:
            conditions.append(
                BuildRow.builder_subject.is_(None) if holder is None else BuildRow.builder_subject == holder
            )
        values = {_RENAMED.get(k, k): _column_value(v) for k, v in changes.items()}
        with self._sessions.begin() as session:
            result = session.execute(update(BuildRow).where(*conditions).values(**values))
            if not getattr(result, "rowcount", 0):
                return None
        return self.get_build(build_id)

    # -- logs -------------------------------------------------------------------------------------------------
    def append_log(self, build_id: str, at: datetime, message: str) -> None:
        with self._sessions.begin() as session:
            session.add(BuildLogRow(build_id=build_id, at=at, message=message))

    def logs(self, build_id: str) -> list[BuildLogLine]:
        stmt = select(BuildLogRow).where(BuildLogRow.build_id == build_id).order_by(BuildLogRow.id)
        with self._sessions() as session:
            return [BuildLogLine(r.build_id, utc(r.at), r.message) for r in session.scalars(stmt)]

    # -- builders ---------------------------------------------------------------------------------------------
    def see_builder(self, record: BuilderRecord) -> None:
        with self._sessions.begin() as session:
            session.merge(
                BuilderRow(
                    id=_builder_key(record.subject, record.builder_id),
                    label=record.builder_id,
                    subject=record.subject,
                    hostname=record.hostname,
                    info=dict(record.info),
                    last_seen=record.last_seen,
                )
            )

    def touch_builder(self, subject: str, label: str, now: datetime) -> None:
        with self._sessions.begin() as session:
            key = _builder_key(subject, label)
            session.execute(update(BuilderRow).where(BuilderRow.id == key).values(last_seen=now))

    def list_builders(self) -> list[BuilderRecord]:
        with self._sessions() as session:
            return [
                BuilderRecord(r.label or r.id, r.hostname, dict(r.info), utc(r.last_seen), r.subject)
                for r in session.scalars(select(BuilderRow).order_by(BuilderRow.label, BuilderRow.id))
            ]

    # -- registrations ----------------------------------------------------------------------------------------
    def save_registration(self, registration: BuilderRegistration) -> BuilderRegistration:
        with self._sessions.begin() as session:
            session.merge(
                BuilderRegistrationRow(
                    subject=registration.subject,
                    name=registration.name,
                    compute_capability=registration.compute_capability,
                    tensorrt=registration.tensorrt,
                    gpu_class=registration.gpu_class,
                    created_by=registration.created_by,
                    created_at=registration.created_at,
                )
            )
        return registration

    def registration(self, subject: str) -> BuilderRegistration | None:
        with self._sessions() as session:
            row = session.get(BuilderRegistrationRow, subject)
            return _registration(row) if row else None

    def list_registrations(self) -> list[BuilderRegistration]:
        stmt = select(BuilderRegistrationRow).order_by(BuilderRegistrationRow.name, BuilderRegistrationRow.subject)
        with self._sessions() as session:
            return [_registration(r) for r in session.scalars(stmt)]

    def fleet_gpu_classes(self) -> list[str]:
        """The distinct GPU classes of the enrolled devices (what `edgectl build` builds for by default)."""
        classes = DeviceRow.gpu_class
        stmt = select(classes).where(classes.is_not(None)).distinct().order_by(classes)
        with self._sessions() as session:
            return [c for c in session.scalars(stmt) if c]

    def count_by_status(self) -> dict[str, int]:
        """How many builds are in each stored status: one grouped COUNT over `ix_builds_status` (for `/metrics`)."""
        stmt = select(BuildRow.status, func.count()).group_by(BuildRow.status)
        with self._sessions() as session:
            return {str(status): int(count) for status, count in session.execute(stmt)}


def _builder_key(subject: str | None, label: str) -> str:
    return f"{subject or '-'} {label}"


def _registration(row: BuilderRegistrationRow) -> BuilderRegistration:
    return BuilderRegistration(
        subject=row.subject,
        name=row.name,
        compute_capability=row.compute_capability,
        tensorrt=row.tensorrt,
        gpu_class=row.gpu_class,
        created_by=row.created_by,
        created_at=utc(row.created_at),
    )


def _column_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _row(build: Build, version_id: int) -> BuildRow:
    return BuildRow(
        id=build.id,
        version_id=version_id,
        model_name=build.model,
        version=build.version,
        target=build.target,
        precision=build.precision.value,
        artifact_kind=build.artifact_kind.value,
        status=build.status.value,
        artifact_sha256=build.artifact_sha256,
        artifact_size=build.artifact_size,
        error=build.error,
        created_at=build.created_at,
        manifest=dict(build.manifest),
        manifest_signature=build.manifest_signature,
        key=build.key,
        compute_capability=build.compute_capability,
        tensorrt_version=build.tensorrt_version,
        options=dict(build.options),
        calibration_sha256=build.calibration_sha256,
        builder_id=build.builder_id,
        builder_subject=build.builder_subject,
        lease_expires_at=build.lease_expires_at,
        progress=build.progress,
        message=build.message,
        parity=None if build.parity is None else dict(build.parity),
        reported_parity=None if build.reported_parity is None else dict(build.reported_parity),
        latency=None if build.latency is None else dict(build.latency),
        hardware_key=None if build.hardware_key is None else dict(build.hardware_key),
        started_at=build.started_at,
        finished_at=build.finished_at,
    )
