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
from benchmarks.fleet_simulation.device import SimDevice
from benchmarks.fleet_simulation.harness import MODEL, Harness, deployment
from benchmarks.fleet_simulation.storm import last_sent, serving, settled
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


FINAL = ("activated", "failed", "timed_out", "restored", "restore_failed")


def diagnosis(sim: Harness, rollout_id: str, shown: int = 8) -> str:
    """What a stalled rollout looks like from both ends, for a timeout's message: its phase and counts per step,
    then for the first devices not settled: the track, what the control plane holds, and what the device did."""
    body = sim.api.get(f"/v1/rollouts/{rollout_id}", params={"limit": 1000}).json()
    lines = [f"rollout {rollout_id}: {body['phase']} ({body.get('reason')})"]
    lines += [f"  step {s['name']} {s['state']}: {s['counts']}" for s in body["steps"]]
    stalled = [t for t in body["devices"] if t["status"] not in FINAL]
    held = {d["id"]: d for d in list_devices(sim.api)}
    for track in stalled[:shown]:
        device_id = track["device_id"]
        lines.append(f"  {device_id}: track {track['status']} gen {track['generation']} ({track['reason']})")
        lines.append(f"    control plane: {stored_view(held.get(device_id))}")
        lines.append(f"    device: {device_view(sim.fleet.by_id[device_id])}")
    lines.append(f"  ({len(stalled)} device(s) not settled)")
    log = sim.control_plane.output().splitlines()
    lines += ["  server log, last warnings:", *[f"    {x}" for x in log if "WARNING" in x or "ERROR" in x][-15:]]
    return "\n".join(lines)


def stored_view(device: dict[str, Any] | None) -> str:
    if device is None:
        return "not known"
    reported = device.get("reported") or {}
    models = [(m["version"], m["health"]) for m in reported.get("models") or []]
    return (
        f"{device['presence']}, desired gen {device['desired_generation']}, reported applied gen "
        f"{reported.get('applied_generation')}, models {models}, delivery {device.get('delivery_failure')}"
    )


def device_view(device: SimDevice) -> str:
    last = device.last_reported
    models = [(m.version, m.health.value) for m in last.models] if last is not None else None
    return (
        f"connected {device.connected}, busy {device.busy}, waiting doc {device.latest is not None}, desired "
        f"states received {device.received['desired']}, last report applied gen "
        f"{last.applied_generation if last else None} models {models}, sent {dict(device.sent)}, handled "
        f"{list(device.handled)}"
    )


def test_all_at_once_then_abort_converges_with_no_report_lost(sim: Harness) -> None:
    v1, v2 = sim.versions
    everyone = {"model": MODEL, "selector": {"labels": {"fleet": "sim"}}}

    first = rollout(sim.api, {**everyone, "version": v1})
    sim.wait(
        lambda: phase(sim.api, first) in ("succeeded", "aborted", "rolled_back"),
        240,
        "the first rollout",
        describe=lambda: diagnosis(sim, first),
    )
    assert phase(sim.api, first) == "succeeded", sim.api.get(f"/v1/rollouts/{first}").json()["reason"]
    sim.wait(lambda: settled(sim), 120, "every device's last report stored")
    assert serving(list_devices(sim.api), v1) == sim.ids

    second = rollout(sim.api, {**everyone, "version": v2, "bake_s": 600})
    sim.wait(
        lambda: serving(list_devices(sim.api), v2) == sim.ids,
        240,
        "the fleet on v2",
        describe=lambda: diagnosis(sim, second),
    )
    aborted = sim.api.post(f"/v1/rollouts/{second}/abort")
    assert aborted.status_code < 300, aborted.text
    sim.wait(
        lambda: phase(sim.api, second) in ("rolled_back", "aborted"),
        240,
        "the abort to finish",
        describe=lambda: diagnosis(sim, second),
    )
    assert phase(sim.api, second) == "rolled_back", sim.api.get(f"/v1/rollouts/{second}").json()["reason"]
    sim.wait(lambda: settled(sim), 120, "every device's last report stored")

    devices = list_devices(sim.api)
    assert serving(devices, v1) == sim.ids
    assert lost_reports(devices, last_sent(sim)) == []
    assert sim.broker.dropped_messages() == 0
    assert sim.fleet.apply_errors == 0
