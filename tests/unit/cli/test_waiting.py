"""Every wait has a deadline (virtual clock: no real sleeping)."""

from __future__ import annotations

import pytest

from control_plane.cli.waiting import WaitTimeout, poll_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_returns_the_first_value_that_is_done() -> None:
    clock = FakeClock()
    values = iter(["queued", "running", "succeeded", "never"])
    seen: list[str] = []
    result = poll_until(
        lambda: next(values),
        lambda v: v == "succeeded",
        timeout=10,
        what="job",
        on_update=seen.append,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result == "succeeded"
    assert seen == ["queued", "running", "succeeded"]


def test_times_out_naming_what_and_the_last_value() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as caught:
        poll_until(
            lambda: "running",
            lambda v: False,
            timeout=3,
            what="training job j1",
            interval=1,
            describe=lambda v: f"status {v}",
            clock=clock,
            sleep=clock.sleep,
        )
    assert str(caught.value) == "timed out after 3s waiting for training job j1 (last seen: status running)"
    assert clock.now == 3
