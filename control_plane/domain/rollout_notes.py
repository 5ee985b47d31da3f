"""How the planner changes a rollout's phase and the notes it writes as it moves: phase changes, device statuses,
publications.

A note is an action (rollout_progress.Note) the executor stores as a rollout event (SSE, `edgectl rollout watch`);
its wording and data are what operators read, so each kind is phrased in one place. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from control_plane.domain.rollout_progress import DeviceTrack, EventKind, Note, RolloutPhase, RolloutState, Target


def with_phase(state: RolloutState, phase: RolloutPhase, reason: str | None, now: datetime) -> RolloutState:
    """The rollout in `phase` for `reason`; `phase_note` tells it."""
    return replace(state, phase=phase, reason=reason, updated_at=now)


def phase_note(state: RolloutState) -> Note:
    text = state.phase.value + (f": {state.reason}" if state.reason else "")
    return Note(EventKind.PHASE, text, step=state.current_step, data={"phase": state.phase.value})


def status_note(track: DeviceTrack) -> Note:
    text = f"{track.device_id} {track.status.value}" + (f": {track.reason}" if track.reason else "")
    return Note(
        EventKind.DEVICE_STATUS, text, device_id=track.device_id, step=track.step, data={"status": track.status.value}
    )


def published_note(track: DeviceTrack, target: Target) -> Note:
    return Note(
        EventKind.PUBLISHED,
        f"{target.value} published to {track.device_id}",
        device_id=track.device_id,
        step=track.step,
        data={"target": target.value},
    )


# The reason of a device the operator forgot while the rollout held it (`edgectl devices forget --force`).
FORGOTTEN = "forgotten by the operator (devices forget --force)"

NAMED_AT_MOST = 20


def named_some(items: Sequence[str], at_most: int = NAMED_AT_MOST) -> str:
    """At most `at_most` of the items, then "and N more": a reason stays readable (and small) at any fleet size."""
    shown = "; ".join(items[:at_most])
    rest = len(items) - at_most
    return shown + (f"; and {rest} more" if rest > 0 else "")
