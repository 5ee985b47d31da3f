"""N simulated devices in one process: connecting them, scheduling their applies, their telemetry and faults.

Connections open `connect_concurrency` at a time (a device's CONNACK frees its place), after a random
`connect_jitter_s`. A desired state a device receives is applied after a random `apply_jitter_s`, one apply per
device at a time, the newest document winning (the daemon's ApplyWorker): on `workers` threads (8: an apply is
CPU-bound Python, and more threads than that only fight over the GIL - 128 of them took the 1,000-device abort from
3.0 to 4.8 s and spread the desired states' arrival over 2 s instead of 0.7 s), or on `waiting_workers` threads for a
device whose download is made to take time (`apply_delay_s`, slow downloads), so that its sleep never holds up the
others. A restore from the previous slot downloads nothing. Telemetry, when `telemetry_interval_s` > 0, reports
simulated traffic on each device's active models, spread over the interval. Faults (`FaultPlan`) pick a stable share
of devices by hash, and can be changed while the fleet runs.

Must never decide for a device what its core decides; must never scan the fleet per message.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
import threading
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from benchmarks.fleet_simulation.device import DeviceHooks, SimDevice
from benchmarks.fleet_simulation.mux import MqttMux, raise_fd_limit
from benchmarks.fleet_simulation.ports import ArtifactCache, DeviceFaults
from edge_agent.core.deadlines import Deadlines
from edge_agent.outbox import Later
from edge_agent.protocol import ModelTelemetry, Topics, Verifier


@dataclass(frozen=True)
class FaultPlan:
    """Which share of the fleet misbehaves, and how. Shares are in [0, 1]; a device is chosen by a hash of its id
    and the fault's name (stable across runs with the same `seed`)."""

    self_test_fail_share: float = 0.0
    cut_download_share: float = 0.0
    slow_download_share: float = 0.0
    slow_download_s: float = 30.0
    disconnect_share: float = 0.0  # cut the connection on each new desired state, reconnect after reconnect_s
    reconnect_s: float = 2.0
    slow_serving_share: float = 0.0  # telemetry: serve `slow_version` at slow_latency_ms
    slow_version: int | None = None
    slow_latency_ms: float = 500.0
    seed: int = 0

    def chosen(self, fault: str, device_id: str, share: float) -> bool:
        if share <= 0:
            return False
        return zlib.crc32(f"{self.seed}:{fault}:{device_id}".encode()) / 2**32 < share


@dataclass(frozen=True)
class FleetOptions:
    count: int
    broker_host: str
    broker_port: int
    passwords: Callable[[str], str]
    id_prefix: str = "sim-"
    labels: dict[str, str] = field(default_factory=lambda: {"fleet": "sim"})
    topic_prefix: str = "edge"
    connect_concurrency: int = 200
    connect_jitter_s: float = 0.0
    apply_jitter_s: float = 0.0
    apply_delay_s: float = 0.0
    workers: int = 8
    waiting_workers: int = 128
    telemetry_interval_s: float = 0.0
    requests_per_window: int = 20
    latency_ms: float = 5.0
    deadlines: Deadlines = field(default_factory=Deadlines)
    shard: int = 0  # this process simulates every `shards`-th device from the `shard`-th (shards.py)
    shards: int = 1

    def device_ids(self) -> list[str]:
        """Every device of the fleet, in all shards."""
        width = max(5, len(str(self.count)))
        return [f"{self.id_prefix}{i:0{width}d}" for i in range(1, self.count + 1)]

    def own_ids(self) -> list[str]:
        """The devices this process simulates."""
        return self.device_ids()[self.shard :: self.shards]


class Fleet:
    def __init__(
        self, options: FleetOptions, verifier: Verifier, cache: ArtifactCache, faults: FaultPlan | None = None
    ) -> None:
        self.options = options
        self.faults = faults or FaultPlan()
        self.mux = MqttMux()
        topics = Topics(options.topic_prefix)
        self.later = Later()
        hooks = DeviceHooks(self._connected, self._schedule, self._faults_of, self.later)
        deadlines = options.deadlines
        self.devices = [
            SimDevice(d, options.passwords(d), options.labels, topics, verifier, cache, self.mux, hooks, deadlines)
            for d in options.own_ids()
        ]
        self.by_id = {d.device_id: d for d in self.devices}
        self._pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="sim-apply")
        self._waiting_pool = ThreadPoolExecutor(max_workers=options.waiting_workers, thread_name_prefix="sim-wait")
        self._connect_slots = threading.BoundedSemaphore(max(1, options.connect_concurrency))
        self._connecting: set[str] = set()
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, SimDevice]] = []
        self._seq = itertools.count()
        self._timer_wake = threading.Condition()
        self._stopping = threading.Event()
        self.applies = 0
        self.apply_errors = 0
        self.telemetry_interval_s = options.telemetry_interval_s  # may change while running; 0: none

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        raise_fd_limit(self.options.count + 1024)
        self.mux.start()
        threading.Thread(target=self._timer_loop, name="sim-jitter", daemon=True).start()
        threading.Thread(target=self._connect_all, name="sim-connect", daemon=True).start()
        threading.Thread(target=self._telemetry_loop, name="sim-telemetry", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        with self._timer_wake:
            self._timer_wake.notify()
        for device in self.devices:
            self.mux.call(device.disconnect)
        deadline = time.monotonic() + 10
        while any(d.connected for d in self.devices) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._waiting_pool.shutdown(wait=False, cancel_futures=True)
        self.later.close()
        self.mux.stop()

    def connected_count(self) -> int:
        return sum(1 for d in self.devices if d.connected)

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected_count() == len(self.devices):
                return True
            time.sleep(0.05)
        return False

    def idle(self) -> bool:
        """No apply is scheduled or running on any device."""
        return not any(d.busy or d.latest is not None for d in self.devices)

    def messages(self) -> Counter[str]:
        """Messages sent (by topic leaf) and desired states received, over the whole fleet."""
        total: Counter[str] = Counter()
        for device in self.devices:
            total.update(device.sent)
            total.update({f"received {leaf}": n for leaf, n in device.received.items()})
        return total

    def device_ids(self) -> list[str]:
        return [d.device_id for d in self.devices]

    def marks(self, since: float) -> tuple[list[float], list[float]]:
        """Seconds after `since` (time.monotonic(), one clock for every process of the machine) at which each
        device received its last desired state, and sent its last report (those that did since)."""
        got = [d.received_at - since for d in self.devices if d.received_at > since]
        sent = [d.reported_at - since for d in self.devices if d.reported_at > since]
        return got, sent

    def timeline(self, since: float) -> str:
        """When, after `since`, the devices received their desired states and sent their last reports."""
        got, sent = self.marks(since)
        return describe_timeline(sorted(got), sorted(sent))

    # -- connecting ------------------------------------------------------------------------------------------

    def _connect_all(self) -> None:
        jitter = self.options.connect_jitter_s
        for device in self.devices:
            if self._stopping.is_set():
                return
            self._connect_slots.acquire()
            with self._lock:
                self._connecting.add(device.device_id)
            delay = random.uniform(0, jitter) if jitter > 0 else 0.0
            self.mux.call(functools.partial(device.connect, self.options.broker_host, self.options.broker_port), delay)

    def _connected(self, device: SimDevice, ok: bool) -> None:
        with self._lock:
            first = device.device_id in self._connecting
            self._connecting.discard(device.device_id)
        if first:
            self._connect_slots.release()

    # -- applying --------------------------------------------------------------------------------------------

    def _faults_of(self, device: SimDevice) -> DeviceFaults:
        plan, d = self.faults, device.device_id
        slow = plan.chosen("slow-download", d, plan.slow_download_share)
        return DeviceFaults(
            fail_self_test=plan.chosen("self-test", d, plan.self_test_fail_share),
            cut_download=plan.chosen("cut-download", d, plan.cut_download_share),
            slow_download_s=plan.slow_download_s if slow else 0.0,
            download_delay_s=self.options.apply_delay_s,
        )

    def _schedule(self, device: SimDevice) -> None:
        """A device got a desired state (mux thread): apply it after the jitter, unless one is already queued."""
        plan = self.faults
        signed = device.latest
        if signed is not None and plan.chosen("disconnect", device.device_id, plan.disconnect_share):
            key = hash(signed.signature)
            if key not in device.seen_generations:
                device.seen_generations.add(key)
                device.latest = None  # the retained document comes back on reconnect
                device.cut(plan.reconnect_s)
                return
        with self._lock:
            if device.busy:
                return  # the running apply takes the newest document when it is done
            device.busy = True
        jitter = self.options.apply_jitter_s
        if jitter > 0:
            with self._timer_wake:
                heapq.heappush(self._timers, (time.monotonic() + random.uniform(0, jitter), next(self._seq), device))
                self._timer_wake.notify()
        else:
            self._submit(device)

    def _timer_loop(self) -> None:
        while not self._stopping.is_set():
            with self._timer_wake:
                now = time.monotonic()
                if not self._timers or self._timers[0][0] > now:
                    wait = self._timers[0][0] - now if self._timers else 1.0
                    self._timer_wake.wait(wait)
                    continue
                device = heapq.heappop(self._timers)[2]
            self._submit(device)

    def _submit(self, device: SimDevice) -> None:
        faults = self._faults_of(device)
        waits = faults.download_delay_s + faults.slow_download_s > 0
        (self._waiting_pool if waits else self._pool).submit(self._apply, device)

    def _apply(self, device: SimDevice) -> None:
        while True:
            signed = device.take_latest()
            if signed is not None:
                try:
                    result = device.core.handle(signed)
                    said = f"gen {result.generation}: {result.outcome.value} ok={result.ok} {result.reason}"
                    device.handled.append(said)
                    self.applies += 1
                except Exception as exc:
                    device.handled.append(f"raised {exc!r}: {traceback.format_exc(limit=-4)}")
                    self.apply_errors += 1
            with self._lock:
                if device.latest is None:
                    device.busy = False
                    return

    # -- telemetry -------------------------------------------------------------------------------------------

    def _telemetry_loop(self) -> None:
        """Every 0.1 s, one slice of the fleet sends its window: each device once per interval, spread evenly."""
        tick = 0.1
        for n in itertools.count():
            if self._stopping.wait(tick):
                return
            interval = self.telemetry_interval_s
            if interval <= 0:
                continue
            slices = max(1, round(interval / tick))
            part = n % slices
            for device in itertools.islice(self.devices, part, None, slices):
                device.publish_telemetry(interval, self._traffic(device))

    def _traffic(self, device: SimDevice) -> list[ModelTelemetry]:
        """What the device's users asked of its active models in one window (simulated traffic)."""
        plan, options = self.faults, self.options
        slow = plan.chosen("slow-serving", device.device_id, plan.slow_serving_share)
        models = []
        for name, record in device.core.state.active.items():
            latency = plan.slow_latency_ms if slow and record.version == plan.slow_version else options.latency_ms
            models.append(
                ModelTelemetry(
                    name=name,
                    version=record.version,
                    requests=options.requests_per_window,
                    errors=0,
                    p50_ms=latency * 0.8,
                    p99_ms=latency,
                )
            )
        return models


def describe_timeline(got: list[float], sent: list[float]) -> str:
    """First and last of each (sorted, in seconds): the desired states' arrival and the last reports."""
    if not got or not sent:
        return "no desired state received since"
    return (
        f"{len(got)} received a desired state from {got[0]:.2f} s to {got[-1]:.2f} s; "
        f"{len(sent)} reported last from {sent[0]:.2f} s to {sent[-1]:.2f} s"
    )
