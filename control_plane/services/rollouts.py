"""Rollouts: create them, and execute their plans. One executor applies what the pure planner decides.

A pass runs the open rollouts whose devices changed (the executor says which) or whose `next_attention` passed: it
reads the changed devices' small columns in bulk (FleetStore.device_facts; their reports are handed over by the
fleet service with the change, read back only when not; telemetry only when a gate watches it), calls
`rollout_plan.plan` with their views, composes the signed desired states the `Publish` actions ask for
(services/rollout_compose.py, from the builds chosen once at create time), stores the new state + the changed tracks
+ desired states + events in ONE transaction, and only then publishes. The open rollouts, which rollout holds each
device, and the devices' views are kept in memory and rebuilt from the database at start: a control plane killed at
any moment restarts from the stored state; what was decided is stored (and republished when the broker link comes
up), what was not is decided again. Nothing here lists the fleet or queries per device in a pass; only `create`
(selecting devices) and `republish_all` (after a reconnect, a page at a time) read the whole fleet.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from control_plane.domain.artifacts import ArtifactWish
from control_plane.domain.errors import Conflict, InvalidInput, NotFound
from control_plane.domain.fleet import Device, DeviceFacts, Presence, presence
from control_plane.domain.ingest import DeviceChange, as_changes
from control_plane.domain.paging import Page, check_limit, page_of, parse_time_cursor, time_cursor
from control_plane.domain.registry import BuildStatus, ModelVersion
from control_plane.domain.rollout_events import NewEvent, RolloutEventRecord
from control_plane.domain.rollout_gates import GateReading, readings
from control_plane.domain.rollout_plan import (
    due_devices,
    forget_device,
    new_rollout,
    plan,
    with_generations,
)
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
    RolloutPhase,
    RolloutState,
    settled,
)
from control_plane.domain.rollout_spec import RolloutRequest
from control_plane.domain.rollouts import DesiredUpdate, DevicePlan, PlanError, plan_all_at_once
from control_plane.domain.selectors import Selector
from control_plane.domain.step_states import Seen, Wait, in_flight, waits
from control_plane.domain.telemetry import ModelWindow, baseline_window, new_version_window
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
from control_plane.services.rollout_compose import Composer
from control_plane.services.rollout_memory import RolloutMemory, Shown
from edge_agent.protocol import MessageKind, ModelHealth, ReportedState, Signer, Topics, seal
from edge_agent.protocol.vocabulary import ArtifactKind, Channel, Precision
from model_builds.catalog import Catalog

log = logging.getLogger(__name__)

DEFAULT_PAGE = 100
MAX_PAGE = 1000
REPUBLISH_PAGE = 500  # devices whose desired states are read and republished per turn of the lock


class PushChannel(Protocol):
    """Delivers desired states to devices on the Ansible channel (services.ansible_push); returns at once."""

    def deploy(self, rollout_id: str, updates: Sequence[DesiredUpdate]) -> None: ...


@dataclass(frozen=True)
class RolloutPage:
    """A rollout as shown: its state without the tracks, counts per step, one page of its devices."""

    state: RolloutState
    devices: list[DeviceTrack]
    next_cursor: str | None
    as_of: datetime | None = None  # the server's time of the answer (a bake's countdown is measured from it)
    waits: tuple[Wait, ...] = ()  # the first in-flight devices and why each has not answered yet
    readings: tuple[GateReading, ...] = ()  # the current step's gate values against their thresholds


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
        self._artifacts = artifacts
        self._base_url = base_url
        self._lock = threading.RLock()  # one decision at a time: generations and states change in order
        self._memory: RolloutMemory | None = None  # loaded on first use
        self._shown = Shown()  # what readers see, without waiting for a pass

    # -- queries ----------------------------------------------------------------------------------------------
    def rollouts_page(self, limit: int, cursor: str | None = None) -> Page[RolloutState]:
        """Up to `limit` rollouts without their tracks (with their counts per step), newest first, after `cursor`."""
        try:
            check_limit(limit)
            after = None if cursor is None else parse_time_cursor(cursor)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        found = self._store.page_summaries(after, limit + 1)
        return page_of(found, limit, lambda s: time_cursor(s.created_at, s.id))

    def get_rollout(self, rollout_id: str) -> RolloutState:
        """The whole rollout, every track included (O(devices): the API pages instead, `rollout_page`)."""
        state = self._store.get(rollout_id)
        if state is None:
            raise NotFound(f"rollout {rollout_id!r} does not exist")
        return state

    def rollout_page(self, rollout_id: str, limit: int = DEFAULT_PAGE, cursor: str | None = None) -> RolloutPage:
        """The rollout with its counts and up to `limit` devices after device `cursor`."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
        state = self._store.summary(rollout_id)
        if state is None:
            raise NotFound(f"rollout {rollout_id!r} does not exist")
        tracks = self._store.page_devices(rollout_id, cursor, limit + 1)
        more = len(tracks) > limit
        now = self._clock()
        waits, gate = self._live(rollout_id, now)
        return RolloutPage(state, tracks[:limit], tracks[limit - 1].device_id if more else None, now, waits, gate)

    def phase_of(self, rollout_id: str) -> RolloutPhase:
        found = self._store.phase(rollout_id)
        if found is None:
            raise NotFound(f"rollout {rollout_id!r} does not exist")
        return found

    def events_since(self, rollout_id: str, after_id: int = 0, limit: int = 1000) -> list[RolloutEventRecord]:
        """The rollout's events with an id above `after_id`, oldest first (the SSE stream's source)."""
        self.phase_of(rollout_id)
        return self._store.events_since(rollout_id, after_id, limit)

    # -- commands ---------------------------------------------------------------------------------------------
    def create(self, request: RolloutRequest) -> RolloutState:
        found = self._registry.get_version(request.model, request.version)
        if found is None:
            raise NotFound(f"model {request.model!r} has no version {request.version}")
        with self._lock:
            now = self._clock()
            devices = self._fleet.select_devices(_selector(request))
            plans = self._choose_builds(found, devices, _wish(request))
            self._refuse_overlap([p.device.id for p in plans])
            tracks = [_track(p, request.model, now) for p in plans]
            labels = {p.device.id: p.device.labels for p in plans}
            try:
                state = new_rollout(uuid.uuid4().hex[:16], request, tracks, lambda d: labels[d], now)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from exc
            steps = ", ".join(f"{s} ({sum(state.step_counts(s).values())})" for s in state.steps)
            created = Note(EventKind.CREATED, f"{request.model} v{request.version} to {len(tracks)} device(s): {steps}")
            self._store.save(state, events=[NewEvent.of(created, now)])
            state = settled(state)
            self._remembered().remember(state)
            self._seed_views(state, {p.device.id: p.device for p in plans}, now)
            state = self._run(state, now, None, {})
        log.info("rollout %s: %s v%s to %d device(s)", state.id, request.model, request.version, len(tracks))
        return state

    def command(self, rollout_id: str, command: Operator) -> RolloutState:
        """pause | resume | abort | rollback; Conflict (naming the phase) when the phase does not allow it."""
        with self._lock:
            state = self._remembered().open.get(rollout_id) or self.get_rollout(rollout_id)
            if command is Operator.ROLLBACK:
                self._refuse_stale_rollback(state)
            try:
                return self._run(state, self._clock(), command, {})
            except CommandRefused as exc:
                raise Conflict(str(exc)) from exc

    def tick(
        self, now: datetime | None = None, changed: Collection[str] | Mapping[str, DeviceChange] | None = None
    ) -> int:
        """One executor pass; how many rollouts changed. `changed`: the devices that changed since the last pass,
        with what changed (as the fleet service hands it over; bare ids: their reports are read again); their
        rollouts run, with the rollouts whose `next_attention` passed. None: every open rollout runs and observes
        every device (at start, after a push, on the executor's resync). Tests call it with a fake `now`."""
        count = 0
        with self._lock:
            at = now or self._clock()
            memory = self._remembered()
            for rollout_id, devices in memory.due(None if changed is None else as_changes(changed), at).items():
                state = memory.open[rollout_id]
                try:
                    if self._run(state, at, None, devices) is not state:
                        count += 1
                except Exception:
                    log.exception("rollout %s: the executor pass failed; retried on the next tick", state.id)
        return count

    def republish_all(self) -> int:
        """Publish every MQTT device's stored desired state again (after the broker link comes up), a page of
        devices at a time under the service's lock: a pass never publishes a newer generation between this reading
        a device's document and publishing it (the older one would become the retained message)."""
        count, after = 0, None
        while True:
            with self._lock:
                page = self._fleet.desired_page(after, REPUBLISH_PAGE)
                for device_id, signed in page:
                    if signed is not None and self._publisher.publish(
                        self._topics.desired(device_id), seal(MessageKind.DESIRED, device_id, signed, self._clock())
                    ):
                        count += 1
            if len(page) < REPUBLISH_PAGE:
                return count
            after = page[-1][0]

    # -- the executor -----------------------------------------------------------------------------------------
    def _run(
        self,
        state: RolloutState,
        now: datetime,
        command: Operator | None,
        changes: Mapping[str, DeviceChange] | None,
    ) -> RolloutState:
        """One decision about a rollout, then shown to readers (`Shown`) whatever it decided."""
        new = self._decide(state, now, command, changes)
        self._shown.show(self._remembered(), state.id)
        return new

    def _decide(
        self,
        state: RolloutState,
        now: datetime,
        command: Operator | None,
        changes: Mapping[str, DeviceChange] | None,
    ) -> RolloutState:
        views = self._views(state, now, changes)
        new, actions = plan(state, views, now, command, None if changes is None else frozenset(changes))
        if new == state and not actions:
            return state
        publishes = [a for a in actions if isinstance(a, Publish)]
        devices = self._fleet.get_devices([a.device_id for a in publishes]) if publishes else {}
        assignments = AssignmentFactory(self._artifacts, self._catalog, self._base_url)  # one per pass
        composer = Composer(self._registry, self._builds, assignments, self._signer)
        updates = [u for a in publishes if (u := composer.compose(new, a, devices.get(a.device_id), now)) is not None]
        new = with_generations(new, {u.device_id: u.generation for u in updates})
        events = [NewEvent.of(a, now) for a in actions if isinstance(a, Note)]
        tracks = [t for d in sorted(new.touched) if (t := new.track(d)) is not None]
        self._store.save(new, updates, events, tracks=tracks)
        new = settled(new)
        self._remembered().remember(new)
        pushed = [u for u in updates if devices[u.device_id].channel is Channel.ANSIBLE]
        for update in updates:
            if devices[update.device_id].channel is not Channel.ANSIBLE:
                self._publish(update)
        if pushed:
            self._deploy(new.id, pushed)
        return new

    def _views(
        self, state: RolloutState, now: datetime, changes: Mapping[str, DeviceChange] | None
    ) -> dict[str, DeviceView]:
        """The rollout's device views, the changed (and deadline-due) ones made again, and every device of the
        current step once (its gate sums their telemetry). The small columns are read in bulk; a report handed over
        with the change is used as it is, a view's report is kept while the device has not reported since, and
        telemetry is read only when a gate watches it."""
        memory = self._remembered()
        known = memory.views.setdefault(state.id, {})
        if changes is None:
            wanted: set[str] = {t.device_id for t in state.devices}
            reread = wanted
        else:
            wanted = {d for d in changes if state.track(d) is not None} | set(due_devices(state, now))
            wanted |= memory.missing_of_step(state)
            handed = {d for d, c in changes.items() if c.reported is not None}
            reread = {d for d in wanted - handed if d not in known or ((c := changes.get(d)) is not None and c.reread)}
        if not wanted:
            return known
        facts = self._fleet.device_facts(wanted)
        stored = self._fleet.reports_of(reread) if reread else {}
        watch = state.spec.watches_telemetry
        windows = self._fleet.telemetry_windows_of(wanted, state.model) if watch else {}
        for device_id in wanted:
            track, fact = state.track(device_id), facts.get(device_id)
            if track is None or fact is None:
                known.pop(device_id, None)  # a forgotten device: no view, only its deadline counts
                continue
            change = changes.get(device_id) if changes is not None else None
            reported: ReportedState | None
            if change is not None and change.reported is not None:
                reported = change.reported
            elif device_id in reread:
                reported = stored.get(device_id)
            else:
                reported = known[device_id].reported
            known[device_id] = self._device_view(state, fact, reported, windows.get(device_id, []), now, track)
        return known

    def _device_view(
        self,
        state: RolloutState,
        device: DeviceFacts | Device,
        reported: ReportedState | None,
        windows: list[ModelWindow],
        now: datetime,
        track: DeviceTrack,
    ) -> DeviceView:
        old = None
        if windows and track.previous is not None and track.previous.version != state.version:
            old = baseline_window(windows, track.previous.version, None)
        return DeviceView(
            online=presence(device, now, self._offline_after) is Presence.ONLINE,
            reported=reported,
            new_telemetry=new_version_window(windows, state.version, track.published_at) if windows else None,
            old_telemetry=old,
            undelivered=_undelivered(device),
        )

    def _seed_views(self, state: RolloutState, devices: Mapping[str, Device], now: datetime) -> None:
        """The first step's device views, made from the devices `create` has just read (their reports with them), so
        that no pass reads every device of the step and its stored report again once the step has started. Later
        steps' views are made when their step starts, as before; so are all of them when a gate watches telemetry
        (their windows are read with them)."""
        step = state.current_step
        if step is None or state.spec.watches_telemetry:
            return
        views = self._remembered().views.setdefault(state.id, {})
        for track in state.devices:
            if track.step == step and (device := devices.get(track.device_id)) is not None:
                views[track.device_id] = self._device_view(state, device, device.reported, [], now, track)

    def _remembered(self) -> RolloutMemory:
        if self._memory is None:
            self._memory = RolloutMemory(self._store.list_rollouts(only_open=True))
        return self._memory

    # -- helpers ----------------------------------------------------------------------------------------------
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
        memory = self._remembered()
        for other_id, shared in memory.holders(device_ids).items():
            other = memory.open[other_id]
            raise Conflict(
                f"devices {', '.join(sorted(shared))} are in rollout {other.id} ({other.phase.value}); "
                "wait for it to end, or abort it"
            )

    def _refuse_stale_rollback(self, state: RolloutState) -> None:
        """A rollback must not move devices a later rollout moved since (one query over the tracks)."""
        moved = self._store.moved_since(state.id, state.created_at)
        if moved is not None:
            other, shared = moved
            raise Conflict(
                f"cannot rollback rollout {state.id}: devices {', '.join(shared)} were since moved by rollout {other}"
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

    # -- what an open rollout waits for, and the forgotten ------------------------------------------------------
    def _live(self, rollout_id: str, now: datetime) -> tuple[tuple[Wait, ...], tuple[GateReading, ...]]:
        """An open rollout's waits (its first in-flight devices, with their presence read in one query) and its
        current step's gate values from the views the executor holds; nothing for a finished rollout."""
        shown = self._shown.get(rollout_id)  # never waits for a pass (rollout_memory.py)
        if shown is None:
            return (), ()
        state, views = shown
        tracks = in_flight(state)
        facts = self._fleet.device_facts([t.device_id for t in tracks]) if tracks else {}
        seen = {d: Seen(presence(f, now, self._offline_after), f.last_seen) for d, f in facts.items()}
        step = state.current_step
        started = step is not None and state.step_started_at is not None and state.phase is RolloutPhase.IN_PROGRESS
        gate = readings(state, str(step), views) if started else []
        return tuple(waits(state, tracks, seen)), tuple(gate)

    def forget_device(self, device_id: str) -> RolloutState | None:
        """`devices forget --force`: the open rollout holding the device stops waiting for it (the planner's
        `forget_device`), stored with its event before the device is removed; the rollout, or None."""
        with self._lock:
            memory = self._remembered()
            rollout_id = memory.owner.get(device_id)
            state = memory.open.get(rollout_id) if rollout_id is not None else None
            if state is None:
                return None
            now = self._clock()
            new, notes = forget_device(state, device_id, now)
            if new is state:
                return state
            events = [NewEvent.of(a, now) for a in notes if isinstance(a, Note)]
            self._store.save(new, [], events, tracks=[t for d in sorted(new.touched) if (t := new.track(d))])
            new = settled(new)
            memory.remember(new)
            memory.views.get(new.id, {}).pop(device_id, None)
            log.warning("rollout %s: device %s forgotten by the operator; no longer waited for", new.id, device_id)
            return self._run(new, now, None, {})  # it may move on now (a step done, a rollback finished)

    def current_gate_readings(self) -> list[tuple[RolloutState, str, tuple[GateReading, ...]]]:
        """Each rollout in progress with a started step: the step and its gate values, from the views the executor
        holds (no database read; the work grows with the open rollouts' tracks, not the fleet). Added for the gate
        gauges of `/metrics` (issue 13); the same `readings` `edgectl rollout get` shows."""
        found: list[tuple[RolloutState, str, tuple[GateReading, ...]]] = []
        for state, views in self._shown.all():  # never waits for a pass (rollout_memory.py)
            step = state.current_step
            if step is None or state.step_started_at is None or state.phase is not RolloutPhase.IN_PROGRESS:
                continue
            found.append((state, str(step), tuple(readings(state, str(step), views))))
        return found


def _undelivered(device: DeviceFacts | Device) -> tuple[int, str] | None:
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
        fallback_build_id=chosen.fallback.id if chosen.fallback is not None else None,
    )


def previous_model(device: Device, model: str) -> PreviousModel | None:
    """What the device serves of `model` now (what a restore goes back to), from its latest report."""
    reported = device.reported
    for m in reported.models if reported is not None else []:
        if m.name == model and m.health is ModelHealth.SERVING:
            return PreviousModel(m.version, m.build_id)
    return None
