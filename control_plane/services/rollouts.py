"""Rollouts: pick builds for the selected devices, issue signed desired states, follow device reports.

Decisions are the pure functions of `control_plane.domain.rollouts`; this service loads their inputs, stores
their results, and publishes. It stores a device's desired state before publishing it, so a restart (or a broker
that lost its retained messages) republishes exactly what was decided.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence

from control_plane.domain.artifacts import ArtifactWish, hardware_key_of, provider_options
from control_plane.domain.errors import Conflict, InvalidInput, NotFound
from control_plane.domain.registry import Build, BuildStatus, ModelVersion
from control_plane.domain.rollouts import (
    DesiredUpdate,
    DevicePlan,
    DeviceRolloutStatus,
    PlanError,
    Rollout,
    RolloutDevice,
    RolloutPhase,
    RolloutStrategy,
    compose_desired,
    mark_published,
    plan_all_at_once,
    refresh_rollout,
    select_devices,
    supersede,
)
from control_plane.domain.selectors import Selector
from control_plane.services.ports import Artifacts, BuildStore, Clock, FleetStore, Publisher, RegistryStore
from edge_agent.protocol import (
    ArtifactChoice,
    ArtifactRef,
    HardwareFacts,
    MessageKind,
    ModelAssignment,
    RuntimeOptions,
    SelfTestSpec,
    Signer,
    Topics,
    seal,
)
from model_builds.catalog import Catalog
from model_builds.kinds import Precision
from model_builds.planner import Tolerances

log = logging.getLogger(__name__)


class RolloutService:
    def __init__(
        self,
        fleet: FleetStore,
        registry: RegistryStore,
        builds: BuildStore,
        artifacts: Artifacts,
        catalog: Catalog,
        signer: Signer,
        publisher: Publisher,
        topics: Topics,
        clock: Clock,
        base_url: str,
    ) -> None:
        self._fleet = fleet
        self._registry = registry
        self._builds = builds
        self._artifacts = artifacts
        self._catalog = catalog
        self._signer = signer
        self._publisher = publisher
        self._topics = topics
        self._clock = clock
        self._base_url = base_url.rstrip("/")
        self._lock = threading.Lock()  # generations and statuses change one decision at a time

    def list_rollouts(self) -> list[Rollout]:
        return self._fleet.list_rollouts()

    def get_rollout(self, rollout_id: str) -> Rollout:
        rollout = self._fleet.get_rollout(rollout_id)
        if rollout is None:
            raise NotFound(f"rollout {rollout_id!r} does not exist")
        return rollout

    def create(
        self,
        model: str,
        version: int,
        selector: Selector,
        strategy: RolloutStrategy,
        wish: ArtifactWish = ArtifactWish(),
    ) -> Rollout:
        found = self._registry.get_version(model, version)
        if found is None:
            raise NotFound(f"model {model!r} has no version {version}")
        with self._lock:
            plans = self._plan(found, selector, wish)
            rollout, updates = self._decide(found, selector, strategy, plans)
            self._fleet.create_rollout(rollout, updates)
            self._supersede_older(rollout)
            for update in updates:
                self._publish(update)
            reported = {p.device.id: p.device.reported for p in plans}
            rollout = mark_published(rollout, reported, self._clock())
            self._fleet.save_rollout_state(rollout)
        log.info("rollout %s: %s v%s to %d device(s)", rollout.id, model, version, len(updates))
        return rollout

    def device_reported(self, device_id: str) -> None:
        """Re-derive the statuses of the open rollouts that include this device."""
        with self._lock:
            device = self._fleet.get_device(device_id)
            if device is None:
                return
            for rollout in self._fleet.list_rollouts(only_device=device_id, only_open=True):
                updated = refresh_rollout(rollout, device_id, device.reported, self._clock())
                if updated is not rollout:
                    self._fleet.save_rollout_state(updated)

    def republish_all(self) -> int:
        """Publish every device's stored desired state again (after the broker link comes up)."""
        count = 0
        for device_id, signed in self._fleet.list_desired():
            if self._publisher.publish(
                self._topics.desired(device_id), seal(MessageKind.DESIRED, device_id, signed, self._clock())
            ):
                count += 1
        return count

    # -- steps ------------------------------------------------------------------------------------------------
    def _plan(self, version: ModelVersion, selector: Selector, wish: ArtifactWish) -> list[DevicePlan]:
        devices = select_devices(self._fleet.list_devices(), selector)
        builds = [
            b for b in self._builds.list_builds(version.model, version.version) if b.status is BuildStatus.SUCCEEDED
        ]
        preferences = {t.name: [str(k.value) for k in t.runtime.preference] for t in self._catalog.all()}
        try:
            return plan_all_at_once(devices, builds, preferences, wish)
        except PlanError as exc:
            if exc.missing_targets:
                raise Conflict(str(exc)) from exc
            raise InvalidInput(str(exc)) from exc

    def _decide(
        self, version: ModelVersion, selector: Selector, strategy: RolloutStrategy, plans: Sequence[DevicePlan]
    ) -> tuple[Rollout, list[DesiredUpdate]]:
        now = self._clock()
        rollout_id = uuid.uuid4().hex[:16]
        samples = self._samples_ref(version)
        updates = []
        rows = []
        for plan in plans:
            assignment = self._assignment(version, plan, samples)
            desired = compose_desired(
                plan.device.id, plan.device.desired_document, assignment, plan.generation, now, rollout_id
            )
            updates.append(DesiredUpdate(plan.device.id, plan.generation, self._signer.sign_desired(desired)))
            rows.append(
                RolloutDevice(
                    plan.device.id,
                    plan.build.target,
                    plan.build.id,
                    plan.generation,
                    DeviceRolloutStatus.PENDING,
                    None,
                    now,
                )
            )
        rollout = Rollout(
            rollout_id,
            version.model,
            version.version,
            selector,
            strategy,
            RolloutPhase.IN_PROGRESS,
            now,
            now,
            tuple(rows),
        )
        return rollout, updates

    def _samples_ref(self, version: ModelVersion) -> ArtifactRef:
        path = self._artifacts.path_for(version.samples_sha256)
        if path is None:
            raise Conflict(f"the samples of {version.model} v{version.version} are missing from the artifact store")
        return ArtifactRef(
            url=self._url(version.samples_sha256), sha256=version.samples_sha256, size=path.stat().st_size
        )

    def _tolerances(self, version: ModelVersion, build: Build) -> Tolerances:
        """The self-test tolerances of the chosen build's precision (with the model's overrides)."""
        try:
            return Tolerances.from_overrides(Precision(build.precision), version.tolerances)
        except ValueError as exc:
            raise Conflict(f"{version.model} v{version.version}: tolerances: {exc}") from exc

    def _runtime(self, build: Build, facts: HardwareFacts | None) -> RuntimeOptions:
        spec = self._catalog.get(build.target)
        providers = list(spec.runtime.providers)[:8] if spec else []
        options = provider_options(spec.provider_options if spec else {}, build.target, facts, build.precision)
        return RuntimeOptions(precision=build.precision, providers=providers, provider_options=options)

    def _artifact(self, build: Build) -> ArtifactRef:
        if build.artifact_sha256 is None or not build.artifact_size:
            raise Conflict(f"build {build.id} has no artifact")
        return ArtifactRef(url=self._url(build.artifact_sha256), sha256=build.artifact_sha256, size=build.artifact_size)

    def _fallback(self, version: ModelVersion, build: Build, facts: HardwareFacts | None) -> ArtifactChoice:
        tolerances = self._tolerances(version, build)
        return ArtifactChoice(
            build_id=build.id,
            artifact_kind=build.artifact_kind,
            artifact=self._artifact(build),
            runtime=self._runtime(build, facts),
            hardware_key=hardware_key_of(build) if build.artifact_kind == "tensorrt-plan" else None,
            atol=tolerances.atol,
            rtol=tolerances.rtol,
        )

    def _assignment(self, version: ModelVersion, plan: DevicePlan, samples: ArtifactRef) -> ModelAssignment:
        build = plan.build
        facts = plan.device.hardware
        tolerances = self._tolerances(version, build)
        return ModelAssignment(
            name=version.model,
            version=version.version,
            build_id=build.id,
            target=build.target,
            artifact_kind=build.artifact_kind,
            artifact=self._artifact(build),
            selftest=SelfTestSpec(artifact=samples, atol=tolerances.atol, rtol=tolerances.rtol),
            runtime=self._runtime(build, facts),
            hardware_key=hardware_key_of(build) if build.artifact_kind == "tensorrt-plan" else None,
            fallback=None if plan.fallback is None else self._fallback(version, plan.fallback, facts),
        )

    def _supersede_older(self, rollout: Rollout) -> None:
        moved = [d.device_id for d in rollout.devices]
        for older in self._fleet.list_rollouts(only_open=True):
            if older.id != rollout.id and older.model == rollout.model:
                updated = supersede(older, moved, rollout.id, self._clock())
                if updated is not older:
                    self._fleet.save_rollout_state(updated)

    def _publish(self, update: DesiredUpdate) -> None:
        payload = seal(MessageKind.DESIRED, update.device_id, update.signed, self._clock())
        if not self._publisher.publish(self._topics.desired(update.device_id), payload):
            log.warning(
                "desired state for %s queued: the broker link is down; it goes out on reconnect", update.device_id
            )

    def _url(self, sha256: str) -> str:
        return f"{self._base_url}/v1/artifacts/{sha256}"
