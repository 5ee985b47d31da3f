"""The reconnect storm: Mosquitto restarted under a connected fleet, in the middle of a rollout.

The fleet first converges on version A (an all-at-once rollout). Then an all-at-once rollout to version B starts
and, as soon as the first devices report B, the broker is restarted (SIGTERM saves its retained messages; the same
port, accounts and saved state come back): every device and the control plane lose their connection at once and
come back with their jittered backoff. Throughout, `/healthz` is asked every 100 ms on a thread of its own.

What it tells (`StormResult`): how long the broker was down, how long until every device was connected again and
until the control plane said its link was up again, whether the rollout to B succeeded and how long it took from
its POST, how long until the control plane held every device's last report (and which reports it lost), how many
devices serve B, and every `/healthz` answer's latency and failure.

Used by `benchmarks/fleet_scale.py` (a row per measure) and the CI smoke
(tests/integration/fleet/test_reconnect_storm_smoke.py: asserts convergence, no lost report, and `/healthz` within
1 s, never another time). Must never reach into the control plane: its public API only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.fleet_simulation.control import list_devices, lost_reports, phase, rollout
from benchmarks.fleet_simulation.fleet import Fleet
from benchmarks.fleet_simulation.harness import MODEL, Harness
from benchmarks.fleet_simulation.measure import HealthProbe, PhaseProbe

FINAL = ("succeeded", "aborted", "rolled_back")
RESTART_AFTER_SHARE = 0.01  # restart once this share of the fleet (at least one device) reported B


@dataclass
class StormResult:
    devices: int
    reported_b_at_restart: int  # devices that had reported B when the broker went down
    broker_down_s: float  # SIGTERM until the new broker listened
    reconnected_s: float  # from the SIGTERM until every device's connection was accepted again
    link_back_s: float | None  # from the SIGTERM until `/healthz` said the control plane's link was up again
    rollout_s: float  # from the POST until the rollout's final phase
    outcome: str  # the rollout's final phase
    settled_s: float | None  # from the final phase until the control plane held every device's last report
    lost: list[str]  # devices whose stored report is not the last one they sent
    serving_b: int  # devices whose stored report says B is serving
    cpu_s: float  # the control plane's CPU-seconds from the POST until settled
    peak_rss_mb: float
    messages_per_device: float
    health: HealthProbe = field(repr=False)


def everyone(version: int) -> dict[str, Any]:
    return {"model": MODEL, "version": version, "selector": {"labels": {"fleet": "sim"}}}


def serving(devices: Iterable[dict[str, Any]], version: int) -> set[str]:
    """Ids of the devices whose stored report says `version` of the model is serving."""
    found = set()
    for device in devices:
        models = (device.get("reported") or {}).get("models") or []
        if any(m["name"] == MODEL and m["version"] == version and m["health"] == "serving" for m in models):
            found.add(device["id"])
    return found


def reported(fleet: Fleet, version: int) -> int:
    """Simulated devices whose last sent report says `version` is serving (the simulator's side, no API call)."""
    count = 0
    for device in fleet.devices:
        last = device.last_reported
        if last is not None and any(m.name == MODEL and m.version == version for m in last.models):
            count += 1
    return count


def settled(h: Harness) -> bool:
    """Nothing left to apply, and the control plane holds every device's last report."""
    return h.fleet.idle() and not lost_reports(list_devices(h.api), last_sent(h))


def last_sent(h: Harness) -> dict[str, Any]:
    return {d.device_id: d.last_reported for d in h.fleet.devices}


def converge(h: Harness, version: int, timeout: float) -> None:
    """The whole fleet on `version` (all at once), every report stored; RuntimeError if not."""
    rollout_id = rollout(h.api, everyone(version))
    h.wait(lambda: phase(h.api, rollout_id) in FINAL, timeout, f"the fleet on version {version}", every=0.5)
    if (final := phase(h.api, rollout_id)) != "succeeded":
        raise RuntimeError(f"the rollout to version {version} ended {final}")
    h.wait(lambda: settled(h), timeout, "every report stored", every=0.5)


def run_storm(h: Harness, version_a: int, version_b: int, timeout: float) -> StormResult:
    """Converge on A, then roll out B and restart the broker once the first devices reported B."""
    converge(h, version_a, timeout)
    fleet, n = h.fleet, len(h.fleet.devices)
    sent_before = sum(fleet.messages().values())
    pid = h.control_plane.process.pid  # type: ignore[union-attr]
    with HealthProbe(h.control_plane.url, h.control_plane.verify) as health, PhaseProbe(pid) as usage:
        posted = time.monotonic()
        rollout_id = rollout(h.api, everyone(version_b))
        first = max(1, round(n * RESTART_AFTER_SHARE))
        h.wait(lambda: reported(fleet, version_b) >= first, timeout, "the first devices to report B", every=0.02)
        at_restart = reported(fleet, version_b)
        connects = {d.device_id: d.connects for d in fleet.devices}
        restarted = time.monotonic()
        down_s = h.broker.restart()

        def back() -> bool:
            return all(d.connected and d.connects > connects[d.device_id] for d in fleet.devices)

        h.wait(back, timeout, "every device reconnected", every=0.05)
        reconnected = time.monotonic() - restarted
        h.wait(lambda: phase(h.api, rollout_id) in FINAL, timeout, "the rollout across the restart", every=0.2)
        finished = time.monotonic()
        settled_s: float | None = None
        try:
            h.wait(lambda: settled(h), timeout, "every report stored", every=0.5)
            settled_s = time.monotonic() - finished
        except RuntimeError:
            pass  # reported below as the lost reports
    devices = list_devices(h.api)
    return StormResult(
        devices=n,
        reported_b_at_restart=at_restart,
        broker_down_s=down_s,
        reconnected_s=reconnected,
        link_back_s=health.link_back_s(restarted),
        rollout_s=finished - posted,
        outcome=phase(h.api, rollout_id),
        settled_s=settled_s,
        lost=lost_reports(devices, last_sent(h)),
        serving_b=len(serving(devices, version_b)),
        cpu_s=usage.cpu_s,
        peak_rss_mb=usage.peak_rss_mb,
        messages_per_device=(sum(fleet.messages().values()) - sent_before) / n,
        health=health,
    )
