"""A step's gate: once its devices are done, the step bakes while the new version's telemetry is watched; the
gate passes (next step, or `succeeded`) or fails (`paused`, or an abort that rolls the fleet back). `readings`
tells operators the same values the gate judges, each against its threshold.

Pure: the telemetry arrives in the fleet view and `now` is passed in; no I/O, no clock reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from control_plane.domain.rollout_notes import phase_note, with_phase
from control_plane.domain.rollout_progress import (
    BAD,
    Action,
    DeviceStatus,
    EventKind,
    FleetView,
    GateVerdict,
    Note,
    Outcome,
    RolloutPhase,
    RolloutState,
    Verdict,
)
from control_plane.domain.rollout_rollback import begin_rollback
from control_plane.domain.rollout_spec import GateSpec, OnFail


@dataclass(frozen=True)
class TelemetrySummary:
    """The new version's telemetry over a step's activated devices, as the gate judges it."""

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


def judge_bake(
    state: RolloutState, step: str, gate: GateSpec, fleet: FleetView, now: datetime, actions: list[Action]
) -> Outcome:
    """A step whose devices are all done: fail it as soon as its telemetry trips the gate, pass it once it has
    baked for `bake_s` with enough requests; until then it stays as it is."""
    activated = [t.device_id for t in state.devices if t.step == step and t.status is DeviceStatus.ACTIVATED]
    summary = summarise(fleet, activated)
    if summary.requests >= max(gate.min_requests, 1):
        tripped = telemetry_trip(gate, summary)
        if tripped is not None:
            return gate_failed(state, step, gate, tripped, now, actions)
    baked = state.baked_since is not None and now >= state.baked_since + timedelta(seconds=state.spec.bake_s)
    if not baked:
        return state, actions
    if summary.requests < gate.min_requests:
        need = gate.min_requests
        why = f"only {summary.requests} request(s) of v{state.version} by the end of the bake (need {need})"
        return gate_failed(state, step, gate, why, now, actions)
    why = f"{len(activated)} device(s) activated" + (f", {summary.describe()}" if gate.watches_telemetry else "")
    verdict = GateVerdict(step, Verdict.PASSED, why, now)
    passed = replace(state, verdicts=(*state.verdicts, verdict), updated_at=now)
    actions.append(Note(EventKind.GATE_PASSED, f"gate of {step} passed: {why}", step=step))
    passed, more = next_step(passed, now)
    return passed, actions + more


def gate_failed(
    state: RolloutState, step: str, gate: GateSpec, why: str, now: datetime, actions: list[Action]
) -> Outcome:
    """Record the failed verdict, then pause or abort (rolling back) as the gate's `on_fail` says."""
    verdict = GateVerdict(step, Verdict.FAILED, why, now)
    failed = replace(state, verdicts=(*state.verdicts, verdict), updated_at=now)
    actions.append(Note(EventKind.GATE_FAILED, f"gate of {step} failed: {why}", step=step))
    reason = f"gate of {step} failed: {why}"
    if gate.on_fail is OnFail.PAUSE:
        paused = with_phase(failed, RolloutPhase.PAUSED, reason, now)
        return paused, [*actions, Note(EventKind.PAUSED, reason, step=step), phase_note(paused)]
    rolled, more = begin_rollback(failed, reason, now)
    return rolled, actions + more


def next_step(state: RolloutState, now: datetime) -> Outcome:
    """The step after a passed (or overridden) gate; after the last one the rollout has succeeded."""
    index = state.step_index + 1
    moved = replace(state, step_index=index, step_started_at=None, baked_since=None, updated_at=now)
    if index < len(state.steps):
        return moved, []
    done = with_phase(moved, RolloutPhase.SUCCEEDED, None, now)
    return done, [phase_note(done)]


@dataclass(frozen=True)
class GateReading:
    """One value a step's gate judges, against its threshold; `ok` None: not judged yet (too few requests)."""

    name: str  # failed, requests, error_rate, p99_ms, p99_ratio
    value: float | None
    threshold: float
    ok: bool | None
    bound: str  # "max" (the value must stay at or below) or "min" (must reach)


def readings(state: RolloutState, step: str, fleet: FleetView) -> list[GateReading]:
    """The values of `step`'s gate now: its failed devices against `max_failed` (always), then, when the gate
    watches telemetry, the new version's requests, error rate and p99 over the step's activated devices (the
    telemetry sum walks the step's tracks, as the gate's own judgement does)."""
    gate = state.spec.gate_for(step)
    total = sum(state.step_counts(step).values())
    bad, allowed = state.count(BAD, step), gate.max_failed.of(total)
    out = [GateReading("failed", bad, allowed, bad <= allowed, "max")]
    if not gate.watches_telemetry:
        return out
    activated = [t.device_id for t in state.devices if t.step == step and t.status is DeviceStatus.ACTIVATED]
    summary = summarise(fleet, activated)
    enough = summary.requests >= max(gate.min_requests, 1)
    need = gate.min_requests  # too few fails the gate only once the bake is over (then a verdict says so)
    out.append(GateReading("requests", summary.requests, need, True if summary.requests >= need else None, "min"))
    for name, value, limit in (
        ("error_rate", summary.error_rate, gate.max_error_rate),
        ("p99_ms", summary.p99_ms, gate.max_p99_ms),
        ("p99_ratio", summary.p99_ratio, gate.max_p99_ratio),
    ):
        if limit is not None:
            ok = None if not enough or value is None else value <= limit
            out.append(GateReading(name, value, limit, ok, "max"))
    return out
