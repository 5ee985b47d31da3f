"""Going back: an abort (by a gate or the operator) or a `rollback` sends every device the rollout moved back to
what it ran before, and the rollout ends `rolled_back` (or `aborted` when nothing had moved or a device could not
be restored).

Pure: returns the next state and the actions (Publish RESTORE, notes); the executor publishes. No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from control_plane.domain.rollout_notes import phase_note, published_note, with_phase
from control_plane.domain.rollout_progress import (
    MOVED,
    Action,
    DeviceStatus,
    EventKind,
    Note,
    Outcome,
    Publish,
    RolloutPhase,
    RolloutState,
    Target,
)


def begin_rollback(state: RolloutState, reason: str, now: datetime) -> Outcome:
    """Publish a restore to every device the rollout moved (`rolling_back`); `aborted` at once if none moved."""
    moved = [t for t in state.devices if t.status in MOVED]
    actions: list[Action] = [Note(EventKind.ABORTING, reason, step=state.current_step)]
    if not moved:
        done = with_phase(state, RolloutPhase.ABORTED, f"{reason}; no device had moved", now)
        return done, [*actions, phase_note(done)]
    tracks = []
    for t in state.devices:
        if t in moved:
            t = replace(t, status=DeviceStatus.RESTORING, generation=None, published_at=now, reason=None)
            t = replace(t, updated_at=now)
            actions += [Publish(t.device_id, Target.RESTORE), published_note(t, Target.RESTORE)]
        tracks.append(t)
    rolling = with_phase(replace(state, devices=tuple(tracks)), RolloutPhase.ROLLING_BACK, reason, now)
    note = Note(EventKind.ROLLING_BACK, f"restoring {len(moved)} device(s)", data={"devices": len(moved)})
    return rolling, [*actions, note, phase_note(rolling)]


def finish_rollback(state: RolloutState, now: datetime) -> Outcome:
    """Once no device is still restoring: `rolled_back`, or `aborted` naming the devices that could not be restored."""
    if any(t.status is DeviceStatus.RESTORING for t in state.devices):
        return state, []
    restored = [t for t in state.devices if t.status is DeviceStatus.RESTORED]
    lost = [t for t in state.devices if t.status is DeviceStatus.RESTORE_FAILED]
    if lost:
        names = "; ".join(f"{t.device_id}: {t.reason}" for t in lost)
        done = with_phase(state, RolloutPhase.ABORTED, f"{state.reason}; could not restore {names}", now)
    else:
        done = with_phase(state, RolloutPhase.ROLLED_BACK, f"{state.reason}; {len(restored)} device(s) restored", now)
    summary = f"{len(restored)} device(s) back on their previous version, {len(lost)} not"
    note = Note(EventKind.RESTORED, summary, data={"restored": len(restored), "failed": len(lost)})
    return done, [note, phase_note(done)]
