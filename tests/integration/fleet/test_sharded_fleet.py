"""The fleet benchmark's simulator spread over processes (benchmarks/fleet_simulation/shards.py): what the
benchmark's figures rest on. A few dozen devices in two spawned processes against a real Mosquitto and an
`edgectl server`: all online, an all-at-once rollout succeeds with every device on the new version, and what the
benchmark reads of the fleet (messages, the timeline, the processes' ids) adds up over both shards.
"""

from __future__ import annotations

import time

import pytest

from benchmarks.fleet_simulation.control import list_devices, phase, rollout
from benchmarks.fleet_simulation.harness import MODEL, deployment
from benchmarks.fleet_simulation.shards import ShardedFleet
from benchmarks.fleet_simulation.storm import serving
from tests.support import mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="needs mosquitto and mosquitto_passwd"),
]

DEVICES = 40


def test_a_fleet_simulated_by_two_processes_converges_and_adds_up() -> None:
    with deployment(DEVICES, versions=1, processes=2) as sim:
        assert isinstance(sim.fleet, ShardedFleet)
        assert len(set(sim.fleet_pids())) == 2 and all(pid != 0 for pid in sim.fleet_pids())
        assert len(sim.ids) == DEVICES
        sim.wait(sim.all_online, timeout=120, what="every simulated device online in the API")

        start = time.monotonic()
        before = sum(sim.fleet.messages().values())
        version = sim.versions[0]
        rollout_id = rollout(sim.api, {"model": MODEL, "version": version, "selector": {"labels": {"fleet": "sim"}}})
        sim.wait(lambda: phase(sim.api, rollout_id) == "succeeded", timeout=120, what="the rollout to succeed")
        sim.wait(sim.fleet.idle, timeout=60, what="both shards idle")

        assert serving(list_devices(sim.api), version) == sim.ids
        assert sim.fleet.apply_errors == 0
        received = sim.fleet.messages()["received desired"]
        assert received >= DEVICES  # each device of both shards got its desired state
        assert sum(sim.fleet.messages().values()) > before + DEVICES
        assert sim.fleet.timeline(start).startswith(f"{DEVICES} received a desired state")
