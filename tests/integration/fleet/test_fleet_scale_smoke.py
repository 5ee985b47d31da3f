"""CI's smoke of the fleet benchmark: a few hundred simulated devices (benchmarks/fleet_simulation: real MQTT
connections, each running the agent's own core) against a real Mosquitto and an `edgectl server` process.

One all-at-once rollout and one operator abort. What a user would notice: every device converged (the rollout
says `succeeded`, then `rolled_back`, and every device serves what it should), and no report was lost (the report
the control plane holds for each device is the last one the device published). Never a time: the timeouts here
are only how long to wait before calling it broken.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.fleet_simulation.control import list_devices, lost_reports, phase, rollout
from benchmarks.fleet_simulation.harness import MODEL, Harness, deployment
from tests.support import mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="needs mosquitto and mosquitto_passwd"),
]

DEVICES = 250


@pytest.fixture(scope="module")
def sim() -> Iterator[Harness]:
    with deployment(DEVICES, versions=2, options={"apply_jitter_s": 0.5}) as harness:
        harness.wait(harness.all_online, timeout=120, what="every simulated device online in the API")
        yield harness


def serving(devices: list[dict[str, Any]], version: int) -> set[str]:
    """Ids of the devices that report `version` of the model serving."""
    found = set()
    for device in devices:
        models = (device.get("reported") or {}).get("models") or []
        if any(m["name"] == MODEL and m["version"] == version and m["health"] == "serving" for m in models):
            found.add(device["id"])
    return found


def settled(sim: Harness) -> bool:
    """The simulator has nothing left to apply and the control plane holds every device's last report."""
    return sim.fleet.idle() and not lost_reports(list_devices(sim.api), last_sent(sim))


def last_sent(sim: Harness) -> dict[str, Any]:
    return {d.device_id: d.last_reported for d in sim.fleet.devices}


def test_all_at_once_then_abort_converges_with_no_report_lost(sim: Harness) -> None:
    v1, v2 = sim.versions
    everyone = {"model": MODEL, "selector": {"labels": {"fleet": "sim"}}}

    first = rollout(sim.api, {**everyone, "version": v1})
    sim.wait(lambda: phase(sim.api, first) in ("succeeded", "aborted", "rolled_back"), 240, "the first rollout")
    assert phase(sim.api, first) == "succeeded", sim.api.get(f"/v1/rollouts/{first}").json()["reason"]
    sim.wait(lambda: settled(sim), 120, "every device's last report stored")
    assert serving(list_devices(sim.api), v1) == sim.ids

    second = rollout(sim.api, {**everyone, "version": v2, "bake_s": 600})
    sim.wait(lambda: serving(list_devices(sim.api), v2) == sim.ids, 240, "the fleet on v2")
    aborted = sim.api.post(f"/v1/rollouts/{second}/abort")
    assert aborted.status_code < 300, aborted.text
    sim.wait(lambda: phase(sim.api, second) in ("rolled_back", "aborted"), 240, "the abort to finish")
    assert phase(sim.api, second) == "rolled_back", sim.api.get(f"/v1/rollouts/{second}").json()["reason"]
    sim.wait(lambda: settled(sim), 120, "every device's last report stored")

    devices = list_devices(sim.api)
    assert serving(devices, v1) == sim.ids
    assert lost_reports(devices, last_sent(sim)) == []
    assert sim.broker.dropped_messages() == 0
    assert sim.fleet.apply_errors == 0
