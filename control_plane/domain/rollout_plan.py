"""The rollout planner: from a rollout's state, what the fleet reports and the time, the next state and actions.

`plan` is pure: no I/O, no clock reads, no randomness. The executor (services/rollouts.py) loads its inputs,
stores what it returns in one transaction and then applies the actions (publishes desired states). Everything a
restarted control plane needs to continue is in `RolloutState`, so a rollout resumes where it stood.

Transitions, in short: a step starts (inside the maintenance window), its devices are published in batches of
at most `max_unavailable`, each ends activated, failed or timed out (deadline), then the step bakes while the
telemetry gate watches; it passes (next step, or `succeeded`), or fails -> `paused` or an abort. An abort (gate
or operator) and `rollback` send every device already moved back to what it ran before (`rolling_back`) and end
in `rolled_back` (or `aborted` when nothing had moved or some device could not be restored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from control_plane.domain.rollout_spec import (
    WEEKDAYS,
    GateSpec,
    MaintenanceWindow,
    OnFail,
    RolloutRequest,
    StrategyType,
)
from edge_agent.protocol import ApplyPhase, ModelHealth, ReportedState


class RolloutPhase(str, Enum):
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"

    @property
    def final(self) -> bool:
        return self in FINAL_PHASES


FINAL_PHASES = frozenset({RolloutPhase.SUCCEEDED, RolloutPhase.ABORTED, RolloutPhase.ROLLED_BACK})


class DeviceStatus(str, Enum):
    WAITING = "waiting"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    ACTIVATED = "activated"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    RESTORING = "restoring"
    RESTORED = "restored"
    RESTORE_FAILED = "restore_failed"


MOVED = frozenset({DeviceStatus.IN_PROGRESS, DeviceStatus.ACTIVATED, DeviceStatus.FAILED, DeviceStatus.TIMED_OUT})
DONE = frozenset({DeviceStatus.ACTIVATED, DeviceStatus.FAILED, DeviceStatus.TIMED_OUT})
BAD = frozenset({DeviceStatus.FAILED, DeviceStatus.TIMED_OUT})


class Operator(str, Enum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"


class Target(str, Enum):
    INSTALL = "install"
    RESTORE = "restore"


class EventKind(str, Enum):
    CREATED = "created"
    STEP_STARTED = "step_started"
    PUBLISHED = "published"
    DEVICE_STATUS = "device_status"
    GATE_PASSED = "gate_passed"
    GATE_FAILED = "gate_failed"
    PAUSED = "paused"
    RESUMED = "resumed"
    ABORTING = "aborting"
    ROLLING_BACK = "rolling_back"
    RESTORED = "restored"
    PHASE = "phase"


class Verdict(str, Enum):
    PASSED = "passed"
    FAILED = "failed"
    OVERRIDDEN = "overridden"


@dataclass(frozen=True)
class PreviousModel:
    """What a device ran of this model before the rollout (None in a track: the model was not on it)."""

    version: int
    build_id: str


@dataclass(frozen=True)
class DeviceTrack:
    device_id: str
    step: str
    status: DeviceStatus
    generation: int | None
    published_at: datetime | None
    reason: str | None
    previous: PreviousModel | None
    target: str = ""
    build_id: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True)
class GateVerdict:
    step: str
    verdict: Verdict
    reason: str
    at: datetime


@dataclass(frozen=True)
class RolloutState:
    id: str
    model: str
    version: int
    spec: RolloutRequest
    phase: RolloutPhase
    step_index: int
    steps: tuple[str, ...]
    step_started_at: datetime | None
    baked_since: datetime | None
    devices: tuple[DeviceTrack, ...]
    reason: str | None
    created_at: datetime
    updated_at: datetime
    verdicts: tuple[GateVerdict, ...] = ()

    @property
    def current_step(self) -> str | None:
        return self.steps[self.step_index] if self.step_index < len(self.steps) else None


@dataclass(frozen=True)
class TelemetryWindow:
    requests: int
    errors: int
    p99_ms: float | None


@dataclass(frozen=True)
class DeviceView:
    online: bool
    reported: ReportedState | None
    new_telemetry: TelemetryWindow | None = None
    old_telemetry: TelemetryWindow | None = None
    # A push (the Ansible channel) that failed before the agent answered: (generation, reason). The agent reports
    # nothing for that generation, so the failure is known only from the channel.
    undelivered: tuple[int, str] | None = None


FleetView = Mapping[str, DeviceView]


@dataclass(frozen=True)
class Publish:
    device_id: str
    target: Target


@dataclass(frozen=True)
class Note:
    kind: EventKind
    message: str
    device_id: str | None = None
    step: str | None = None
    data: Mapping[str, object] = field(default_factory=dict)


Action = Publish | Note
Outcome = tuple[RolloutState, list[Action]]


class CommandRefused(ValueError):
    """An operator command the rollout's phase does not allow."""


# -- splitting the fleet into steps ---------------------------------------------------------------------------
def split_steps(
    spec: RolloutRequest, device_ids_sorted: Sequence[str], labels_of: Callable[[str], Mapping[str, str]]
) -> dict[str, str]:
    """Which step each device belongs to. Deterministic: the same spec and devices give the same split."""
    strategy = spec.strategy
    if strategy.type is StrategyType.ALL_AT_ONCE or strategy.canary is None:
        return {d: "all" for d in device_ids_sorted}
    total = len(device_ids_sorted)
    wanted = strategy.canary.labels
    candidates = [d for d in device_ids_sorted if all(labels_of(d).get(k) == v for k, v in wanted.items())]
    if not candidates:
        raise ValueError(f"no selected device has the canary labels {wanted}")
    canary = candidates[: strategy.canary.of(total, minimum=1)]
    out = {d: "canary" for d in canary}
    rest = [d for d in device_ids_sorted if d not in out]
    waves = strategy.waves or ()
    for number, wave in enumerate(waves, start=1):
        size = len(rest) if number == len(waves) else wave.of(total)
        out.update({d: f"wave-{number}" for d in rest[:size]})
        rest = rest[size:]
    out.update({d: f"wave-{len(waves) or 1}" for d in rest})
    return out


def step_order(assignment: Mapping[str, str]) -> tuple[str, ...]:
    def key(step: str) -> tuple[int, int]:
        return (0, 0) if step in ("canary", "all") else (1, int(step.rsplit("-", 1)[1]))

    return tuple(sorted(set(assignment.values()), key=key))


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
    return RolloutState(
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


def with_generations(state: RolloutState, generations: Mapping[str, int]) -> RolloutState:
    """The executor's part: the generation each published device's desired state got."""
    if not generations:
        return state
    tracks = tuple(
        replace(t, generation=generations[t.device_id]) if t.device_id in generations else t for t in state.devices
    )
    return replace(state, devices=tracks)


# -- the planner ----------------------------------------------------------------------------------------------
def plan(state: RolloutState, fleet: FleetView, now: datetime, command: Operator | None = None) -> Outcome:
    """The rollout's next state and the actions that get it there. Raises CommandRefused for a command the
    phase does not allow; otherwise never raises. A final phase never changes (except `rollback` of a
    succeeded rollout, which rolls the fleet back)."""
    actions: list[Action] = []
    if command is not None:
        state, actions = _command(state, command, now)
    if state.phase.final:
        return state, actions
    state, observed = _observe(state, fleet, now)
    actions += observed
    if state.phase is RolloutPhase.IN_PROGRESS:
        state, more = _advance(state, fleet, now)
        actions += more
    if state.phase is RolloutPhase.ROLLING_BACK:
        state, more = _finish_rollback(state, now)
        actions += more
    return state, actions


def allowed_commands(phase: RolloutPhase) -> frozenset[Operator]:
    return _ALLOWED.get(phase, frozenset())


_ALLOWED: dict[RolloutPhase, frozenset[Operator]] = {
    RolloutPhase.IN_PROGRESS: frozenset({Operator.PAUSE, Operator.ABORT, Operator.ROLLBACK}),
    RolloutPhase.PAUSED: frozenset({Operator.RESUME, Operator.ABORT, Operator.ROLLBACK}),
    RolloutPhase.SUCCEEDED: frozenset({Operator.ROLLBACK}),
}


def _command(state: RolloutState, command: Operator, now: datetime) -> Outcome:
    if command not in allowed_commands(state.phase):
        raise CommandRefused(f"cannot {command.value} rollout {state.id}: it is {state.phase.value}")
    if command is Operator.PAUSE:
        paused = _phase(state, RolloutPhase.PAUSED, "paused by the operator", now)
        return paused, [Note(EventKind.PAUSED, "paused by the operator", step=state.current_step), _phase_note(paused)]
    if command is Operator.RESUME:
        return _resume(state, now)
    reason = "aborted by the operator" if command is Operator.ABORT else "rolled back by the operator"
    return _begin_rollback(state, reason, now)


def _resume(state: RolloutState, now: datetime) -> Outcome:
    step = state.current_step
    resumed = replace(_phase(state, RolloutPhase.IN_PROGRESS, None, now))
    notes: list[Action] = [Note(EventKind.RESUMED, "resumed by the operator", step=step), _phase_note(resumed)]
    last = state.verdicts[-1] if state.verdicts else None
    if step is not None and last is not None and last.step == step and last.verdict is Verdict.FAILED:
        # The gate paused this step and the operator looked at it: go on as if it had passed.
        override = GateVerdict(step, Verdict.OVERRIDDEN, f"resumed by the operator after: {last.reason}", now)
        resumed = replace(resumed, verdicts=(*resumed.verdicts, override))
        resumed, more = _next_step(resumed, now)
        notes += more
    return resumed, notes


def _observe(state: RolloutState, fleet: FleetView, now: datetime) -> Outcome:
    """Every device's status from its latest report and its deadline."""
    tracks: list[DeviceTrack] = []
    notes: list[Action] = []
    deadline = timedelta(seconds=state.spec.device_deadline_s)
    for track in state.devices:
        view = fleet.get(track.device_id)
        changed = _device_status(state, track, view, now, deadline)
        if changed is not None and (changed.status, changed.reason) != (track.status, track.reason):
            track = replace(changed, updated_at=now)
            notes.append(_status_note(track))
        tracks.append(track)
    if not notes:
        return state, []
    return replace(state, devices=tuple(tracks), updated_at=now), notes


def _device_status(
    state: RolloutState, track: DeviceTrack, view: DeviceView | None, now: datetime, deadline: timedelta
) -> DeviceTrack | None:
    if track.generation is None or track.published_at is None:
        return None
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


def _failed_apply(reported: ReportedState | None, generation: int) -> str | None:
    last = reported.last_apply if reported is not None else None
    if last is not None and last.generation == generation and last.phase is ApplyPhase.FAILED:
        return last.reason or "the device reported a failed apply"
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
    tracks = [t for t in state.devices if t.step == step]
    bad = [t for t in tracks if t.status in BAD]
    allowed = gate.max_failed.of(len(tracks))
    if len(bad) > allowed:
        failures = "; ".join(f"{t.device_id}: {t.reason or t.status.value}" for t in bad)
        why = f"{len(bad)} of {len(tracks)} device(s) failed or timed out (allowed {allowed}): {failures}"
        return _gate_failed(state, step, gate, why, now, actions)
    state, published = _publish_batch(state, step, now)
    actions += published
    if any(t.status not in DONE for t in state.devices if t.step == step):
        return state, actions
    if state.baked_since is None:
        state = replace(state, baked_since=now, updated_at=now)
    return _judge_bake(state, step, gate, fleet, now, actions)


def _start_step(state: RolloutState, step: str, now: datetime) -> Outcome:
    tracks = tuple(
        replace(t, status=DeviceStatus.PENDING, updated_at=now)
        if t.step == step and t.status is DeviceStatus.WAITING
        else t
        for t in state.devices
    )
    count = sum(1 for t in tracks if t.step == step)
    started = replace(state, devices=tracks, step_started_at=now, baked_since=None, updated_at=now)
    note = Note(EventKind.STEP_STARTED, f"step {step} started: {count} device(s)", step=step, data={"devices": count})
    return started, [note]


def _publish_batch(state: RolloutState, step: str, now: datetime) -> Outcome:
    """Publish the step's pending devices while the rollout has fewer than `max_unavailable` in progress."""
    bound = max_unavailable(state.spec, len(state.devices))
    busy = sum(1 for t in state.devices if t.status is DeviceStatus.IN_PROGRESS)
    free = max(0, bound - busy)
    chosen = [t.device_id for t in state.devices if t.step == step and t.status is DeviceStatus.PENDING][:free]
    if not chosen:
        return state, []
    actions: list[Action] = []
    tracks = []
    for t in state.devices:
        if t.device_id in chosen:
            t = replace(t, status=DeviceStatus.IN_PROGRESS, generation=None, published_at=now, reason=None)
            t = replace(t, updated_at=now)
            actions += [Publish(t.device_id, Target.INSTALL), _published_note(t, Target.INSTALL)]
        tracks.append(t)
    return replace(state, devices=tuple(tracks), updated_at=now), actions


def max_unavailable(spec: RolloutRequest, total: int) -> int:
    """The bound on devices of a rollout in progress at once: as asked; by default all of them for
    all-at-once, else 1 device or 10%, whichever is larger."""
    if spec.max_unavailable is not None:
        return spec.max_unavailable.of(total, minimum=1)
    if spec.strategy.type is StrategyType.ALL_AT_ONCE:
        return max(1, total)
    return max(1, -(-total // 10))


def _judge_bake(
    state: RolloutState, step: str, gate: GateSpec, fleet: FleetView, now: datetime, actions: list[Action]
) -> Outcome:
    activated = [t.device_id for t in state.devices if t.step == step and t.status is DeviceStatus.ACTIVATED]
    summary = summarise(fleet, activated)
    if summary.requests >= max(gate.min_requests, 1):
        tripped = telemetry_trip(gate, summary)
        if tripped is not None:
            return _gate_failed(state, step, gate, tripped, now, actions)
    baked = state.baked_since is not None and now >= state.baked_since + timedelta(seconds=state.spec.bake_s)
    if not baked:
        return state, actions
    if summary.requests < gate.min_requests:
        need = gate.min_requests
        why = f"only {summary.requests} request(s) of v{state.version} by the end of the bake (need {need})"
        return _gate_failed(state, step, gate, why, now, actions)
    why = f"{len(activated)} device(s) activated" + (f", {summary.describe()}" if gate.watches_telemetry else "")
    verdict = GateVerdict(step, Verdict.PASSED, why, now)
    passed = replace(state, verdicts=(*state.verdicts, verdict), updated_at=now)
    actions.append(Note(EventKind.GATE_PASSED, f"gate of {step} passed: {why}", step=step))
    passed, more = _next_step(passed, now)
    return passed, actions + more


def _next_step(state: RolloutState, now: datetime) -> Outcome:
    index = state.step_index + 1
    moved = replace(state, step_index=index, step_started_at=None, baked_since=None, updated_at=now)
    if index < len(state.steps):
        return moved, []
    done = _phase(moved, RolloutPhase.SUCCEEDED, None, now)
    return done, [_phase_note(done)]


@dataclass(frozen=True)
class TelemetrySummary:
    requests: int
    errors: int
    p99_ms: float | None
    p99_ratio: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def describe(self) -> str:
        parts = [f"{self.requests} requests", f"error rate {self.error_rate or 0:.3g}"]
        if self.p99_ms is not None:
            parts.append(f"p99 {self.p99_ms:.3g} ms")
        if self.p99_ratio is not None:
            parts.append(f"p99 ratio {self.p99_ratio:.3g}")
        return ", ".join(parts)


def summarise(fleet: FleetView, device_ids: Iterable[str]) -> TelemetrySummary:
    """The new version's telemetry over the step's devices: requests and errors summed, the worst p99 and the
    worst p99 relative to the version it replaced on the same device."""
    requests = errors = 0
    p99s: list[float] = []
    ratios: list[float] = []
    for device_id in device_ids:
        view = fleet.get(device_id)
        new = view.new_telemetry if view is not None else None
        if view is None or new is None:
            continue
        requests += new.requests
        errors += new.errors
        if new.p99_ms is not None:
            p99s.append(new.p99_ms)
            old = view.old_telemetry
            if old is not None and old.p99_ms:
                ratios.append(new.p99_ms / old.p99_ms)
    return TelemetrySummary(requests, errors, max(p99s, default=None), max(ratios, default=None))


def telemetry_trip(gate: GateSpec, summary: TelemetrySummary) -> str | None:
    """Why the telemetry breaks the gate, or None."""
    rate = summary.error_rate
    if gate.max_error_rate is not None and rate is not None and rate > gate.max_error_rate:
        return f"error rate {rate:.3g} over {gate.max_error_rate:g} ({summary.errors}/{summary.requests})"
    if gate.max_p99_ms is not None and summary.p99_ms is not None and summary.p99_ms > gate.max_p99_ms:
        return f"p99 {summary.p99_ms:.3g} ms over {gate.max_p99_ms:g} ms"
    ratio = summary.p99_ratio
    if gate.max_p99_ratio is not None and ratio is not None and ratio > gate.max_p99_ratio:
        return f"p99 {ratio:.3g}x the previous version's, over {gate.max_p99_ratio:g}x"
    return None


def _gate_failed(
    state: RolloutState, step: str, gate: GateSpec, why: str, now: datetime, actions: list[Action]
) -> Outcome:
    verdict = GateVerdict(step, Verdict.FAILED, why, now)
    failed = replace(state, verdicts=(*state.verdicts, verdict), updated_at=now)
    actions.append(Note(EventKind.GATE_FAILED, f"gate of {step} failed: {why}", step=step))
    reason = f"gate of {step} failed: {why}"
    if gate.on_fail is OnFail.PAUSE:
        paused = _phase(failed, RolloutPhase.PAUSED, reason, now)
        return paused, [*actions, Note(EventKind.PAUSED, reason, step=step), _phase_note(paused)]
    rolled, more = _begin_rollback(failed, reason, now)
    return rolled, actions + more


# -- going back -----------------------------------------------------------------------------------------------
def _begin_rollback(state: RolloutState, reason: str, now: datetime) -> Outcome:
    moved = [t for t in state.devices if t.status in MOVED]
    actions: list[Action] = [Note(EventKind.ABORTING, reason, step=state.current_step)]
    if not moved:
        done = _phase(state, RolloutPhase.ABORTED, f"{reason}; no device had moved", now)
        return done, [*actions, _phase_note(done)]
    tracks = []
    for t in state.devices:
        if t in moved:
            t = replace(t, status=DeviceStatus.RESTORING, generation=None, published_at=now, reason=None)
            t = replace(t, updated_at=now)
            actions += [Publish(t.device_id, Target.RESTORE), _published_note(t, Target.RESTORE)]
        tracks.append(t)
    rolling = _phase(replace(state, devices=tuple(tracks)), RolloutPhase.ROLLING_BACK, reason, now)
    note = Note(EventKind.ROLLING_BACK, f"restoring {len(moved)} device(s)", data={"devices": len(moved)})
    return rolling, [*actions, note, _phase_note(rolling)]


def _finish_rollback(state: RolloutState, now: datetime) -> Outcome:
    if any(t.status is DeviceStatus.RESTORING for t in state.devices):
        return state, []
    restored = [t for t in state.devices if t.status is DeviceStatus.RESTORED]
    lost = [t for t in state.devices if t.status is DeviceStatus.RESTORE_FAILED]
    if lost:
        names = "; ".join(f"{t.device_id}: {t.reason}" for t in lost)
        done = _phase(state, RolloutPhase.ABORTED, f"{state.reason}; could not restore {names}", now)
    else:
        done = _phase(state, RolloutPhase.ROLLED_BACK, f"{state.reason}; {len(restored)} device(s) restored", now)
    summary = f"{len(restored)} device(s) back on their previous version, {len(lost)} not"
    note = Note(EventKind.RESTORED, summary, data={"restored": len(restored), "failed": len(lost)})
    return done, [note, _phase_note(done)]


# -- small pieces ---------------------------------------------------------------------------------------------
def window_open(window: MaintenanceWindow | None, now: datetime) -> bool:
    if window is None:
        return True
    minute = now.hour * 60 + now.minute
    start, end = window.minutes(window.start), window.minutes(window.end)
    day = WEEKDAYS[now.weekday()]
    if start <= end:
        return day in window.days and start <= minute < end
    # Across midnight: the part after midnight belongs to the window that opened the day before.
    if minute >= start:
        return day in window.days
    return minute < end and WEEKDAYS[(now.weekday() - 1) % 7] in window.days


def _phase(state: RolloutState, phase: RolloutPhase, reason: str | None, now: datetime) -> RolloutState:
    return replace(state, phase=phase, reason=reason, updated_at=now)


def _phase_note(state: RolloutState) -> Note:
    text = state.phase.value + (f": {state.reason}" if state.reason else "")
    return Note(EventKind.PHASE, text, step=state.current_step, data={"phase": state.phase.value})


def _status_note(track: DeviceTrack) -> Note:
    text = f"{track.device_id} {track.status.value}" + (f": {track.reason}" if track.reason else "")
    return Note(
        EventKind.DEVICE_STATUS, text, device_id=track.device_id, step=track.step, data={"status": track.status.value}
    )


def _published_note(track: DeviceTrack, target: Target) -> Note:
    return Note(
        EventKind.PUBLISHED,
        f"{target.value} published to {track.device_id}",
        device_id=track.device_id,
        step=track.step,
        data={"target": target.value},
    )
