"""What the benchmark measures around a phase: the control plane's CPU-seconds and peak RSS (from /proc), API
latency from a modest poller, `/healthz` answers through a reconnect storm, and the broker alone moving the same
number of messages (the baseline).

Must never load what it measures: the pollers ask 5 and 10 times a second, the /proc sampler reads two small files.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class PhaseProbe:
    """Samples the control plane while a phase runs: RSS every 0.2 s and, when `url` is set, GET `url` 5/s; the
    CPU-seconds of the processes named in `also` (the simulator itself, the broker) over the same span."""

    pid: int
    api: httpx.Client | None = None
    url: str | None = None
    also: dict[str, int] = field(default_factory=dict)
    also_cpu_s: dict[str, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _cpu0: float = 0.0

    def __enter__(self) -> PhaseProbe:
        self._cpu0 = cpu_seconds(self.pid)
        self.also_cpu_s = {name: -cpu_seconds(pid) for name, pid in self.also.items()}
        self._thread = threading.Thread(target=self._run, name="phase-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.cpu_s = cpu_seconds(self.pid) - self._cpu0
        self.also_cpu_s = {name: cpu_seconds(pid) + self.also_cpu_s[name] for name, pid in self.also.items()}

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss_mb = max(self.peak_rss_mb, rss_mb(self.pid))
            if self.api is not None and self.url is not None:
                start = time.monotonic()
                try:
                    self.api.get(self.url, timeout=60)
                except httpx.HTTPError:
                    continue
                self.latencies_ms.append((time.monotonic() - start) * 1000)

    def p50_p99(self) -> tuple[float | None, float | None]:
        return percentile(self.latencies_ms, 50), percentile(self.latencies_ms, 99)


@dataclass(frozen=True)
class HealthAnswer:
    at: float  # time.monotonic() when the request was sent
    latency_ms: float
    ok: bool  # 200 (healthy) or 503 (degraded: broker link down) with a body that parses
    mqtt_connected: bool | None  # what the answer said of the control plane's broker link (None: no answer)


@dataclass
class HealthProbe:
    """GET `/healthz` every `every_s` on a thread and a connection of its own, from `__enter__` to `__exit__`:
    each answer's latency, the requests that failed (an error, a status other than 200 or 503, or no answer within
    `timeout_s`), and what each answer said of the control plane's MQTT link."""

    base_url: str
    verify: Any = True
    every_s: float = 0.1
    timeout_s: float = 5.0
    answers: list[HealthAnswer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthProbe:
        self._thread = threading.Thread(target=self._run, name="healthz-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, verify=self.verify, timeout=self.timeout_s) as client:
            next_at = time.monotonic()
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                next_at += self.every_s
                self.answers.append(self._ask(client))

    @staticmethod
    def _ask(client: httpx.Client) -> HealthAnswer:
        start = time.monotonic()
        try:
            answer = client.get("/healthz")
            ok = answer.status_code in (200, 503)  # 503: an answer that says the broker link is down (degraded)
            connected = answer.json().get("mqtt_connected") if ok else None
        except (httpx.HTTPError, ValueError):
            connected, ok = None, False
        return HealthAnswer(start, (time.monotonic() - start) * 1000, ok, connected)

    @property
    def failures(self) -> int:
        return sum(1 for a in self.answers if not a.ok)

    @property
    def max_ms(self) -> float:
        return max((a.latency_ms for a in self.answers), default=0.0)

    def percentile_ms(self, q: float) -> float | None:
        return percentile([a.latency_ms for a in self.answers], q)

    def link_back_s(self, since: float) -> float | None:
        """Seconds from `since` until the control plane said its broker link was up again after it had said down
        (None: it never said down, or never up again)."""
        down = next((a.at for a in self.answers if a.at >= since and a.mqtt_connected is False), None)
        if down is None:
            return None
        up = next((a.at for a in self.answers if a.at > down and a.mqtt_connected), None)
        return None if up is None else up - since


def broker_alone(host: str, port: int, user: str, password: str, messages: int, payload_bytes: int) -> float:
    """Seconds for a bare paho publisher to move `messages` QoS 1 messages of `payload_bytes` through the broker
    to a bare paho subscriber (what the control plane's traffic would cost with no control plane)."""
    count = [0]
    done = threading.Event()

    def on_message(*_: object) -> None:
        count[0] += 1
        if count[0] >= messages:
            done.set()

    subscribed = threading.Event()
    said: list[str] = []  # what the broker answered the subscriber's CONNECT, for the error

    def on_connect(client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        said.append(str(reason))
        if not reason.is_failure:
            client.subscribe("edge/bench/alone/#", qos=1)

    sub = _client("bench-sub", user, password, on_message)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_connect = on_connect
    pub = _client("bench-pub", user, password, None)
    pub.max_inflight_messages_set(0)  # no limit: paho rescans its whole in-flight table on every PUBACK when limited
    for client in (sub, pub):
        client.connect(host, port)
        client.loop_start()
    try:
        if not subscribed.wait(60):  # a broker still draining a fleet's backlog answers late
            answer = ", ".join(said) or "no CONNACK"
            raise RuntimeError(f"the baseline subscriber could not subscribe within 60 s (CONNACK: {answer})")
        payload = b"x" * payload_bytes
        start = time.monotonic()
        for i in range(messages):
            pub.publish(f"edge/bench/alone/{i % 1000}", payload, qos=1)
        if not done.wait(max(60.0, messages / 1000)):
            raise RuntimeError(f"the broker moved {count[0]} of {messages} messages")
        return time.monotonic() - start
    finally:
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()


def _client(name: str, user: str, password: str, on_message: Callable[..., None] | None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{os.getpid()}")
    client.username_pw_set(user, password)
    client.max_queued_messages_set(0)
    if on_message is not None:
        client.on_message = on_message
    return client


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
