"""The builder side of the build queue (docs/builds.md "Builders"): claim, heartbeat, complete, fail.

Builders (the in-process worker, `edgectl build-worker`, agents with `builder: true`) all go through here, each as
the authenticated identity (`Principal`) it proved: a lease belongs to the identity that claimed the build, and
only that identity may renew, complete or fail it; the `builder_id` a builder sends is a label for people. The
decisions (which build a builder may take, whether a lease lapsed, what a build waits for, whose word a kind needs)
are the pure functions of `control_plane.domain.builds` and `control_plane.domain.build_trust`; this service loads
their inputs and applies them with one atomic store update each. It never trusts a builder's verdict: an artifact
of a kind the control plane can run is re-proved here (`ReProver`), a TensorRT plan is accepted only from a builder
registered for its hardware, and only a build that passes is signed with the control-plane key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from control_plane.domain import build_leases
from control_plane.domain.build_leases import MAX_LOG_LINE, can_build, figures_of, task_of
from control_plane.domain.build_manifest import (
    BuilderSignature,
    checked_parity,
    compose_manifest,
    hardware_key_of,
    hardware_mismatch,
)
from control_plane.domain.build_trust import (
    BuilderRegistration,
    MeasuredBy,
    cancel_refusal,
    disagreement,
    lost_reason,
    plan_refusal,
    reproved,
)
from control_plane.domain.builds import (
    BuildView,
    claim_choice,
    lease_lapsed,
    lease_until,
    recent_builders,
    requeue_reason,
    version_tolerances,
    view,
)
from control_plane.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from control_plane.domain.identity import Permission, Principal
from control_plane.domain.registry import Build, BuilderRecord, BuildStatus, ModelVersion
from control_plane.services.ports import Artifacts, BuildStore, Clock, RegistryStore
from control_plane.services.reproof import ReProver
from edge_agent.protocol import Signer, canonical_json
from edge_agent.protocol.validation import describe_error
from model_builds.protocol import BuilderInfo, BuildReport, BuildTask, ParityReport, RemoteFile, Tolerances
from model_builds.reports import judge

log = logging.getLogger(__name__)


class LeaseLost(Conflict):
    """The builder does not hold this build (another identity does, its lease lapsed, the build finished or was
    cancelled): it must stop."""


@dataclass(frozen=True)
class QueueSettings:
    base_url: str
    lease_s: float = 60.0  # a builder must renew within this; otherwise the build goes back to the queue
    builder_window_s: float = 60.0  # builders heard from within this count as present
    max_artifact_bytes: int = 2 * 1024**3
    reproof_timeout_s: float = 120.0  # the lease is extended by this while the control plane re-proves an artifact


class BuildQueueService:
    def __init__(
        self,
        store: BuildStore,
        registry: RegistryStore,
        artifacts: Artifacts,
        signer: Signer,
        clock: Clock,
        settings: QueueSettings,
        prover: ReProver,
    ) -> None:
        self._store = store
        self._registry = registry
        self._artifacts = artifacts
        self._signer = signer
        self._clock = clock
        self._settings = settings
        self._prover = prover
        self._wakeups: list[Callable[[], None]] = []
        self._builtin: dict[str, BuilderRegistration] = {}
        self._lock = threading.Lock()

    def trust_builtin(self, registration: BuilderRegistration) -> None:
        """The control plane's own builder vouches for the plans it builds on this host's GPU (nobody registers it:
        it is the control plane)."""
        self._builtin[registration.subject] = registration

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
        registrations = {r.subject: r for r in self._store.list_registrations()} | self._builtin
        infos = [(r, _info(r), registrations.get(r.subject or "")) for r in self.present_builders()]
        return [
            view(b, [r for r, i, reg in infos if i is not None and can_build(i, b) and plan_refusal(b, reg) is None])
            for b in builds
        ]

    def present_builders(self) -> list[BuilderRecord]:
        window = timedelta(seconds=self._settings.builder_window_s)
        return recent_builders(self._store.list_builders(), self._clock(), window)

    def builders(self) -> list[BuilderRecord]:
        return self.present_builders()

    # -- the builder protocol ---------------------------------------------------------------------------------
    def claim(self, builder: Principal, info: BuilderInfo) -> BuildTask | None:
        """Take the oldest queued build this builder can build (and, for a plan, is registered to deliver) under a
        lease held by `builder`'s identity; its BuildTask, or None."""
        _require_builder(builder)
        now = self._clock()
        self._store.see_builder(BuilderRecord(info.builder_id, info.hostname, info.as_dict(), now, builder.subject))
        self.expire_leases()
        registration = self.registration(builder.subject)
        queued = self._store.list_by_status([BuildStatus.QUEUED])
        able = claim_choice(queued, lambda b: can_build(info, b) and plan_refusal(b, registration) is None)
        for candidate in able:
            changes = build_leases.claimed(info, builder.subject, now, self._settings.lease_s)
            won = self._store.transition(candidate.id, BuildStatus.QUEUED, None, changes)
            if won is None:
                continue  # another builder was faster; try the next one
            self._log(won.id, f"claimed by builder {info.builder_id} ({info.hostname}) as {builder.name}")
            try:
                return self._task(won)
            except (NotFound, Conflict) as exc:
                self._finish_failed(won, builder.subject, str(exc))
        return None

    def heartbeat(self, build_id: str, builder: Principal, message: str | None, progress: float | None) -> Build:
        """Renew the lease (and record progress); LeaseLost unless `builder` holds the build."""
        _require_builder(builder)
        now = self._clock()
        changes = build_leases.renewed(now, self._settings.lease_s, message, progress)
        renewed = self._store.transition(build_id, BuildStatus.RUNNING, builder.subject, changes)
        if renewed is None:
            raise self._lost(build_id)
        self._store.touch_builder(builder.subject, renewed.builder_id or "", now)
        if message:
            self._log(build_id, message)
        return renewed

    def fail(self, build_id: str, builder: Principal, error: str) -> Build:
        _require_builder(builder)
        build = self._held(build_id, builder.subject)
        return self._finish_failed(build, builder.subject, error or "the builder gave no reason")

    def complete(
        self, build_id: str, builder: Principal, artifact: BinaryIO, report: BuildReport | Mapping[str, Any]
    ) -> Build:
        """Store the artifact; prove it (re-proved here for the ONNX kinds, a registered builder's figures for a plan,
        re-judged against the model's tolerances); sign the manifest of a build that passes; mark it succeeded or
        rejected."""
        _require_builder(builder)
        build = self._held(build_id, builder.subject)
        version = self._version(build)
        report = _report(report)
        reported_figures = checked_parity(report)  # a malformed report is refused before anything is stored
        refusal = plan_refusal(build, self.registration(builder.subject))
        if refusal is not None:
            self._log(build_id, f"delivery refused: {refusal}")
            raise Forbidden(refusal)
        mismatch = hardware_mismatch(build, report)
        if mismatch is not None:
            return self._finish_failed(build, builder.subject, mismatch)
        path, sha, size = self._receive_artifact(artifact)
        stored = self._artifacts.adopt(path, sha)
        tolerances = self._tolerances(version, build)
        reported = judge(reported_figures, tolerances)
        if reproved(build.artifact_kind):
            parity = self._reprove(build, builder, version, stored, tolerances, reported)
            measured_by = MeasuredBy.CONTROL_PLANE
        else:
            parity, measured_by = reported, MeasuredBy.BUILDER
        return self._finish_delivered(build, builder, version, sha, size, parity, measured_by, report)

    def _reprove(
        self,
        build: Build,
        builder: Principal,
        version: ModelVersion,
        artifact: Path,
        tolerances: Tolerances,
        reported: ParityReport,
    ) -> ParityReport:
        """The control plane's own parity measurement; the lease is stretched to outlast it."""
        stretch = {
            "lease_expires_at": lease_until(self._clock(), self._settings.lease_s + self._settings.reproof_timeout_s)
        }
        if self._store.transition(build.id, BuildStatus.RUNNING, builder.subject, stretch) is None:
            raise self._lost(build.id)
        self._log(build.id, "re-proving the artifact on the control plane's onnxruntime against the reference outputs")
        measured = self._prover.prove(version, artifact, tolerances)
        differs = disagreement(measured, reported)
        if differs is not None:
            self._log(build.id, f"builder report disregarded: {differs}")
            log.warning("build %s: %s (builder %s)", build.id, differs, builder.subject)
        return measured

    def _finish_delivered(
        self,
        build: Build,
        builder: Principal,
        version: ModelVersion,
        sha: str,
        size: int,
        parity: ParityReport,
        measured_by: MeasuredBy,
        report: BuildReport,
    ) -> Build:
        now = self._clock()
        figures = figures_of(parity, measured_by)
        hardware_key = hardware_key_of(build, report)
        changes = build_leases.delivered(sha, size, parity, figures, report, hardware_key, now)
        status: BuildStatus = changes["status"]
        if parity.passed:  # the signature vouches for the bytes: only ever on a build that passed
            seen = self._builder(builder.subject, build.builder_id)
            signed_by = BuilderSignature(
                builder.subject, builder.name, build.builder_id, seen.hostname if seen else None
            )
            manifest = compose_manifest(build, version, signed_by, sha, size, figures, report, hardware_key, now)
            changes["manifest"] = manifest
            changes["manifest_signature"] = self._signer.sign(canonical_json(manifest).encode())
        done = self._store.transition(build.id, BuildStatus.RUNNING, builder.subject, changes)
        if done is None:
            raise self._lost(build.id)
        who = "the control plane measured" if measured_by is MeasuredBy.CONTROL_PLANE else "the builder reported"
        self._log(build.id, f"{status.value}: {who} parity {'within' if parity.passed else 'outside'} tolerance")
        for reason in parity.reasons:
            self._log(build.id, f"parity: {reason}")
        log.info(
            "build %s %s (%s %s %s)",
            build.id,
            status.value,
            build.target,
            build.artifact_kind.value,
            build.precision.value,
        )
        return done

    # -- operators --------------------------------------------------------------------------------------------
    def cancel(self, build_id: str, by: Principal) -> Build:
        """A queued (or waiting) or running build becomes `cancelled`; its builder's next call is told to stop."""
        for _attempt in range(3):
            build = self._store.get_build(build_id)
            if build is None:
                raise NotFound(f"build {build_id!r} does not exist")
            refusal = cancel_refusal(build)
            if refusal is not None:
                raise Conflict(refusal)
            changes = build_leases.cancelled(by.name, self._clock())
            done = self._store.transition(build.id, build.status, build.builder_subject, changes)
            if done is not None:
                self._log(build.id, f"cancelled by {by.name} ({build.status.value} until then)")
                return done
        raise Conflict(f"build {build_id} kept changing while being cancelled; try again")

    def registration(self, subject: str) -> BuilderRegistration | None:
        return self._builtin.get(subject) or self._store.registration(subject)

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

    def recover(self, subjects: set[str]) -> int:
        """At startup: builds the given (in-process) builder identities were running when the process stopped are
        re-queued. Only running ones: a cancelled or finished build never comes back."""
        count = 0
        for build in self._store.list_by_status([BuildStatus.RUNNING]):
            if build.builder_subject in subjects and self._requeue(
                build, "the control plane restarted during the build; back in the queue"
            ):
                count += 1
        return count

    def requeue_finished(self, build: Build) -> Build | None:
        """A failed or cancelled build asked for again is queued again."""
        changes = build_leases.requeued() | {"created_at": self._clock()}
        again = self._store.transition(build.id, build.status, build.builder_subject, changes)
        if again is not None:
            self._log(build.id, f"queued again (the previous attempt {build.status.value})")
        return again

    # -- internals --------------------------------------------------------------------------------------------
    def _requeue(self, build: Build, reason: str) -> bool:
        again = self._store.transition(build.id, BuildStatus.RUNNING, build.builder_subject, build_leases.requeued())
        if again is not None:
            self._log(build.id, reason)
            log.warning("build %s: %s", build.id, reason)
        return again is not None

    def _finish_failed(self, build: Build, holder: str, error: str) -> Build:
        done = self._store.transition(build.id, BuildStatus.RUNNING, holder, build_leases.failed(error, self._clock()))
        if done is None:
            raise self._lost(build.id)
        self._log(build.id, f"failed: {error}")
        return done

    def _held(self, build_id: str, holder: str) -> Build:
        build = self._store.get_build(build_id)
        if build is None:
            raise NotFound(f"build {build_id!r} does not exist")
        if build.status is not BuildStatus.RUNNING or build.builder_subject != holder:
            raise self._lost(build_id)
        return build

    def _lost(self, build_id: str) -> LeaseLost | NotFound:
        build = self._store.get_build(build_id)
        if build is None:
            return NotFound(f"build {build_id!r} does not exist")
        return LeaseLost(lost_reason(build))

    def _log(self, build_id: str, message: str) -> None:
        self._store.append_log(build_id, self._clock(), message[:MAX_LOG_LINE])

    def _version(self, build: Build) -> ModelVersion:
        version = self._registry.get_version(build.model, build.version)
        if version is None:
            raise NotFound(f"model {build.model!r} has no version {build.version}")
        return version

    def _tolerances(self, version: ModelVersion, build: Build) -> Tolerances:
        try:
            return version_tolerances(version, build)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc

    def _receive_artifact(self, artifact: BinaryIO) -> tuple[Path, str, int]:
        try:
            path, sha, size = self._artifacts.receive(artifact, self._settings.max_artifact_bytes, ".artifact")
        except ValueError as exc:
            raise InvalidInput(f"artifact: {exc}") from exc
        if size == 0:
            path.unlink(missing_ok=True)
            raise InvalidInput("artifact: the uploaded file is empty")
        return path, sha, size

    def _remote(self, sha256: str) -> RemoteFile:
        path = self._artifacts.path_for(sha256)
        if path is None:
            raise NotFound(f"artifact {sha256} is missing from the artifact store")
        return RemoteFile(
            url=f"{self._settings.base_url}/v1/artifacts/{sha256}", sha256=sha256, size=path.stat().st_size
        )

    def _task(self, build: Build) -> BuildTask:
        """The BuildTask of docs/builds.md for a claimed build."""
        version = self._version(build)
        calibration = None if build.calibration_sha256 is None else self._remote(build.calibration_sha256)
        source, samples = self._remote(version.source_sha256), self._remote(version.samples_sha256)
        return task_of(build, source, samples, calibration, self._tolerances(version, build), self._settings.lease_s)

    def _builder(self, subject: str, label: str | None) -> BuilderRecord | None:
        return next((b for b in self._store.list_builders() if (b.subject, b.builder_id) == (subject, label)), None)


def _require_builder(builder: Principal) -> None:
    """The route's permission table already refused others; the service does not rely on it alone."""
    if not builder.may(Permission.BUILD_WORK):
        raise Forbidden(f"{builder.name} ({builder.role.value}) is not a builder")


def _info(record: BuilderRecord) -> BuilderInfo | None:
    try:
        return BuilderInfo(**record.info)
    except (TypeError, ValueError):
        return None


def _report(report: BuildReport | Mapping[str, Any]) -> BuildReport:
    """A builder's report as the protocol reads it (each part an object); a malformed one is refused with 422."""
    if isinstance(report, BuildReport):
        return report
    try:
        return BuildReport.model_validate(report)
    except ValidationError as exc:
        raise InvalidInput(f"report: {describe_error(exc.errors()[0])}") from exc
