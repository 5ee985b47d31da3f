"""Going back: an abort (by a gate or the operator) or a `rollback` sends every device the rollout moved back to
what it ran before, and the rollout ends `rolled_back` (or `aborted` when nothing had moved or a device could not
be restored).

Pure: returns the next state and the actions (Publish RESTORE, notes); the executor publishes. No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from control_plane.domain.rollout_notes import (
    FORGOTTEN,
    named_some,
    phase_note,
    published_note,
    status_note,
    with_phase,
)
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
    with_tracks,
)


def begin_rollback(state: RolloutState, reason: str, now: datetime) -> Outcome:
    """Publish a restore to every device the rollout moved (`rolling_back`); `aborted` at once if none moved."""
    actions: list[Action] = [Note(EventKind.ABORTING, reason, step=state.current_step)]
    if not state.count(MOVED):
        done = with_phase(state, RolloutPhase.ABORTED, f"{reason}; no device had moved", now)
        return done, [*actions, phase_note(done)]
    moved = [t for t in state.devices if t.status in MOVED]
    tracks = []
    for t in moved:
        if t.reason == FORGOTTEN:  # gone from the fleet: nothing to publish to, nothing to wait for
            t = replace(t, status=DeviceStatus.RESTORE_FAILED, updated_at=now)
            actions.append(status_note(t))
        else:
            t = replace(
                t, status=DeviceStatus.RESTORING, generation=None, published_at=now, reason=None, updated_at=now
            )
            actions += [Publish(t.device_id, Target.RESTORE), published_note(t, Target.RESTORE)]
        tracks.append(t)
    rolling = with_phase(with_tracks(state, tracks), RolloutPhase.ROLLING_BACK, reason, now)
    note = Note(EventKind.ROLLING_BACK, f"restoring {len(moved)} device(s)", data={"devices": len(moved)})
    return rolling, [*actions, note, phase_note(rolling)]


def finish_rollback(state: RolloutState, now: datetime) -> Outcome:
    """Once no device is still restoring: `rolled_back`, or `aborted` naming the devices that could not be restored."""
    if state.count([DeviceStatus.RESTORING]):
        return state, []
    restored = state.count([DeviceStatus.RESTORED])
    lost = state.count([DeviceStatus.RESTORE_FAILED])
    if lost:
        names = named_some(
            [f"{t.device_id}: {t.reason}" for t in state.devices if t.status is DeviceStatus.RESTORE_FAILED]
        )
        done = with_phase(state, RolloutPhase.ABORTED, f"{state.reason}; could not restore {names}", now)
    else:
        done = with_phase(state, RolloutPhase.ROLLED_BACK, f"{state.reason}; {restored} device(s) restored", now)
    summary = f"{restored} device(s) back on their previous version, {lost} not"
    note = Note(EventKind.RESTORED, summary, data={"restored": restored, "failed": lost})
    return done, [note, phase_note(done)]
