"""A device's refusal counts at once, a forgotten device is no longer waited for, and a rollout's view says what it
waits for and how its gate stands (domain: rollout_plan, rollout_rollback, rollout_gates, step_states, reports), in
virtual time: the deadline is 300 s and every refusal below is judged at 1 or 2 s."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from control_plane.domain.fleet import Presence
from control_plane.domain.rollout_gates import readings
from control_plane.domain.rollout_notes import FORGOTTEN
from control_plane.domain.rollout_plan import forget_device, plan
from control_plane.domain.rollout_progress import (
    DeviceStatus,
    DeviceView,
    Note,
    Operator,
    Publish,
    RolloutPhase,
    TelemetryWindow,
    with_tracks,
)
from control_plane.domain.step_states import Seen, bake_end, in_flight, waits
from edge_agent.protocol import ApplyOutcome, ApplyPhase, EventStep, ReportedState
from tests.unit.control_plane.test_rollout_plan import CANARY, T0, Driver, Tick, reported, spec, start

S = DeviceStatus
SIGNATURE = "signature: signed by key k-cp, but this agent pins key k-other"


def refused(device_id: str, generation: int, reason: str = SIGNATURE) -> ReportedState:
    """The report of an agent that refused generation `generation` (core.agent: last_apply failed, step rejected)."""
    base = reported(device_id, "none", 0)
    refusal = ApplyOutcome(
        generation=generation, phase=ApplyPhase.FAILED, step=EventStep.REJECTED, reason=reason, at=T0
    )
    return base.model_copy(update={"last_apply": refusal})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def refuse(driver: Driver, device_id: str, seconds: float, changed: bool = True) -> None:
    track = driver.state.track(device_id)
    assert track is not None and track.generation is not None
    views = driver.fleet(True) | {device_id: DeviceView(online=True, reported=refused(device_id, track.generation))}
    driver.state, actions = plan(driver.state, views, at(seconds), None, {device_id} if changed else None)
    driver.actions += actions


REFUSED = "refused by the device: " + SIGNATURE


@pytest.mark.parametrize(
    ("request_kw", "phase", "status"),
    [
        pytest.param({}, "rolling_back", S.RESTORING, id="all-at-once-aborts"),
        pytest.param({"strategy": CANARY, "gates": {"on_fail": "pause"}}, "paused", S.FAILED, id="canary-pauses"),
    ],
)
def test_a_refused_install_fails_the_device_at_once_with_the_agents_reason(
    request_kw: dict[str, object], phase: str, status: DeviceStatus
) -> None:
    driver = start(spec(**request_kw), n=1)
    refuse(driver, "d0", 1)
    assert driver.state.phase.value == phase  # at 1 s, not at the 300 s deadline
    assert f"d0: {REFUSED}" in str(driver.state.reason)
    said = [a.message for a in driver.actions if isinstance(a, Note) and a.device_id == "d0"]
    assert f"d0 failed: {REFUSED}" in said  # the event the watch shows
    assert driver.state.track("d0").status is status  # type: ignore[union-attr]


def test_a_failed_apply_that_is_no_refusal_keeps_its_own_reason() -> None:
    driver = start(spec(), n=1)
    driver.tick(Tick(1, {"d0": "fail"}))
    assert "d0: self-test: Y differs" in str(driver.state.reason) and "refused" not in str(driver.state.reason)


def test_a_refused_restore_is_a_restore_failure_at_once_and_the_abort_ends() -> None:
    driver = start(spec(), n=2)
    driver.tick(Tick(1, {"d0": "ok", "d1": "ok"}))
    driver.tick(Tick(2, command=Operator.ROLLBACK))
    assert driver.state.phase is RolloutPhase.ROLLING_BACK
    refuse(driver, "d0", 3)
    driver.tick(Tick(4, {"d1": "back"}))
    assert driver.state.phase is RolloutPhase.ABORTED  # at 4 s, not at the 300 s deadline
    assert f"could not restore d0: refused by the device: {SIGNATURE}" in str(driver.state.reason)


def test_a_refusal_of_another_generation_changes_nothing() -> None:
    driver = start(spec(), n=1)
    view = DeviceView(online=True, reported=refused("d0", 999))
    driver.state, _ = plan(driver.state, {"d0": view}, at(1), None, {"d0"})
    track = driver.state.track("d0")
    assert track is not None and track.status is S.IN_PROGRESS


@pytest.mark.parametrize(
    ("script", "command", "expected", "phase"),
    [
        pytest.param([], None, S.FAILED, RolloutPhase.ABORTED, id="installing"),
        pytest.param(
            [Tick(1, {"d0": "ok"})], Operator.ROLLBACK, S.RESTORE_FAILED, RolloutPhase.ABORTED, id="restoring"
        ),
    ],
)
def test_a_forgotten_device_is_no_longer_waited_for(
    script: list[Tick], command: Operator | None, expected: DeviceStatus, phase: RolloutPhase
) -> None:
    driver = start(spec(), n=1)
    for tick in script:
        driver.tick(tick)
    if command is not None:
        driver.tick(Tick(2, command=command))
    driver.state, notes = forget_device(driver.state, "d0", at(3))
    track = driver.state.track("d0")
    assert track is not None and (track.status, track.reason) == (expected, FORGOTTEN)
    assert [n.message for n in notes] == [f"d0 {expected.value}: {FORGOTTEN}"]
    driver.state, _ = plan(driver.state, {}, at(3), None, set())
    assert driver.state.phase is phase  # ended at once, not at the deadline


def test_a_forgotten_activated_device_is_not_restored_by_a_later_abort() -> None:
    driver = start(spec(strategy=CANARY), n=4)
    driver.tick(Tick(1, {"d0": "ok"}))
    driver.state, _ = forget_device(driver.state, "d0", at(2))
    assert driver.state.track("d0").status is S.ACTIVATED  # type: ignore[union-attr]
    actions = driver.tick(Tick(3, command=Operator.ABORT))
    assert not any(isinstance(a, Publish) and a.device_id == "d0" for a in actions)
    assert driver.state.track("d0").status is S.RESTORE_FAILED  # type: ignore[union-attr]


def test_a_device_whose_desired_state_could_not_be_sent_times_out_instead_of_hanging() -> None:
    driver = start(spec(device_deadline_s=60), n=1)
    track = driver.state.track("d0")
    assert track is not None
    driver.state = with_tracks(driver.state, [replace(track, generation=None)])  # composing it failed
    driver.state, notes = plan(driver.state, {}, at(59), None, set())
    assert notes == []
    driver.state, notes = plan(driver.state, {}, at(61), None, set())
    said = [n.message for n in notes if isinstance(n, Note)]
    assert "d0 timed_out: no desired state could be sent to it within 60 s (see the server's log)" in said


@pytest.mark.parametrize(
    ("seen", "why"),
    [
        pytest.param(Seen(Presence.ONLINE, at(0)), "online, installing", id="online"),
        pytest.param(Seen(Presence.OFFLINE, at(-90)), "offline since 2026-03-02T11:58:30+00:00", id="offline"),
        pytest.param(Seen(Presence.UNKNOWN, None), "never heard from", id="never-heard"),
        pytest.param(None, "not in the fleet any more", id="forgotten"),
    ],
)
def test_a_rollout_says_what_it_waits_for_and_why(seen: Seen | None, why: str) -> None:
    driver = start(spec(), n=1)
    [wait] = waits(driver.state, in_flight(driver.state), {"d0": seen} if seen else {})
    assert wait.device_id == "d0" and wait.status is S.IN_PROGRESS and wait.why.startswith(why)
    assert wait.deadline == at(300)


def test_the_waits_a_rollout_names_are_bounded() -> None:
    driver = start(spec(), n=30)
    assert len(in_flight(driver.state)) == 20
    driver.tick(Tick(1, {f"d{i}": "ok" for i in range(30)}))
    assert in_flight(driver.state) == []


@pytest.mark.parametrize(
    ("gates", "telemetry", "expected"),
    [
        pytest.param({}, None, [("failed", 0, 0, True)], id="no-telemetry-gate"),
        pytest.param(
            {"min_requests": 100, "max_error_rate": 0.01},
            (40, 0),
            [("failed", 0, 0, True), ("requests", 40, 100, None), ("error_rate", 0.0, 0.01, None)],
            id="too-few-requests-not-judged",
        ),
        pytest.param(
            {"min_requests": 100, "max_error_rate": 0.01},
            (200, 10),
            [("failed", 0, 0, True), ("requests", 200, 100, True), ("error_rate", 0.05, 0.01, False)],
            id="error-rate-over",
        ),
    ],
)
def test_the_gate_readings_name_each_value_against_its_threshold(
    gates: dict[str, object], telemetry: tuple[int, int] | None, expected: list[tuple[str, float, float, bool]]
) -> None:
    driver = start(spec(gates=gates, bake_s=60), n=1)
    driver.tick(Tick(1, {"d0": "ok"}))
    views = {"d0": DeviceView(True, None, TelemetryWindow(*telemetry, 5.0) if telemetry else None)}
    shown = [(r.name, r.value, r.threshold, r.ok) for r in readings(driver.state, "all", views)]
    assert shown == expected
    assert bake_end(driver.state) == at(61)
