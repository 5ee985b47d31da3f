"""Where each step of a rollout stands (control_plane/domain/step_states.py): derived from the stored state alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from control_plane.domain.rollout_progress import (
    DeviceStatus,
    DeviceTrack,
    GateVerdict,
    RolloutPhase,
    RolloutState,
    Verdict,
)
from control_plane.domain.rollout_spec import RolloutRequest
from control_plane.domain.step_states import StepState, status_counts, step_state, step_summaries

T0 = datetime(2024, 1, 1, tzinfo=UTC)
STEPS = ("canary", "wave-1", "wave-2")


def rollout(**kw: object) -> RolloutState:
    base = RolloutState(
        id="r1",
        model="m",
        version=1,
        spec=RolloutRequest(model="m", version=1),
        phase=RolloutPhase.IN_PROGRESS,
        step_index=1,
        steps=STEPS,
        step_started_at=T0,
        baked_since=None,
        devices=(),
        reason=None,
        created_at=T0,
        updated_at=T0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "index", "judged", "expected"),
    [
        pytest.param(rollout(), 0, True, StepState.DONE, id="before-current-done"),
        pytest.param(rollout(), 1, False, StepState.RUNNING, id="current-running"),
        pytest.param(rollout(baked_since=T0), 1, False, StepState.BAKING, id="current-baking"),
        pytest.param(rollout(), 2, False, StepState.WAITING, id="after-current-waiting"),
        pytest.param(rollout(step_started_at=None), 1, False, StepState.WAITING, id="current-not-started"),
        pytest.param(rollout(phase=RolloutPhase.ABORTED), 1, True, StepState.DONE, id="final-judged-done"),
        pytest.param(rollout(phase=RolloutPhase.ABORTED), 1, False, StepState.WAITING, id="final-unjudged-waiting"),
        pytest.param(rollout(phase=RolloutPhase.SUCCEEDED), 2, True, StepState.DONE, id="succeeded-last-done"),
        pytest.param(rollout(phase=RolloutPhase.PAUSED, baked_since=T0), 1, False, StepState.BAKING, id="paused"),
    ],
)
def test_step_state(state: RolloutState, index: int, judged: bool, expected: StepState) -> None:
    assert step_state(state, index, judged) is expected


def track(device_id: str, step: str, status: DeviceStatus) -> DeviceTrack:
    return DeviceTrack(device_id, step, status, 1, T0, None, None)


def test_step_summaries_count_every_status_and_keep_the_latest_verdict() -> None:
    state = rollout(
        devices=(
            track("d0", "canary", DeviceStatus.ACTIVATED),
            track("d1", "wave-1", DeviceStatus.FAILED),
            track("d2", "wave-1", DeviceStatus.IN_PROGRESS),
        ),
        verdicts=(
            GateVerdict("canary", Verdict.FAILED, "p99 high", T0),
            GateVerdict("canary", Verdict.PASSED, "ok", T0),
        ),
    )
    canary, wave_1, wave_2 = step_summaries(state)
    assert (canary.state, canary.devices, canary.verdict, canary.verdict_reason) == (
        StepState.DONE,
        1,
        Verdict.PASSED,
        "ok",
    )
    assert (wave_1.state, wave_1.devices, wave_1.verdict) == (StepState.RUNNING, 2, None)
    assert wave_1.counts == status_counts([DeviceStatus.FAILED, DeviceStatus.IN_PROGRESS])
    assert set(wave_2.counts) == {s.value for s in DeviceStatus} and sum(wave_2.counts.values()) == 0
