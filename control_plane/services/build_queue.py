"""The builder side of the build queue (docs/builds.md "Builders"): claim, heartbeat, complete, fail.

Builders (the in-process worker, `edgectl build-worker`, agents with `builder: true`) all go through here. The
decisions (which build a builder may take, whether a lease lapsed, what a build waits for) are the pure
functions of `control_plane.domain.builds`; this service loads their inputs and applies them with one atomic
store update each. It never trusts a builder's verdict: parity figures are re-judged against the model's
tolerances here, and only then is the manifest composed and signed with the control-plane key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from control_plane.domain.builds import (
    BuildView,
    claim_choice,
    lease_lapsed,
    lease_until,
    recent_builders,
    requeue_reason,
    view,
)
from control_plane.domain.errors import Conflict, InvalidInput, NotFound
from control_plane.domain.registry import Build, BuilderRecord, BuildStatus, ModelVersion
from control_plane.services.ports import Artifacts, BuildStore, Clock, RegistryStore
from edge_agent.protocol import Signer, canonical_json
from model_builds.capabilities import BuilderInfo
from model_builds.kinds import ArtifactKind, Precision
from model_builds.planner import BuildSpec, Tolerances
from model_builds.reports import judge

log = logging.getLogger(__name__)

MAX_LOG_LINE = 2000


class LeaseLost(Conflict):
    """The builder no longer holds this build (its lease lapsed, or the build finished): it must stop."""


@dataclass(frozen=True)
class QueueSettings:
    base_url: str
    lease_s: float = 60.0  # a builder must renew within this; otherwise the build goes back to the queue
    builder_window_s: float = 60.0  # builders heard from within this count as present
    max_artifact_bytes: int = 2 * 1024**3


def spec_of(build: Build) -> BuildSpec:
    return BuildSpec(
        target=build.target,
        kind=ArtifactKind(build.artifact_kind),
        precision=Precision(build.precision),
        compute_capability=build.compute_capability,
        tensorrt_version=build.tensorrt_version,
    )


def can_build(info: BuilderInfo, build: Build) -> bool:
    """The builder's own judgement, and: a plan is built only by a builder of the plan's own class, if it has one."""
    if not info.can_build(spec_of(build)):
        return False
    if build.artifact_kind == ArtifactKind.TENSORRT_PLAN.value and info.gpu_class is not None:
        return info.gpu_class == build.target
    return True


class BuildQueueService:
    def __init__(
        self,
        store: BuildStore,
        registry: RegistryStore,
        artifacts: Artifacts,
        signer: Signer,
        clock: Clock,
        settings: QueueSettings,
    ) -> None:
        self._store = store
        self._registry = registry
        self._artifacts = artifacts
        self._signer = signer
        self._clock = clock
        self._settings = settings
        self._wakeups: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    # -- notifications ----------------------------------------------------------------------------------------
    def on_queued(self, hook: Callable[[], None]) -> None:
        """`hook` runs whenever a build enters the queue (the in-process worker wakes up on it)."""
        self._wakeups.append(hook)

    def notify_queued(self) -> None:
        for hook in self._wakeups:
            hook()

    # -- views ------------------------------------------------------------------------------------------------
    def view(self, build: Build) -> BuildView:
        return self.views([build])[0]

    def views(self, builds: list[Build]) -> list[BuildView]:
        if self.expire_leases():
            builds = [self._store.get_build(b.id) or b for b in builds]
        if not any(b.status is BuildStatus.QUEUED for b in builds):
            return [view(b, []) for b in builds]
        infos = [(r, _info(r)) for r in self.present_builders()]
        return [view(b, [r for r, i in infos if i is not None and can_build(i, b)]) for b in builds]

    def present_builders(self) -> list[BuilderRecord]:
        window = timedelta(seconds=self._settings.builder_window_s)
        return recent_builders(self._store.list_builders(), self._clock(), window)

    def builders(self) -> list[BuilderRecord]:
        return self.present_builders()

    # -- the builder protocol ---------------------------------------------------------------------------------
    def claim(self, info: BuilderInfo) -> dict[str, Any] | None:
        """Take the oldest queued build this builder can build, under a lease; its BuildTask dict, or None."""
        now = self._clock()
        self._store.see_builder(BuilderRecord(info.builder_id, info.hostname, info.as_dict(), now))
        self.expire_leases()
        queued = self._store.list_by_status([BuildStatus.QUEUED])
        for candidate in claim_choice(queued, lambda b: can_build(info, b)):
            changes = {
                "status": BuildStatus.RUNNING,
                "builder_id": info.builder_id,
                "lease_expires_at": lease_until(now, self._settings.lease_s),
                "started_at": now,
                "progress": 0.0,
                "message": f"claimed by {info.builder_id} on {info.hostname}",
            }
            won = self._store.transition(candidate.id, BuildStatus.QUEUED, None, changes)
            if won is None:
                continue  # another builder was faster; try the next one
            self._log(won.id, f"claimed by builder {info.builder_id} ({info.hostname})")
            try:
                return self._task(won)
            except (NotFound, Conflict) as exc:
                self._finish_failed(won, info.builder_id, str(exc))
        return None

    def heartbeat(self, build_id: str, builder_id: str, message: str | None, progress: float | None) -> Build:
        """Renew the lease (and record progress); LeaseLost when the builder no longer holds the build."""
        now = self._clock()
        self._store.touch_builder(builder_id, now)
        changes: dict[str, Any] = {"lease_expires_at": lease_until(now, self._settings.lease_s)}
        if progress is not None:
            changes["progress"] = max(0.0, min(1.0, progress))
        if message:
            changes["message"] = message[:MAX_LOG_LINE]
        renewed = self._store.transition(build_id, BuildStatus.RUNNING, builder_id, changes)
        if renewed is None:
            raise self._lost(build_id, builder_id)
        if message:
            self._log(build_id, message)
        return renewed

    def fail(self, build_id: str, builder_id: str, error: str) -> Build:
        build = self._held(build_id, builder_id)
        return self._finish_failed(build, builder_id, error or "the builder gave no reason")

    def complete(self, build_id: str, builder_id: str, artifact: BinaryIO, report: Mapping[str, Any]) -> Build:
        """Store the artifact, re-judge its parity, sign the manifest, and mark the build succeeded or rejected."""
        build = self._held(build_id, builder_id)
        version = self._version(build)
        _checked_parity(report)  # a malformed report is refused before anything is stored
        mismatch = _hardware_mismatch(build, report)
        if mismatch is not None:
            return self._finish_failed(build, builder_id, mismatch)
        path, sha, size = self._receive_artifact(artifact)
        self._artifacts.adopt(path, sha)
        tolerances = self._tolerances(version, build)
        parity = judge(_checked_parity(report), tolerances)
        now = self._clock()
        status = BuildStatus.SUCCEEDED if parity.passed else BuildStatus.REJECTED
        hardware_key = _hardware_key(build, report)
        manifest = self._manifest(build, version, sha, size, parity.as_dict(), report, hardware_key, now)
        changes: dict[str, Any] = {
            "status": status,
            "artifact_sha256": sha,
            "artifact_size": size,
            "parity": parity.as_dict(),
            "latency": _mapping(report.get("latency")),
            "hardware_key": hardware_key,
            "manifest": manifest,
            "manifest_signature": self._signer.sign(canonical_json(manifest).encode()),
            "error": None if parity.passed else "parity: " + "; ".join(parity.reasons),
            "finished_at": now,
            "lease_expires_at": None,
            "progress": 1.0,
            "message": "succeeded" if parity.passed else "rejected: outside the parity tolerances",
        }
        done = self._store.transition(build_id, BuildStatus.RUNNING, builder_id, changes)
        if done is None:
            raise self._lost(build_id, builder_id)
        self._log(build_id, f"{status.value}: parity {'within' if parity.passed else 'outside'} tolerance")
        for reason in parity.reasons:
            self._log(build_id, f"parity: {reason}")
        log.info("build %s %s (%s %s %s)", build_id, status.value, build.target, build.artifact_kind, build.precision)
        return done

    # -- recovery ---------------------------------------------------------------------------------------------
    def expire_leases(self) -> int:
        """Running builds whose lease lapsed go back to the queue; how many."""
        now = self._clock()
        count = 0
        for build in self._store.list_by_status([BuildStatus.RUNNING]):
            if lease_lapsed(build, now) and self._requeue(build, requeue_reason(build)):
                count += 1
        if count:
            self.notify_queued()
        return count

    def recover(self, builder_ids: set[str]) -> int:
        """At startup: builds the given (in-process) builders were running when the process stopped are re-queued."""
        count = 0
        for build in self._store.list_by_status([BuildStatus.RUNNING]):
            if build.builder_id in builder_ids and self._requeue(
                build, "the control plane restarted during the build; back in the queue"
            ):
                count += 1
        return count

    def requeue_failed(self, build: Build) -> Build | None:
        changes = _reset_changes() | {"created_at": self._clock()}
        again = self._store.transition(build.id, BuildStatus.FAILED, build.builder_id, changes)
        if again is not None:
            self._log(build.id, "queued again (the previous attempt failed)")
        return again

    # -- internals --------------------------------------------------------------------------------------------
    def _requeue(self, build: Build, reason: str) -> bool:
        again = self._store.transition(build.id, BuildStatus.RUNNING, build.builder_id, _reset_changes())
        if again is not None:
            self._log(build.id, reason)
            log.warning("build %s: %s", build.id, reason)
        return again is not None

    def _finish_failed(self, build: Build, builder_id: str, error: str) -> Build:
        changes = {
            "status": BuildStatus.FAILED,
            "error": error[: MAX_LOG_LINE * 4],
            "finished_at": self._clock(),
            "lease_expires_at": None,
            "message": "failed",
        }
        done = self._store.transition(build.id, BuildStatus.RUNNING, builder_id, changes)
        if done is None:
            raise self._lost(build.id, builder_id)
        self._log(build.id, f"failed: {error}")
        return done

    def _held(self, build_id: str, builder_id: str) -> Build:
        build = self._store.get_build(build_id)
        if build is None:
            raise NotFound(f"build {build_id!r} does not exist")
        if build.status is not BuildStatus.RUNNING or build.builder_id != builder_id:
            raise self._lost(build_id, builder_id)
        return build

    def _lost(self, build_id: str, builder_id: str) -> LeaseLost | NotFound:
        build = self._store.get_build(build_id)
        if build is None:
            return NotFound(f"build {build_id!r} does not exist")
        holder = f"held by {build.builder_id}" if build.builder_id else "not held by any builder"
        return LeaseLost(f"builder {builder_id} does not hold build {build_id} ({build.status.value}, {holder})")

    def _log(self, build_id: str, message: str) -> None:
        self._store.append_log(build_id, self._clock(), message[:MAX_LOG_LINE])

    def _version(self, build: Build) -> ModelVersion:
        version = self._registry.get_version(build.model, build.version)
        if version is None:
            raise NotFound(f"model {build.model!r} has no version {build.version}")
        return version

    def _tolerances(self, version: ModelVersion, build: Build) -> Tolerances:
        try:
            return Tolerances.from_overrides(Precision(build.precision), version.tolerances)
        except ValueError as exc:
            raise InvalidInput(f"{version.model} v{version.version}: tolerances: {exc}") from exc

    def _receive_artifact(self, artifact: BinaryIO) -> tuple[Path, str, int]:
        try:
            path, sha, size = self._artifacts.receive(artifact, self._settings.max_artifact_bytes, ".artifact")
        except ValueError as exc:
            raise InvalidInput(f"artifact: {exc}") from exc
        if size == 0:
            path.unlink(missing_ok=True)
            raise InvalidInput("artifact: the uploaded file is empty")
        return path, sha, size

    def _remote(self, sha256: str | None) -> dict[str, Any] | None:
        if sha256 is None:
            return None
        path = self._artifacts.path_for(sha256)
        if path is None:
            raise NotFound(f"artifact {sha256} is missing from the artifact store")
        return {
            "url": f"{self._settings.base_url}/v1/artifacts/{sha256}",
            "sha256": sha256,
            "size": path.stat().st_size,
        }

    def _task(self, build: Build) -> dict[str, Any]:
        """The BuildTask of docs/builds.md for a claimed build."""
        version = self._version(build)
        options = {k: v for k, v in build.options.items() if k != "calibration_sha256"}
        return {
            **_identity(build),
            "compute_capability": build.compute_capability,
            "tensorrt_version": build.tensorrt_version,
            "options": options,
            "source": self._remote(version.source_sha256),
            "samples": self._remote(version.samples_sha256),
            "calibration": self._remote(build.calibration_sha256),
            "tolerances": self._tolerances(version, build).as_dict(),
            "lease_s": self._settings.lease_s,
        }

    def _manifest(
        self,
        build: Build,
        version: ModelVersion,
        sha: str,
        size: int,
        parity: Mapping[str, Any],
        report: Mapping[str, Any],
        hardware_key: Mapping[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        builder = self._builder(build.builder_id)
        return {
            **_identity(build),
            "artifact": {"sha256": sha, "size": size},
            "hardware_key": dict(hardware_key),
            "toolchain": {str(k): v for k, v in _mapping(report.get("toolchain")).items()},
            "build_options": _mapping(report.get("build_options")) or dict(build.options),
            "source": {"sha256": version.source_sha256, "lineage": dict(version.lineage)},
            "parity": dict(parity),
            "latency": _mapping(report.get("latency")),
            "builder": {"id": build.builder_id, "hostname": builder.hostname if builder else None},
            "built_at": now.isoformat(),
        }

    def _builder(self, builder_id: str | None) -> BuilderRecord | None:
        return next((b for b in self._store.list_builders() if b.builder_id == builder_id), None)


def _identity(build: Build) -> dict[str, Any]:
    """What names a build, in its BuildTask and in its manifest alike."""
    return {
        "build_id": build.id,
        "key": build.key,
        "model": build.model,
        "version": build.version,
        "target": build.target,
        "kind": build.artifact_kind,
        "precision": build.precision,
    }


def _reset_changes() -> dict[str, Any]:
    return {
        "status": BuildStatus.QUEUED,
        "builder_id": None,
        "lease_expires_at": None,
        "started_at": None,
        "finished_at": None,
        "progress": None,
        "message": None,
        "error": None,
    }


def _info(record: BuilderRecord) -> BuilderInfo | None:
    try:
        return BuilderInfo.from_dict(record.info)
    except (KeyError, TypeError, ValueError):
        return None


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _checked_parity(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report's parity figures, shape-checked: a malformed report is the builder's bug, refused with 422."""
    parity = report.get("parity")
    outputs = parity.get("outputs") if isinstance(parity, Mapping) else None
    if not isinstance(outputs, list) or not all(isinstance(o, Mapping) for o in outputs):
        raise InvalidInput("report: parity.outputs must be a list of per-output figures (docs/builds.md)")
    return dict(parity) if isinstance(parity, Mapping) else {}


def _hardware_key(build: Build, report: Mapping[str, Any]) -> dict[str, Any]:
    """Plans are keyed by the hardware they were built on; portable kinds only by their class."""
    hardware = _mapping(report.get("hardware"))
    options = _mapping(report.get("build_options")) or dict(build.options)
    if build.artifact_kind != ArtifactKind.TENSORRT_PLAN.value:
        return {"gpu_class": build.target}
    return {
        "gpu_class": build.target,
        "compute_capability": build.compute_capability,
        "tensorrt_version": build.tensorrt_version,
        "jetpack_version": hardware.get("jetpack_version"),
        "hardware_compatibility_level": options.get("hardware_compatibility_level"),
    }


def _hardware_mismatch(build: Build, report: Mapping[str, Any]) -> str | None:
    """A plan reported as built on other hardware than its key names is refused, never shipped."""
    if build.artifact_kind != ArtifactKind.TENSORRT_PLAN.value:
        return None
    hardware = _mapping(report.get("hardware"))
    for field, want in (("compute_capability", build.compute_capability), ("tensorrt_version", build.tensorrt_version)):
        got = hardware.get(field)
        if got is not None and want is not None and str(got) != want:
            return f"the builder reports {field} {got}, the build's key needs {want}"
    return None
