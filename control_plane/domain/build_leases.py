"""The builder protocol's steps as data: who may take a build, the task it gets, and the record each step writes.

`services/build_queue.py` loads a build, asks these functions what a claim, a renewal, a delivery, a failure, a
requeue or a cancel changes, and applies that with one atomic store update (`BuildStore.transition`). Keeping the
changes here means every field a step sets is visible (and tested) in one place, as values.
Pure: `now` and every loaded record come in as arguments; nothing here reads the clock, the store or the artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from control_plane.domain.build_manifest import build_identity
from control_plane.domain.build_trust import MeasuredBy
from control_plane.domain.builds import lease_until
from control_plane.domain.registry import Build, BuildStatus
from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.protocol import (
    BuilderInfo,
    BuildOptions,
    BuildReport,
    BuildSpec,
    BuildTask,
    ParityReport,
    RemoteFile,
    Tolerances,
    wire,
)

MAX_LOG_LINE = 2000
Changes = dict[str, Any]


def spec_of(build: Build) -> BuildSpec:
    return BuildSpec(
        build.target, build.artifact_kind, build.precision, build.compute_capability, build.tensorrt_version
    )


def can_build(info: BuilderInfo, build: Build) -> bool:
    """The builder's own judgement, and: a plan is built only by a builder of the plan's own class, if it has one."""
    if not info.can_build(spec_of(build)):
        return False
    if build.artifact_kind is ArtifactKind.TENSORRT_PLAN and info.gpu_class is not None:
        return info.gpu_class == build.target
    return True


def task_of(
    build: Build,
    source: RemoteFile,
    samples: RemoteFile,
    calibration: RemoteFile | None,
    tolerances: Tolerances,
    lease_s: float,
) -> BuildTask:
    """The BuildTask of docs/builds.md for a claimed build (the calibration set travels as a file, not an option)."""
    options = {k: v for k, v in build.options.items() if k != "calibration_sha256"}
    return BuildTask(
        **build_identity(build),
        compute_capability=build.compute_capability,
        tensorrt_version=build.tensorrt_version,
        options=BuildOptions(**options),
        source=source,
        samples=samples,
        calibration=calibration,
        tolerances=tolerances,
        lease_s=lease_s,
    )


def claimed(info: BuilderInfo, subject: str, now: datetime, lease_s: float) -> Changes:
    """A queued build taken by `subject` (the lease holder) under a fresh lease."""
    return {
        "status": BuildStatus.RUNNING,
        "builder_id": info.builder_id,
        "builder_subject": subject,
        "lease_expires_at": lease_until(now, lease_s),
        "started_at": now,
        "progress": 0.0,
        "message": f"claimed by {info.builder_id} on {info.hostname}",
    }


def renewed(now: datetime, lease_s: float, message: str | None, progress: float | None) -> Changes:
    """A heartbeat: the lease renewed, with the progress (clamped) and message (bounded) if any."""
    changes: Changes = {"lease_expires_at": lease_until(now, lease_s)}
    if progress is not None:
        changes["progress"] = max(0.0, min(1.0, progress))
    if message:
        changes["message"] = message[:MAX_LOG_LINE]
    return changes


def failed(error: str, now: datetime) -> Changes:
    return {
        "status": BuildStatus.FAILED,
        "error": error[: MAX_LOG_LINE * 4],
        "finished_at": now,
        "lease_expires_at": None,
        "message": "failed",
    }


def requeued() -> Changes:
    """Back in the queue, as if never claimed."""
    return {
        "status": BuildStatus.QUEUED,
        "builder_id": None,
        "builder_subject": None,
        "lease_expires_at": None,
        "started_at": None,
        "finished_at": None,
        "progress": None,
        "message": None,
        "error": None,
    }


def cancelled(by: str, now: datetime) -> Changes:
    return {
        "status": BuildStatus.CANCELLED,
        "lease_expires_at": None,
        "finished_at": now,
        "message": f"cancelled by {by}",
    }


def figures_of(parity: ParityReport, measured_by: MeasuredBy) -> dict[str, Any]:
    """The parity figures that decided a build, saying whose they are."""
    return wire(parity) | {"measured_by": measured_by.value}


def delivered(
    sha: str,
    size: int,
    parity: ParityReport,
    figures: Mapping[str, Any],
    report: BuildReport,
    hardware_key: Mapping[str, Any],
    now: datetime,
) -> Changes:
    """A delivered artifact judged: succeeded within tolerance, rejected outside it (never signed: the service adds
    the manifest and its signature to the changes of a build that passed, and only then)."""
    return {
        "status": BuildStatus.SUCCEEDED if parity.passed else BuildStatus.REJECTED,
        "artifact_sha256": sha,
        "artifact_size": size,
        "parity": dict(figures),
        "reported_parity": dict(report.parity),
        "latency": dict(report.latency),
        "hardware_key": dict(hardware_key),
        "manifest": {},
        "manifest_signature": None,
        "error": None if parity.passed else "parity: " + "; ".join(parity.reasons),
        "finished_at": now,
        "lease_expires_at": None,
        "progress": 1.0,
        "message": "succeeded" if parity.passed else "rejected: outside the parity tolerances",
    }
