"""What the executor's next pass looks at, in virtual time: the devices woken since the last pass, everything when
asked (a push ended, or the first pass), and everything once per resync period whatever was woken."""

from __future__ import annotations

from typing import Any, cast

from control_plane.services.rollout_executor import RolloutExecutor


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
    assert ex.take() == {"dev-1", "dev-2"}
    assert ex.take() == set()


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
    assert ex.take() == set()
    clock.now += 0.1
    ex.wake({"dev-1"})
    assert ex.take() is None  # the resync: every open rollout observes every device again
    clock.now += 30
    assert ex.take() == set()
