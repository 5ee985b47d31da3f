"""Rollback benchmark: how fast the whole fleet is back on the previous version, and what a rollout costs in MQTT.

With 3 real agents (`edge-agent run`) on a private Mosquitto and the control plane as `edgectl server` (a process),
each run rolls version 2 out all at once with a long bake, waits until every device serves it, then aborts as an
operator would (`POST /v1/rollouts/{id}/abort`) and times:
  - abort -> every device reported back on version 1 (GET /v1/devices, polled every 20 ms);
  - abort -> the rollout's phase `rolled_back`.
Medians over `--runs`. Separately, an MQTT client logged in as the control-plane user subscribes to `edge/#` and
counts messages per device by topic leaf (desired, reported, events, telemetry, status) for one complete rollout
of a version no device had (create -> succeeded) and for one rollback (abort -> rolled_back + fleet on v1).
Telemetry is periodic (agents at telemetry_interval_s = 1 here), so its count measures the duration, not the
protocol.

    .venv/bin/python benchmarks/rollback.py [--runs 5]

Not a test; needs the `mosquitto` and `mosquitto_passwd` binaries (skips with a message otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.rollouts.fleet import (
    LoadGenerator,
    devices,
    fleet_serves,
    serving_urls,
    start_agents,
)
from tests.integration.rollouts.models import inputs_only, linear, push_and_build, slow
from tests.support import (
    CONTROL_PLANE_USER,
    ControlPlaneProcess,
    Mosquitto,
    mosquitto_available,
    password_for,
    wait_for,
)

MODEL = "bench-model"
DEVICE_IDS = ("dev-1", "dev-2", "dev-3")


class TopicCounter:
    """Counts messages on edge/devices/{id}/{leaf} while recording."""

    def __init__(self, broker: Mosquitto) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.recording = False
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self._client.username_pw_set(CONTROL_PLANE_USER, password_for(CONTROL_PLANE_USER))
        subscribed = threading.Event()
        self._client.on_connect = lambda c, *_: c.subscribe("edge/#", qos=1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._count
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the counter could not subscribe to edge/#")

    def _count(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if self.recording and len(parts) >= 4 and parts[1] == "devices" and not message.retain:
            with self._lock:
                self.counts[(parts[2], "/".join(parts[3:]))] += 1

    def record(self) -> None:
        with self._lock:
            self.counts.clear()
        self.recording = True

    def stop(self) -> Counter[tuple[str, str]]:
        self.recording = False
        with self._lock:
            return Counter(self.counts)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def create(api: Any, version: int, bake_s: float = 0, gates: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"model": MODEL, "version": version, "selector": {"labels": {}}, "bake_s": bake_s}
    if gates is not None:
        body["gates"] = gates
    answer = api.post("/v1/rollouts", json=body)
    if answer.status_code != 201:
        raise RuntimeError(f"rollout refused: {answer.status_code} {answer.text}")
    return str(answer.json()["id"])


def wait_phase(api: Any, rollout_id: str, phase: str, timeout: float = 120) -> None:
    wait_for(lambda: api.get(f"/v1/rollouts/{rollout_id}").json()["phase"] == phase, timeout=timeout, what=phase)


def timed(condition: Callable[[], bool], timeout: float = 60) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.02)
    return time.monotonic() - start


def gate_trips(api: Any, current: int, runs: int) -> list[float]:
    """Roll a slow version out under load with a p99 gate; time from the gate tripping to the fleet back on `current`.

    The trip is seen as the rollout leaving `in_progress` (polled every 20 ms): the executor publishes the
    restores in the same pass that records the failed gate.
    """
    heavy = push_and_build(api, MODEL, slow(), inputs_only())["version"]
    urls = list(serving_urls(api).values())
    gate = {"min_requests": 20, "max_p99_ratio": 3.0, "on_fail": "abort"}
    times = []
    for run in range(runs):
        load = LoadGenerator(urls, MODEL, threads=1, rows=8).start()
        try:
            # The current version's latency under this load is the baseline the p99-ratio gate compares against.
            wait_for(lambda load=load: len(load.answers) >= 90, timeout=60, what="load flowing on v1")
            rollout_id = create(api, heavy, bake_s=2, gates=gate)
            timed(lambda rid=rollout_id: api.get(f"/v1/rollouts/{rid}").json()["phase"] != "in_progress", 120)
            phase = api.get(f"/v1/rollouts/{rollout_id}").json()["phase"]
            if phase not in ("rolling_back", "rolled_back"):
                raise RuntimeError(f"the gate did not trip: rollout {rollout_id} is {phase}")
            try:
                times.append(timed(lambda: fleet_serves(api, MODEL, current, DEVICE_IDS)))
            except RuntimeError:
                body = api.get(f"/v1/rollouts/{rollout_id}").json()
                seen = {d: (v.get("reported") or {}).get("models") for d, v in devices(api).items()}
                raise RuntimeError(f"fleet not back on v{current}: rollout {body} devices {seen}") from None
            wait_phase(api, rollout_id, "rolled_back")
        finally:
            load.stop()
        print(f"gate run {run + 1}: fleet back on v{current} {times[-1]:.3f} s after the gate tripped")
    return times


def per_device(counts: Counter[tuple[str, str]]) -> dict[str, float]:
    leaves = sorted({leaf for _, leaf in counts})
    return {leaf: sum(n for (d, lf), n in counts.items() if lf == leaf) / len(DEVICE_IDS) for leaf in leaves}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="operator-abort runs")
    parser.add_argument("--gate-runs", type=int, default=3, help="latency-gate runs (each ~5 s under load)")
    args = parser.parse_args()
    if not mosquitto_available():
        print("skipped: the mosquitto and mosquitto_passwd binaries are needed (apt-get install mosquitto)")
        return 0
    with tempfile.TemporaryDirectory(prefix="rollback-bench-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(workdir=root / "broker")
        broker.start()
        control_plane = ControlPlaneProcess(broker, root / "cp-data")
        agents: dict[str, Any] = {}
        counter: TopicCounter | None = None
        try:
            control_plane.start()
            api = control_plane.client()
            agents = start_agents(broker, api, root / "agents")
            wait_for(
                lambda: all(devices(api).get(d, {}).get("presence") == "online" for d in DEVICE_IDS),
                timeout=60,
                what="agents online",
            )
            v1 = push_and_build(api, MODEL, linear(1), inputs_only())["version"]
            v2 = push_and_build(api, MODEL, linear(2), inputs_only())["version"]
            v3 = push_and_build(api, MODEL, linear(3), inputs_only())["version"]  # never on a device before
            wait_phase(api, create(api, v1), "succeeded")
            counter = TopicCounter(broker)

            to_fleet, to_phase = [], []
            rollback_counts: Counter[tuple[str, str]] = Counter()
            for run in range(args.runs):
                rollout_id = create(api, v2, bake_s=600)
                wait_for(lambda: fleet_serves(api, MODEL, v2, DEVICE_IDS), timeout=60, what="fleet on v2")
                counter.record()
                answer = api.post(f"/v1/rollouts/{rollout_id}/abort")
                start = time.monotonic()
                if answer.status_code >= 300:
                    raise RuntimeError(f"abort refused: {answer.status_code} {answer.text}")
                timed(lambda: fleet_serves(api, MODEL, v1, DEVICE_IDS))
                to_fleet.append(time.monotonic() - start)
                timed(lambda rid=rollout_id: api.get(f"/v1/rollouts/{rid}").json()["phase"] == "rolled_back")
                to_phase.append(time.monotonic() - start)
                counts = counter.stop()
                if run == 0:
                    rollback_counts = counts
                print(f"run {run + 1}: fleet back on v{v1} {to_fleet[-1]:.3f} s, rolled_back {to_phase[-1]:.3f} s")

            counter.record()
            start = time.monotonic()
            rollout_id = create(api, v3)
            wait_phase(api, rollout_id, "succeeded")
            complete_s = time.monotonic() - start
            rollout_counts = counter.stop()

            gate_to_fleet = gate_trips(api, v3, args.gate_runs)  # the fleet runs v3 now: that is what it returns to

            print(f"\n3 agents, {args.gate_runs} runs: latency gate trips under load -> fleet reported back on v{v3}")
            print(
                f"  median {statistics.median(gate_to_fleet):.3f} s "
                f"(min {min(gate_to_fleet):.3f}, max {max(gate_to_fleet):.3f})"
            )
            print(f"\n3 agents, {args.runs} runs: abort -> fleet reported back on the previous version")
            print(f"  median {statistics.median(to_fleet):.3f} s (min {min(to_fleet):.3f}, max {max(to_fleet):.3f})")
            print(f"  abort -> phase rolled_back: median {statistics.median(to_phase):.3f} s")
            print("\nMQTT messages per device (non-retained deliveries to a control-plane subscriber on edge/#):")
            fresh = per_device(rollout_counts)
            print(f"  one complete all-at-once rollout of a new version ({complete_s:.2f} s): {fresh}")
            print(f"  one rollback (first run): {per_device(rollback_counts)}")
            return 0
        finally:
            if counter is not None:
                counter.close()
            for agent in agents.values():
                agent.terminate()
            control_plane.stop()
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
