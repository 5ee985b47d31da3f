"""What the executor's next pass looks at, in virtual time: the devices woken since the last pass, everything when
asked (a push ended, or the first pass), and everything once per resync period whatever was woken."""

from __future__ import annotations

from typing import Any, cast

import pytest

from control_plane.domain.ingest import UNKNOWN_CHANGE, DeviceChange
from control_plane.services.rollout_executor import RolloutExecutor
from edge_agent.protocol import HardwareFacts, ReportedState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def executor(clock: Clock) -> RolloutExecutor:
    return RolloutExecutor(cast(Any, None), resync_s=60.0, monotonic=clock)


def test_the_first_pass_runs_everything_then_only_what_was_woken() -> None:
    clock = Clock()
    ex = executor(clock)
    assert ex.take() is None
    ex.wake({"dev-1"})
    ex.wake({"dev-2", "dev-1"})
    assert set(ex.take() or {"not": "run"}) == {"dev-1", "dev-2"}
    assert ex.take() == {}


def test_a_wake_without_devices_runs_everything() -> None:
    clock = Clock()
    ex = executor(clock)
    ex.take()
    ex.wake({"dev-1"})
    ex.wake()
    assert ex.take() is None


def test_once_per_resync_period_a_pass_runs_everything_even_if_nothing_was_woken() -> None:
    clock = Clock()
    ex = executor(clock)
    ex.take()
    clock.now += 59.9
    assert ex.take() == {}
    clock.now += 0.1
    ex.wake({"dev-1"})
    assert ex.take() is None  # the resync: every open rollout observes every device again
    clock.now += 30
    assert ex.take() == {}


def report(generation: int) -> ReportedState:
    hardware = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")
    return ReportedState(device_id="dev-1", agent_version="1.0", applied_generation=generation, hardware=hardware)


R1, R2 = report(1), report(2)
TELEMETRY = DeviceChange(telemetry=True)


@pytest.mark.parametrize(
    ("woken", "held"),
    [
        pytest.param([DeviceChange(R1), DeviceChange(R2)], DeviceChange(R2), id="the-latest-report-wins"),
        pytest.param([DeviceChange(R1), TELEMETRY], DeviceChange(R1, telemetry=True), id="telemetry-keeps-report"),
        pytest.param([TELEMETRY, TELEMETRY], TELEMETRY, id="telemetry-only-stays-telemetry-only"),
        pytest.param([DeviceChange(R1), UNKNOWN_CHANGE], UNKNOWN_CHANGE, id="then-unknown-reads-it-again"),
        pytest.param(
            [UNKNOWN_CHANGE, TELEMETRY], DeviceChange(reread=True, telemetry=True), id="unknown-stays-unknown"
        ),
        pytest.param([UNKNOWN_CHANGE, DeviceChange(R2)], DeviceChange(R2), id="a-later-report-settles-unknown"),
    ],
)
def test_what_a_device_changed_between_passes_is_merged_in_order(woken: list[DeviceChange], held: DeviceChange) -> None:
    """The pass sees each device once, with its latest report (never an older one over a newer) and whether
    telemetry came; a change that did not hand its report over makes the pass read it again."""
    ex = executor(Clock())
    ex.take()
    for change in woken:
        ex.wake({"dev-1": change})
    assert ex.take() == {"dev-1": held}


def test_bare_ids_make_the_pass_read_their_reports_again() -> None:
    ex = executor(Clock())
    ex.take()
    ex.wake({"dev-1": DeviceChange(R1)})
    ex.wake({"dev-1"})
    assert ex.take() == {"dev-1": UNKNOWN_CHANGE}


class Recorded:
    """Stands in for the rollout service: records what the executor's thread asked of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def republish_all(self) -> int:
        self.calls.append("republish_all")
        return 0

    def tick(self, changed: Any = None) -> int:
        self.calls.append("tick" if changed is None else f"tick {sorted(changed)}")
        return 0


def test_a_broker_reconnect_republishes_on_the_executor_thread_before_its_next_pass() -> None:
    service = Recorded()
    ex = RolloutExecutor(cast(Any, service), resync_s=60.0, monotonic=Clock())
    ex.run_once()  # the first pass: everything
    ex.republish_soon()
    ex.wake({"dev-1"})
    ex.run_once()
    ex.run_once()  # asked once, done once
    assert service.calls == ["tick", "republish_all", "tick ['dev-1']", "tick []"]
