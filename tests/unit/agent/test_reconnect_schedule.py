"""The waits before an MQTT session's reconnect attempts (edge_agent.adapters.mqtt_session.ReconnectSchedule): what
a fleet that lost its broker at once does. Seeded draws stand for the devices' own random generators."""

from __future__ import annotations

import random

import pytest

from edge_agent.adapters.mqtt_session import RECONNECT_MAX_S, RECONNECT_MIN_S, ReconnectSchedule

DEVICES = 50
ATTEMPTS = 10


def fleet_waits(initial_s: float = RECONNECT_MIN_S, cap_s: float = RECONNECT_MAX_S) -> list[list[float]]:
    """Each device's first ATTEMPTS waits, every device with its own seeded generator."""
    schedules = [ReconnectSchedule(initial_s, cap_s, random.Random(seed).random) for seed in range(DEVICES)]
    return [[s.next() for _ in range(ATTEMPTS)] for s in schedules]


def test_devices_that_lost_the_broker_together_do_not_retry_together() -> None:
    waits = fleet_waits()
    for attempt in range(ATTEMPTS):
        at = [w[attempt] for w in waits]
        assert len({round(x, 6) for x in at}) == DEVICES, f"attempt {attempt}: some devices wait the same time"
    # Nor do they come back in the same second once the waits add up: the cumulative times spread out too.
    arrivals = [sum(w[:4]) for w in waits]
    assert max(arrivals) - min(arrivals) > 2.0


@pytest.mark.parametrize(
    ("initial_s", "cap_s"),
    [
        pytest.param(RECONNECT_MIN_S, RECONNECT_MAX_S, id="agent-and-control-plane"),
        pytest.param(0.5, RECONNECT_MAX_S, id="version-probe"),
        pytest.param(2.0, 5.0, id="low-cap"),
    ],
)
def test_every_wait_stays_within_half_the_first_step_and_the_cap(initial_s: float, cap_s: float) -> None:
    for waits in fleet_waits(initial_s, cap_s):
        assert all(initial_s / 2 <= w <= cap_s for w in waits), waits


def test_the_waits_grow_with_the_attempts_until_the_cap() -> None:
    for waits in fleet_waits():
        assert waits[0] <= RECONNECT_MIN_S
        rising = waits[:5]  # 1, 2, 4, 8, 16 s steps: each drawn from [step / 2, step], below the 30 s cap
        assert rising == sorted(rising), rising
        assert all(w >= RECONNECT_MAX_S / 2 for w in waits[5:]), waits  # capped: drawn from [15 s, 30 s]


@pytest.mark.parametrize(
    ("draw", "expected"),
    [
        pytest.param(0.0, [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0], id="lowest-draw"),
        pytest.param(0.999999, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0], id="highest-draw"),
    ],
)
def test_the_bounds_of_the_schedule(draw: float, expected: list[float]) -> None:
    schedule = ReconnectSchedule(RECONNECT_MIN_S, RECONNECT_MAX_S, lambda: draw)
    assert [schedule.next() for _ in expected] == pytest.approx(expected, rel=1e-5)


def test_an_accepted_connection_starts_the_schedule_again() -> None:
    schedule = ReconnectSchedule(RECONNECT_MIN_S, RECONNECT_MAX_S, lambda: 0.0)
    for _ in range(6):
        schedule.next()
    schedule.reset()
    assert schedule.next() == 0.5
