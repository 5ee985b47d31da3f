"""CI's smoke of the reconnect storm (benchmarks/fleet_simulation/storm.py): Mosquitto restarted under a couple of
hundred simulated devices (real MQTT connections, each running the agent's own core and the agent's reconnect
schedule) in the middle of an all-at-once rollout, with an `edgectl server` process on the same broker.

What a user would notice: every device came back by itself, the rollout that was under way when the broker went
down succeeded, every device serves the new version, the control plane holds every device's last report (none
lost), and `/healthz` answered every probe, each within 1 s (the issue's bound: the probe measures each request's
own latency). No other time is asserted; the timeouts are only how long to wait before calling it broken.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.fleet_simulation.harness import Harness, deployment
from benchmarks.fleet_simulation.storm import StormResult, run_storm
from tests.support import mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="needs mosquitto and mosquitto_passwd"),
]

DEVICES = 200
HEALTHZ_BOUND_MS = 1000.0


@pytest.fixture(scope="module")
def storm() -> Iterator[tuple[Harness, StormResult]]:
    # Applies spread over 2 s: the broker goes down while most devices are still to apply and report B.
    with deployment(DEVICES, versions=2, options={"apply_jitter_s": 2.0}) as harness:
        harness.wait(harness.all_online, timeout=120, what="every simulated device online in the API")
        version_a, version_b = harness.versions
        yield harness, run_storm(harness, version_a, version_b, timeout=240)


def test_the_broker_went_down_in_the_middle_of_the_rollout(storm: tuple[Harness, StormResult]) -> None:
    _, result = storm
    assert 0 < result.reported_b_at_restart < DEVICES


def test_every_device_reconnects_and_converges_with_no_report_lost(storm: tuple[Harness, StormResult]) -> None:
    harness, result = storm
    assert harness.fleet.connected_count() == DEVICES
    assert result.outcome == "succeeded"
    assert result.serving_b == DEVICES
    assert result.lost == []
    assert harness.fleet.apply_errors == 0


def test_healthz_answered_every_probe_within_a_second_throughout(storm: tuple[Harness, StormResult]) -> None:
    _, result = storm
    health = result.health
    assert len(health.answers) > 10
    assert health.failures == 0
    slow = [round(a.latency_ms) for a in health.answers if a.latency_ms > HEALTHZ_BOUND_MS]
    assert slow == [], f"/healthz answers over 1 s: {slow} (of {len(health.answers)})"
    assert result.link_back_s is not None, "the control plane never said its broker link was down and up again"
