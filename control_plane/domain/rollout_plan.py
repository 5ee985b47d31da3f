"""The rollout planner: from a rollout's state, what the fleet reports and the time, the next state and actions.

`plan` is pure: no I/O, no clock reads, no randomness. The executor (services/rollouts.py) loads its inputs,
stores what it returns in one transaction and then applies the actions (publishes desired states). Everything a
restarted control plane needs to continue is in `RolloutState`, so a rollout resumes where it stood.

Transitions, in short: a step starts (inside the maintenance window), its devices are published in batches of
at most `max_unavailable`, each ends activated, failed or timed out (deadline), then the step bakes while the
telemetry gate watches; it passes (next step, or `succeeded`), or fails -> `paused` or an abort. An abort (gate
or operator) and `rollback` send every device already moved back to what it ran before (`rolling_back`) and end
in `rolled_back` (or `aborted` when nothing had moved or some device could not be restored).

Cost grows with what changed: the executor passes `changed` (the devices whose reports it read); only those, and
in-flight devices whose deadline passed, are observed. Counts per step come from `RolloutState`'s derived counts,
which `with_tracks` keeps up to date, so a pass that touches K devices does O(K) work plus walking one step's
tracks when that step is judged or publishes a batch. `next_attention` says when time alone (a deadline, the end
of a bake, a closed maintenance window) needs a pass.

The planner is split by duty: the values it reads and returns are in rollout_progress.py, how the fleet is cut
into steps and batches in rollout_steps.py, a step's gate in rollout_gates.py, going back in rollout_rollback.py,
the wording of its notes in rollout_notes.py. The executor calls this module (`new_rollout`, `plan`,
`with_generations`) only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from control_plane.domain.rollout_gates import gate_failed, judge_bake, next_step
from control_plane.domain.rollout_notes import (
    FORGOTTEN,
    named_some,
    phase_note,
    published_note,
    status_note,
    with_phase,
)
from control_plane.domain.rollout_progress import (
    BAD,
    DONE,
    IN_FLIGHT,
    Action,
    CommandRefused,
    DeviceStatus,
    DeviceTrack,
    DeviceView,
    EventKind,
    FleetView,
    GateVerdict,
    Note,
    Operator,
    Outcome,
    PreviousModel,
    Publish,
    RolloutPhase,
    RolloutState,
    Target,
    Verdict,
    allowed_commands,
    with_tracks,
)
from control_plane.domain.rollout_rollback import begin_rollback, finish_rollback
from control_plane.domain.rollout_spec import RolloutRequest
from control_plane.domain.rollout_steps import max_unavailable, split_steps, step_order, window_open
from edge_agent.protocol import ApplyPhase, EventStep, ModelHealth, ReportedState


# -- a new rollout --------------------------------------------------------------------------------------------
def new_rollout(
    rollout_id: str,
    spec: RolloutRequest,
    devices: Sequence[DeviceTrack],
    labels_of: Callable[[str], Mapping[str, str]],
    now: datetime,
) -> RolloutState:
    """A rollout before its first plan: every device waiting in its step."""
    ids = sorted(d.device_id for d in devices)
    assignment = split_steps(spec, ids, labels_of)
    tracks = tuple(
        replace(d, step=assignment[d.device_id], status=DeviceStatus.WAITING, updated_at=now)
        for d in sorted(devices, key=lambda d: d.device_id)
    )
    state = RolloutState(
        rollout_id,
        spec.model,
        spec.version,
        spec,
        RolloutPhase.IN_PROGRESS,
        0,
        step_order(assignment),
        None,
        None,
        tracks,
        None,
        now,
        now,
    )
    return replace(state, touched=frozenset(ids))


def with_generations(state: RolloutState, generations: Mapping[str, int]) -> RolloutState:
    """The executor's part: the generation each published device's desired state got."""
    tracks = []
    for device_id, generation in generations.items():
        track = state.track(device_id)
        if track is not None:
            tracks.append(replace(track, generation=generation))
    return with_tracks(state, tracks)


def next_attention(state: RolloutState) -> datetime | None:
    """The instant from which time alone may change the rollout (a device deadline, the end of a bake, a step
    waiting for its maintenance window: at once), or None when only a report or a command can. A pass before it
    with no changed device does nothing."""
    if state.phase.final or state.phase is RolloutPhase.PAUSED:
        return None
    instants = []
    earliest = _earliest_deadline(state)
    if earliest is not None:
        instants.append(earliest)
    if state.phase is RolloutPhase.IN_PROGRESS and state.current_step is not None:
        if state.step_started_at is None:
            instants.append(state.updated_at)  # waiting for its window: every tick looks
        elif state.baked_since is not None:
            instants.append(state.baked_since + timedelta(seconds=state.spec.bake_s))
    return min(instants, default=None)


# -- the planner ----------------------------------------------------------------------------------------------
def plan(
    state: RolloutState,
    fleet: FleetView,
    now: datetime,
    command: Operator | None = None,
    changed: Collection[str] | None = None,
) -> Outcome:
    """The rollout's next state and the actions that get it there. Raises CommandRefused for a command the
    phase does not allow; otherwise never raises. A final phase never changes (except `rollback` of a
    succeeded rollout, which rolls the fleet back).

    `changed`: the devices whose reports changed since the last pass (None: every device, as at a start). The
    others keep their status unless their deadline passed. `fleet` holds at least the changed devices' views, and
    every activated device's of the current step (its gate sums their telemetry)."""
    actions: list[Action] = []
    if command is not None:
        state, actions = _command(state, command, now)
    if state.phase.final:
        return state, actions
    state, observed = _observe(state, fleet, now, changed)
    actions += observed
    if state.phase is RolloutPhase.IN_PROGRESS:
        state, more = _advance(state, fleet, now)
        actions += more
    if state.phase is RolloutPhase.ROLLING_BACK:
        state, more = finish_rollback(state, now)
        actions += more
    return state, actions


def _command(state: RolloutState, command: Operator, now: datetime) -> Outcome:
    if command not in allowed_commands(state.phase):
        raise CommandRefused(f"cannot {command.value} rollout {state.id}: it is {state.phase.value}")
    if command is Operator.PAUSE:
        paused = with_phase(state, RolloutPhase.PAUSED, "paused by the operator", now)
        return paused, [Note(EventKind.PAUSED, "paused by the operator", step=state.current_step), phase_note(paused)]
    if command is Operator.RESUME:
        return _resume(state, now)
    reason = "aborted by the operator" if command is Operator.ABORT else "rolled back by the operator"
    return begin_rollback(state, reason, now)


def _resume(state: RolloutState, now: datetime) -> Outcome:
    step = state.current_step
    resumed = replace(with_phase(state, RolloutPhase.IN_PROGRESS, None, now))
    notes: list[Action] = [Note(EventKind.RESUMED, "resumed by the operator", step=step), phase_note(resumed)]
    last = state.verdicts[-1] if state.verdicts else None
    if step is not None and last is not None and last.step == step and last.verdict is Verdict.FAILED:
        # The gate paused this step and the operator looked at it: go on as if it had passed.
        override = GateVerdict(step, Verdict.OVERRIDDEN, f"resumed by the operator after: {last.reason}", now)
        resumed = replace(resumed, verdicts=(*resumed.verdicts, override))
        resumed, more = next_step(resumed, now)
        notes += more
    return resumed, notes


def _observe(state: RolloutState, fleet: FleetView, now: datetime, changed: Collection[str] | None) -> Outcome:
    """The status of every changed device (every device when `changed` is None) from its latest report, and of
    every in-flight device whose deadline passed."""
    deadline = timedelta(seconds=state.spec.device_deadline_s)
    if changed is None:
        candidates: Sequence[DeviceTrack] = state.devices
    else:
        found = (state.track(d) for d in changed)
        seen = {t.device_id: t for t in found if t is not None}
        seen.update((t.device_id, t) for t in _late(state, now))
        candidates = sorted(seen.values(), key=lambda t: t.device_id)
    tracks: list[DeviceTrack] = []
    notes: list[Action] = []
    for track in candidates:
        new = _device_status(state, track, fleet.get(track.device_id), now, deadline)
        if new is not None and (new.status, new.reason) != (track.status, track.reason):
            new = replace(new, updated_at=now)
            tracks.append(new)
            notes.append(status_note(new))
    if not notes:
        return state, []
    return with_tracks(state, tracks, updated_at=now), notes


def _earliest_deadline(state: RolloutState) -> datetime | None:
    """When the first in-flight device's deadline passes (or a moment before: a pass then finds none late)."""
    since = state.in_flight_since() if state.count(IN_FLIGHT) else None
    return None if since is None else since + timedelta(seconds=state.spec.device_deadline_s)


def due_devices(state: RolloutState, now: datetime) -> list[str]:
    """The in-flight devices whose deadline passed at `now` (the executor reads their views with the changed)."""
    return [t.device_id for t in _late(state, now)]


def _late(state: RolloutState, now: datetime) -> list[DeviceTrack]:
    """The in-flight devices whose deadline passed; walks the tracks only once the earliest deadline is due."""
    earliest = _earliest_deadline(state)
    if earliest is None or now < earliest:
        return []
    state.refresh_in_flight_since()
    deadline = timedelta(seconds=state.spec.device_deadline_s)
    return [t for t in state.devices if t.status in IN_FLIGHT and t.published_at and now >= t.published_at + deadline]


def _device_status(
    state: RolloutState, track: DeviceTrack, view: DeviceView | None, now: datetime, deadline: timedelta
) -> DeviceTrack | None:
    if track.published_at is None:
        return None
    if track.generation is None:
        return _never_sent(state, track, now >= track.published_at + deadline)
    reported = view.reported if view is not None else None
    late = now >= track.published_at + deadline
    silent = "" if view is None or view.online else " (offline)"
    if track.status in (DeviceStatus.IN_PROGRESS, DeviceStatus.TIMED_OUT):
        if _serving(reported, track.generation, state.model, state.version):
            return replace(track, status=DeviceStatus.ACTIVATED, reason=None)
        failure = _failed_apply(reported, track.generation) or _undelivered(view, track.generation)
        if failure is not None:
            return replace(track, status=DeviceStatus.FAILED, reason=failure)
        if track.status is DeviceStatus.IN_PROGRESS and late:
            why = f"not activated within {state.spec.device_deadline_s:g} s{silent}"
            return replace(track, status=DeviceStatus.TIMED_OUT, reason=why)
    elif track.status is DeviceStatus.RESTORING:
        if _restored(reported, track.generation, state.model, track.previous):
            return replace(track, status=DeviceStatus.RESTORED, reason=None)
        failure = _failed_apply(reported, track.generation) or _undelivered(view, track.generation)
        if failure is not None:
            return replace(track, status=DeviceStatus.RESTORE_FAILED, reason=failure)
        if late:
            why = f"not restored within {state.spec.device_deadline_s:g} s{silent}"
            return replace(track, status=DeviceStatus.RESTORE_FAILED, reason=why)
    return None


def _serving(reported: ReportedState | None, generation: int, model: str, version: int) -> bool:
    return (
        reported is not None
        and reported.applied_generation >= generation
        and any(m.name == model and m.version == version and m.health is ModelHealth.SERVING for m in reported.models)
    )


def _restored(reported: ReportedState | None, generation: int, model: str, previous: PreviousModel | None) -> bool:
    if reported is None or reported.applied_generation < generation:
        return False
    if previous is None:
        return all(m.name != model for m in reported.models)
    return _serving(reported, generation, model, previous.version)


def _never_sent(state: RolloutState, track: DeviceTrack, late: bool) -> DeviceTrack | None:
    """A device published to whose desired state could not be made (it was forgotten meanwhile, or its build
    vanished): nothing can answer, so it fails at its deadline instead of holding the rollout forever."""
    if track.status not in IN_FLIGHT or not late:
        return None
    status = DeviceStatus.RESTORE_FAILED if track.status is DeviceStatus.RESTORING else DeviceStatus.TIMED_OUT
    why = f"no desired state could be sent to it within {state.spec.device_deadline_s:g} s (see the server's log)"
    return replace(track, status=status, reason=why)


def _failed_apply(reported: ReportedState | None, generation: int) -> str | None:
    """Why the device failed (or refused: step `rejected`, e.g. a signature it cannot verify) this generation."""
    last = reported.last_apply if reported is not None else None
    if last is not None and last.generation == generation and last.phase is ApplyPhase.FAILED:
        why = last.reason or "the device reported a failed apply"
        return f"refused by the device: {why}" if last.step is EventStep.REJECTED else why
    return None


def _undelivered(view: DeviceView | None, generation: int) -> str | None:
    if view is not None and view.undelivered is not None and view.undelivered[0] == generation:
        return view.undelivered[1]
    return None


# -- moving forward -------------------------------------------------------------------------------------------
def _advance(state: RolloutState, fleet: FleetView, now: datetime) -> Outcome:
    actions: list[Action] = []
    while state.phase is RolloutPhase.IN_PROGRESS and state.current_step is not None:
        before = state
        state, more = _step(state, fleet, now)
        actions += more
        if state.step_index == before.step_index or state.phase is not RolloutPhase.IN_PROGRESS:
            break
    return state, actions


def _step(state: RolloutState, fleet: FleetView, now: datetime) -> Outcome:
    step = str(state.current_step)
    actions: list[Action] = []
    if state.step_started_at is None:
        if not window_open(state.spec.maintenance_window, now):
            return state, []
        state, actions = _start_step(state, step, now)
    gate = state.spec.gate_for(step)
    total = sum(state.step_counts(step).values())
    bad = state.count(BAD, step)
    allowed = gate.max_failed.of(total)
    if bad > allowed:
        failed = [
            f"{t.device_id}: {t.reason or t.status.value}" for t in state.devices if t.step == step and t.status in BAD
        ]
        why = f"{bad} of {total} device(s) failed or timed out (allowed {allowed}): {named_some(failed)}"
        return gate_failed(state, step, gate, why, now, actions)
    state, published = _publish_batch(state, step, now)
    actions += published
    if state.count(DONE, step) < total:
        return state, actions
    if state.baked_since is None:
        state = replace(state, baked_since=now, updated_at=now)
    return judge_bake(state, step, gate, fleet, now, actions)


def _start_step(state: RolloutState, step: str, now: datetime) -> Outcome:
    waiting = [t for t in state.devices if t.step == step and t.status is DeviceStatus.WAITING]
    tracks = [replace(t, status=DeviceStatus.PENDING, updated_at=now) for t in waiting]
    count = sum(state.step_counts(step).values())
    started = with_tracks(state, tracks, step_started_at=now, baked_since=None, updated_at=now)
    note = Note(EventKind.STEP_STARTED, f"step {step} started: {count} device(s)", step=step, data={"devices": count})
    return started, [note]


def _publish_batch(state: RolloutState, step: str, now: datetime) -> Outcome:
    """Publish the step's pending devices while the rollout has fewer than `max_unavailable` in progress."""
    bound = max_unavailable(state.spec, len(state.devices))
    free = max(0, bound - state.count([DeviceStatus.IN_PROGRESS]))
    if not free or not state.count([DeviceStatus.PENDING], step):
        return state, []
    chosen = [t for t in state.devices if t.step == step and t.status is DeviceStatus.PENDING][:free]
    actions: list[Action] = []
    tracks = []
    for t in chosen:
        t = replace(t, status=DeviceStatus.IN_PROGRESS, generation=None, published_at=now, reason=None, updated_at=now)
        actions += [Publish(t.device_id, Target.INSTALL), published_note(t, Target.INSTALL)]
        tracks.append(t)
    return with_tracks(state, tracks, updated_at=now), actions


# -- a device forgotten while the rollout holds it ------------------------------------------------------------


def forget_device(state: RolloutState, device_id: str, now: datetime) -> Outcome:
    """The operator forgot a device this rollout holds: it stops waiting for it. A device still to be moved or
    being moved counts as failed (its step's gate judges that), one being restored as not restored; one already
    done keeps its status but is never published to again (an abort cannot restore a device that is gone)."""
    track = state.track(device_id)
    if track is None or state.phase.final:
        return state, []
    if track.status is DeviceStatus.RESTORING:
        status = DeviceStatus.RESTORE_FAILED
    elif track.status in (DeviceStatus.WAITING, DeviceStatus.PENDING, DeviceStatus.IN_PROGRESS):
        status = DeviceStatus.FAILED
    elif track.status is DeviceStatus.ACTIVATED or track.status in BAD:
        status = DeviceStatus.RESTORE_FAILED if state.phase is RolloutPhase.ROLLING_BACK else track.status
    else:
        return state, []
    gone = replace(track, status=status, reason=FORGOTTEN, updated_at=now)
    forgotten = with_tracks(state, [gone], updated_at=now)
    return forgotten, [status_note(gone)]
