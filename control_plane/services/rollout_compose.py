"""The signed desired states one executor pass publishes, from the builds chosen when the rollout was created.

A `Composer` lives for one pass: the model version and each build are looked up once per pass, not per device,
and nothing is chosen again (the track carries its build and fallback). It never decides what to publish (the
planner does) and never stores or publishes (the executor does).
"""

from __future__ import annotations

import logging
from datetime import datetime

from control_plane.domain.errors import Conflict, ServiceError
from control_plane.domain.fleet import Device
from control_plane.domain.registry import Build, ModelVersion
from control_plane.domain.reports import builds_in
from control_plane.domain.rollout_progress import DeviceTrack, Publish, RolloutState, Target
from control_plane.domain.rollouts import DesiredUpdate, DevicePlan, compose_desired, next_generation
from control_plane.services.desired import AssignmentFactory
from control_plane.services.ports import BuildStore, RegistryStore
from edge_agent.protocol import ModelAssignment, Signer

log = logging.getLogger(__name__)


class Composer:
    def __init__(
        self, registry: RegistryStore, builds: BuildStore, assignments: AssignmentFactory, signer: Signer
    ) -> None:
        self._registry = registry
        self._builds = builds
        self._assignments = assignments
        self._signer = signer
        self._versions: dict[tuple[str, int], ModelVersion | None] = {}
        self._build_cache: dict[str, Build | None] = {}

    def compose(
        self, state: RolloutState, action: Publish, device: Device | None, now: datetime
    ) -> DesiredUpdate | None:
        """The signed desired state a Publish asks for, or None (logged) when it cannot be composed: the device
        then reaches its deadline and counts as timed out / not restored, with the rollout going on."""
        track = state.track(action.device_id)
        if device is None or track is None:
            log.error("rollout %s: device %s vanished", state.id, action.device_id)
            return None
        generation = next_generation(device)
        try:
            assignment: ModelAssignment | str
            if action.target is Target.INSTALL:
                assignment = self._install(state, track, device, generation)
            else:
                assignment = self._restore(state, track, device, generation)
        except ServiceError as exc:
            log.error("rollout %s: cannot compose the %s of %s: %s", state.id, action.target.value, device.id, exc)
            return None
        desired = compose_desired(device.id, device.desired_document, assignment, generation, now, state.id)
        return DesiredUpdate(device.id, generation, self._signer.sign_desired(desired), tuple(builds_in(desired)))

    def _install(self, state: RolloutState, track: DeviceTrack, device: Device, generation: int) -> ModelAssignment:
        version = self._version(state.model, state.version)
        build = self._build(track.build_id)
        if build is None:
            raise Conflict(f"the chosen build {track.build_id} is no longer known")
        fallback = self._build(track.fallback_build_id) if track.fallback_build_id else None
        return self._assignments.assignment(version, DevicePlan(device, build, generation, fallback))

    def _restore(
        self, state: RolloutState, track: DeviceTrack, device: Device, generation: int
    ) -> ModelAssignment | str:
        if track.previous is None:
            return state.model  # the model was not on the device: the restore removes it
        version = self._version(state.model, track.previous.version)
        build = self._build(track.previous.build_id)
        if build is None:
            raise Conflict(f"the previous build {track.previous.build_id} is no longer known")
        return self._assignments.assignment(version, DevicePlan(device, build, generation))

    def _version(self, model: str, number: int) -> ModelVersion:
        key = (model, number)
        if key not in self._versions:
            self._versions[key] = self._registry.get_version(model, number)
        found = self._versions[key]
        if found is None:
            raise Conflict(f"model {model!r} has no version {number}")
        return found

    def _build(self, build_id: str) -> Build | None:
        if build_id not in self._build_cache:
            self._build_cache[build_id] = self._builds.get_build(build_id)
        return self._build_cache[build_id]
