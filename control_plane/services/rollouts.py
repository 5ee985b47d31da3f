"""Rollouts: create them, and execute their plans. One executor applies what the pure planner decides.

Each pass loads a non-final rollout and the fleet view it needs, calls `rollout_plan.plan`, composes the signed
desired states the `Publish` actions ask for, stores the new state + desired states + events in ONE transaction,
and only then publishes. A control plane killed at any moment restarts from the stored state: what was decided
is stored (and republished when the broker link comes up), what was not is decided again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from control_plane.domain.artifacts import ArtifactWish
from control_plane.domain.errors import Conflict, InvalidInput, NotFound, ServiceError
from control_plane.domain.fleet import Device, Presence, presence
from control_plane.domain.registry import BuildStatus, ModelVersion
from control_plane.domain.rollout_events import NewEvent, RolloutEventRecord
from control_plane.domain.rollout_plan import new_rollout, plan, with_generations
from control_plane.domain.rollout_progress import (
    CommandRefused,
    DeviceStatus,
    DeviceTrack,
    DeviceView,
    EventKind,
    Note,
    Operator,
    PreviousModel,
    Publish,
    RolloutState,
    Target,
)
from control_plane.domain.rollout_spec import RolloutRequest
from control_plane.domain.rollouts import (
    DesiredUpdate,
    DevicePlan,
    PlanError,
    compose_desired,
    next_generation,
    plan_all_at_once,
    select_devices,
)
from control_plane.domain.selectors import Selector
from control_plane.domain.telemetry import baseline_window, new_version_window
from control_plane.services.desired import AssignmentFactory
from control_plane.services.ports import (
    Artifacts,
    BuildStore,
    Clock,
    FleetStore,
    Publisher,
    RegistryStore,
    RolloutStore,
)
from edge_agent.protocol import MessageKind, ModelAssignment, ModelHealth, Signer, Topics, seal
from edge_agent.protocol.vocabulary import ArtifactKind, Channel, Precision
from model_builds.catalog import Catalog

log = logging.getLogger(__name__)


class PushChannel(Protocol):
    """Delivers desired states to devices on the Ansible channel (services.ansible_push); returns at once."""

    def deploy(self, rollout_id: str, updates: Sequence[DesiredUpdate]) -> None: ...


class RolloutService:
    def __init__(
        self,
        fleet: FleetStore,
        store: RolloutStore,
        registry: RegistryStore,
        builds: BuildStore,
        artifacts: Artifacts,
        catalog: Catalog,
        signer: Signer,
        publisher: Publisher,
        topics: Topics,
        clock: Clock,
        base_url: str,
        offline_after: timedelta = timedelta(seconds=60),
        push: PushChannel | None = None,
    ) -> None:
        self._fleet = fleet
        self._store = store
        self._registry = registry
        self._builds = builds
        self._catalog = catalog
        self._signer = signer
        self._publisher = publisher
        self._topics = topics
        self._clock = clock
        self._offline_after = offline_after
        self._push = push
        self._assignments = AssignmentFactory(artifacts, catalog, base_url)
        self._lock = threading.RLock()  # one decision at a time: generations and states change in order

    # -- queries ----------------------------------------------------------------------------------------------
    def list_rollouts(self) -> list[RolloutState]:
        return self._store.list_rollouts()

    def get_rollout(self, rollout_id: str) -> RolloutState:
        state = self._store.get(rollout_id)
        if state is None:
            raise NotFound(f"rollout {rollout_id!r} does not exist")
        return state

    def events_since(self, rollout_id: str, after_id: int = 0, limit: int = 1000) -> list[RolloutEventRecord]:
        """The rollout's events with an id above `after_id`, oldest first (the SSE stream's source)."""
        self.get_rollout(rollout_id)
        return self._store.events_since(rollout_id, after_id, limit)

    # -- commands ---------------------------------------------------------------------------------------------
    def create(self, request: RolloutRequest) -> RolloutState:
        found = self._registry.get_version(request.model, request.version)
        if found is None:
            raise NotFound(f"model {request.model!r} has no version {request.version}")
        with self._lock:
            now = self._clock()
            devices = select_devices(self._fleet.list_devices(), _selector(request))
            plans = self._choose_builds(found, devices, _wish(request))
            self._refuse_overlap([p.device.id for p in plans])
            tracks = [_track(p, request.model, now) for p in plans]
            labels = {p.device.id: p.device.labels for p in plans}
            try:
                state = new_rollout(uuid.uuid4().hex[:16], request, tracks, lambda d: labels[d], now)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from exc
            steps = ", ".join(f"{s} ({sum(1 for t in state.devices if t.step == s)})" for s in state.steps)
            created = Note(EventKind.CREATED, f"{request.model} v{request.version} to {len(tracks)} device(s): {steps}")
            self._store.save(state, events=[NewEvent.of(created, now)])
            state = self._run(state, now, None)
        log.info("rollout %s: %s v%s to %d device(s)", state.id, request.model, request.version, len(tracks))
        return state

    def command(self, rollout_id: str, command: Operator) -> RolloutState:
        """pause | resume | abort | rollback; Conflict (naming the phase) when the phase does not allow it."""
        with self._lock:
            state = self.get_rollout(rollout_id)
            if command is Operator.ROLLBACK:
                self._refuse_stale_rollback(state)
            try:
                return self._run(state, self._clock(), command)
            except CommandRefused as exc:
                raise Conflict(str(exc)) from exc

    def tick(self, now: datetime | None = None) -> int:
        """One executor pass over every non-final rollout; how many changed. Tests call it with a fake `now`."""
        changed = 0
        with self._lock:
            at = now or self._clock()
            for state in self._store.list_rollouts(only_open=True):
                try:
                    if self._run(state, at, None) is not state:
                        changed += 1
                except Exception:
                    log.exception("rollout %s: the executor pass failed; retried on the next tick", state.id)
        return changed

    def republish_all(self) -> int:
        """Publish every device's stored desired state again (after the broker link comes up)."""
        count = 0
        pushed = {d.id for d in self._fleet.list_devices() if d.channel is Channel.ANSIBLE}
        for device_id, signed in self._fleet.list_desired():
            if device_id in pushed:
                continue  # the Ansible channel delivered (or failed to deliver) it; MQTT never carries it
            if self._publisher.publish(
                self._topics.desired(device_id), seal(MessageKind.DESIRED, device_id, signed, self._clock())
            ):
                count += 1
        return count

    # -- the executor -----------------------------------------------------------------------------------------
    def _run(self, state: RolloutState, now: datetime, command: Operator | None) -> RolloutState:
        new, actions = plan(state, self._fleet_view(state, now), now, command)
        if new == state and not actions:
            return state
        devices = {d.id: d for d in self._fleet.list_devices()}
        updates = [
            u for a in actions if isinstance(a, Publish) if (u := self._compose(new, a, devices, now)) is not None
        ]
        new = with_generations(new, {u.device_id: u.generation for u in updates})
        events = [NewEvent.of(a, now) for a in actions if isinstance(a, Note)]
        self._store.save(new, updates, events)
        pushed = [u for u in updates if devices[u.device_id].channel is Channel.ANSIBLE]
        for update in updates:
            if devices[update.device_id].channel is not Channel.ANSIBLE:
                self._publish(update)
        if pushed:
            self._deploy(new.id, pushed)
        return new

    def _fleet_view(self, state: RolloutState, now: datetime) -> dict[str, DeviceView]:
        devices = {d.id: d for d in self._fleet.list_devices()}
        view: dict[str, DeviceView] = {}
        for track in state.devices:
            device = devices.get(track.device_id)
            if device is None:
                continue
            windows = self._fleet.telemetry_windows(track.device_id, state.model)
            old = None
            if track.previous is not None and track.previous.version != state.version:
                old = baseline_window(windows, track.previous.version, None)
            view[track.device_id] = DeviceView(
                online=presence(device, now, self._offline_after) is Presence.ONLINE,
                reported=device.reported,
                new_telemetry=new_version_window(windows, state.version, track.published_at),
                old_telemetry=old,
                undelivered=_undelivered(device),
            )
        return view

    def _compose(
        self, state: RolloutState, action: Publish, devices: dict[str, Device], now: datetime
    ) -> DesiredUpdate | None:
        """The signed desired state a Publish asks for, or None (logged) when it cannot be composed: the device
        then reaches its deadline and counts as timed out / not restored, with the rollout going on."""
        device = devices.get(action.device_id)
        track = next(t for t in state.devices if t.device_id == action.device_id)
        if device is None:
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
        return DesiredUpdate(device.id, generation, self._signer.sign_desired(desired))

    def _install(self, state: RolloutState, track: DeviceTrack, device: Device, generation: int) -> ModelAssignment:
        version = self._version(state.model, state.version)
        (chosen,) = self._choose_builds(version, [device], _wish(state.spec))
        build = self._builds.get_build(track.build_id) or chosen.build
        fallback = chosen.fallback if chosen.build.id == build.id else None
        return self._assignments.assignment(version, DevicePlan(device, build, generation, fallback))

    def _restore(
        self, state: RolloutState, track: DeviceTrack, device: Device, generation: int
    ) -> ModelAssignment | str:
        if track.previous is None:
            return state.model  # the model was not on the device: the restore removes it
        version = self._version(state.model, track.previous.version)
        build = self._builds.get_build(track.previous.build_id)
        if build is None:
            raise Conflict(f"the previous build {track.previous.build_id} is no longer known")
        return self._assignments.assignment(version, DevicePlan(device, build, generation))

    # -- helpers ----------------------------------------------------------------------------------------------
    def _version(self, model: str, version: int) -> ModelVersion:
        found = self._registry.get_version(model, version)
        if found is None:
            raise Conflict(f"model {model!r} has no version {version}")
        return found

    def _choose_builds(self, version: ModelVersion, devices: Sequence[Device], wish: ArtifactWish) -> list[DevicePlan]:
        builds = [
            b for b in self._builds.list_builds(version.model, version.version) if b.status is BuildStatus.SUCCEEDED
        ]
        preferences = {t.name: list(t.runtime.preference) for t in self._catalog.all()}
        try:
            return plan_all_at_once(devices, builds, preferences, wish)
        except PlanError as exc:
            if exc.missing_targets:
                raise Conflict(str(exc)) from exc
            raise InvalidInput(str(exc)) from exc

    def _refuse_overlap(self, device_ids: Sequence[str]) -> None:
        wanted = set(device_ids)
        for other in self._store.list_rollouts(only_open=True):
            shared = sorted(wanted & {t.device_id for t in other.devices})
            if shared:
                raise Conflict(
                    f"devices {', '.join(shared)} are in rollout {other.id} ({other.phase.value}); "
                    "wait for it to end, or abort it"
                )

    def _refuse_stale_rollback(self, state: RolloutState) -> None:
        mine = {t.device_id for t in state.devices}
        for other in self._store.list_rollouts():
            shared = sorted(mine & {t.device_id for t in other.devices})
            if other.id != state.id and other.created_at > state.created_at and shared:
                raise Conflict(
                    f"cannot rollback rollout {state.id}: devices {', '.join(shared)} were since moved by "
                    f"rollout {other.id}"
                )

    def _deploy(self, rollout_id: str, updates: Sequence[DesiredUpdate]) -> None:
        if self._push is None:
            names = ", ".join(u.device_id for u in updates)
            log.error(
                "rollout %s: %s are on the Ansible channel, which this control plane cannot reach", rollout_id, names
            )
            return
        self._push.deploy(rollout_id, updates)

    def _publish(self, update: DesiredUpdate) -> None:
        payload = seal(MessageKind.DESIRED, update.device_id, update.signed, self._clock())
        if not self._publisher.publish(self._topics.desired(update.device_id), payload):
            log.warning(
                "desired state for %s queued: the broker link is down; it goes out on reconnect", update.device_id
            )


def _undelivered(device: Device) -> tuple[int, str] | None:
    failure = device.delivery_failure
    return None if failure is None else (failure.generation, failure.reason)


def _selector(request: RolloutRequest) -> Selector:
    return Selector(labels=dict(request.selector.labels), gpu_class=request.selector.gpu_class)


def _wish(request: RolloutRequest) -> ArtifactWish:
    kind = ArtifactKind(request.kind) if request.kind else None
    return ArtifactWish(kind=kind, precision=Precision(request.precision) if request.precision else None)


def _track(chosen: DevicePlan, model: str, now: datetime) -> DeviceTrack:
    return DeviceTrack(
        device_id=chosen.device.id,
        step="",
        status=DeviceStatus.WAITING,
        generation=None,
        published_at=None,
        reason=None,
        previous=previous_model(chosen.device, model),
        target=chosen.build.target,
        build_id=chosen.build.id,
        updated_at=now,
    )


def previous_model(device: Device, model: str) -> PreviousModel | None:
    """What the device serves of `model` now (what a restore goes back to), from its latest report."""
    reported = device.reported
    for m in reported.models if reported is not None else []:
        if m.name == model and m.health is ModelHealth.SERVING:
            return PreviousModel(m.version, m.build_id)
    return None
