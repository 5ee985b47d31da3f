"""Deleting a model or one of its versions, in one transaction, unless something still uses it.

What uses a version: an unfinished rollout that installs it, falls back to it or would restore it on an abort, and a
device whose desired or reported state names it. When nothing does, the version goes with its builds and their
logs, its telemetry windows and the finished rollouts that installed it (their rows point at its builds); the
digests no remaining row refers to are returned so that the caller removes the files. It must never delete anything
when something uses the version, and never return a digest another version or build still refers to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Text, cast, delete, or_, select
from sqlalchemy.orm import Session

from control_plane.adapters.db.tables import (
    BuildLogRow,
    BuildRow,
    DeviceRow,
    ModelRow,
    RolloutDeviceRow,
    RolloutEventRow,
    RolloutRow,
    TelemetryRow,
    VersionRow,
)
from control_plane.domain.registry import BuildStatus, Deletion, VersionUsage
from control_plane.domain.rollout_progress import FINAL_PHASES

DEVICES_NAMED = 5  # how many device ids a refusal names (the count says the rest)
_FINAL = [p.value for p in FINAL_PHASES]


def delete_unused(session: Session, name: str, version: int | None) -> VersionUsage | Deletion:
    """Delete `name` (all versions: `version` None) or one version; what uses it instead, deleting nothing."""
    versions = list(session.scalars(_versions(name, version)))
    version_ids = [v.id for v in versions]
    builds = list(session.scalars(select(BuildRow).where(BuildRow.version_id.in_(version_ids)))) if version_ids else []
    build_ids = [b.id for b in builds]
    numbers = {v.version for v in versions}
    usage = _usage(session, name, version, builds, numbers)
    if usage.in_use:
        return usage
    candidates = {v.source_sha256 for v in versions} | {v.samples_sha256 for v in versions}
    candidates |= {d for b in builds for d in (b.artifact_sha256, b.calibration_sha256) if d}
    finished = _finished_rollouts(session, name, version, build_ids)
    if finished:
        session.execute(delete(RolloutEventRow).where(RolloutEventRow.rollout_id.in_(finished)))
        session.execute(delete(RolloutDeviceRow).where(RolloutDeviceRow.rollout_id.in_(finished)))
        session.execute(delete(RolloutRow).where(RolloutRow.id.in_(finished)))
    if build_ids:
        session.execute(delete(BuildLogRow).where(BuildLogRow.build_id.in_(build_ids)))
        session.execute(delete(BuildRow).where(BuildRow.id.in_(build_ids)))
    telemetry = delete(TelemetryRow).where(TelemetryRow.model == name)
    if version is not None:
        telemetry = telemetry.where(TelemetryRow.version == version)
    session.execute(telemetry)
    if version_ids:
        session.execute(delete(VersionRow).where(VersionRow.id.in_(version_ids)))
    if version is None:
        session.execute(delete(ModelRow).where(ModelRow.name == name))
    session.flush()
    orphaned = sorted(candidates - _still_referenced(session, candidates))
    return Deletion(name, version, len(versions), len(builds), tuple(orphaned), len(finished))


def _versions(name: str, version: int | None) -> Any:
    stmt = select(VersionRow).where(VersionRow.model_name == name)
    return stmt if version is None else stmt.where(VersionRow.version == version)


def _usage(session: Session, name: str, version: int | None, builds: list[BuildRow], numbers: set[int]) -> VersionUsage:
    build_ids = [b.id for b in builds]
    open_rollouts = select(RolloutRow.id).where(RolloutRow.phase.not_in(_FINAL))
    own = open_rollouts.where(RolloutRow.model_name == name)
    if version is not None:
        own = own.where(RolloutRow.version == version)
    rollouts = set(session.scalars(own))
    if build_ids:
        restoring = (
            select(RolloutDeviceRow.rollout_id)
            .join(RolloutRow, RolloutRow.id == RolloutDeviceRow.rollout_id)
            .where(RolloutRow.phase.not_in(_FINAL))
            .where(
                or_(
                    RolloutDeviceRow.build_id.in_(build_ids),
                    RolloutDeviceRow.previous_build_id.in_(build_ids),
                    RolloutDeviceRow.fallback_build_id.in_(build_ids),
                )
            )
            .distinct()
        )
        rollouts |= set(session.scalars(restoring))
    devices = _devices_naming(session, name, numbers)
    running = sorted(b.id for b in builds if b.status == BuildStatus.RUNNING.value)
    return VersionUsage(tuple(sorted(rollouts)), tuple(devices[:DEVICES_NAMED]), len(devices), tuple(running))


def _devices_naming(session: Session, name: str, numbers: set[int]) -> list[str]:
    """Devices whose desired or reported state names one of the versions: the database narrows by the name's text,
    each candidate's documents are then read for the exact model and version."""
    if not numbers:
        return []
    text_desired, text_reported = cast(DeviceRow.desired, Text), cast(DeviceRow.reported, Text)
    stmt = (
        select(DeviceRow.id, DeviceRow.desired, DeviceRow.reported)
        .where(or_(text_desired.contains(name, autoescape=True), text_reported.contains(name, autoescape=True)))
        .order_by(DeviceRow.id)
    )
    found: list[str] = []
    for device_id, desired, reported in session.execute(stmt):
        if _names(_desired_models(desired), name, numbers) or _names(_models(reported), name, numbers):
            found.append(device_id)
    return found


def _desired_models(desired: Any) -> Any:
    if not isinstance(desired, dict) or not isinstance(desired.get("document"), str):
        return None
    try:
        return _models(json.loads(desired["document"]))
    except ValueError:
        return None


def _models(document: Any) -> Any:
    return document.get("models") if isinstance(document, dict) else None


def _names(models: Any, name: str, numbers: set[int]) -> bool:
    if not isinstance(models, list):
        return False
    return any(isinstance(m, dict) and m.get("name") == name and m.get("version") in numbers for m in models)


def _finished_rollouts(session: Session, name: str, version: int | None, build_ids: list[str]) -> list[str]:
    own = select(RolloutRow.id).where(RolloutRow.model_name == name, RolloutRow.phase.in_(_FINAL))
    if version is not None:
        own = own.where(RolloutRow.version == version)
    found = set(session.scalars(own))
    if build_ids:  # a finished rollout of any version whose rows point at these builds
        found |= set(
            session.scalars(
                select(RolloutDeviceRow.rollout_id).where(RolloutDeviceRow.build_id.in_(build_ids)).distinct()
            )
        )
    return sorted(found)


def _still_referenced(session: Session, digests: Iterable[str]) -> set[str]:
    wanted = list(digests)
    if not wanted:
        return set()
    columns = (
        VersionRow.source_sha256,
        VersionRow.samples_sha256,
        BuildRow.artifact_sha256,
        BuildRow.calibration_sha256,
    )
    referenced: set[str] = set()
    for column in columns:
        referenced |= {d for d in session.scalars(select(column).where(column.in_(wanted)).distinct()) if d}
    return referenced
