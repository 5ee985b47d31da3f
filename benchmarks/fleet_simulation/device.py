"""One simulated device: the agent's own `AgentCore` over simulated ports, on one real MQTT connection.

It speaks exactly as `edge_agent.daemon.Daemon` does: the retained QoS 1 "offline" presence as its last will, a
retained "online" presence and its reported state on every connect, its step events (QoS 1) and its retained
reported state through the agent's own outbox (edge_agent.outbox: batched), QoS 0 telemetry; every message sealed in
the protocol's envelope. A desired state is opened with `open_envelope` and handed to the core, which verifies its
signature and generation, decides and applies it: the simulator never decides anything the agent would. Like the
daemon's ApplyWorker, a device applies the newest document it holds, one at a time (`Fleet` schedules it on a pool).

Must never reimplement an agent decision (signature, generation, reconcile, the apply steps, reporting).
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from pydantic import BaseModel

from benchmarks.fleet_simulation.mux import MqttMux
from benchmarks.fleet_simulation.ports import (
    ArtifactCache,
    DeviceFaults,
    MemoryJournal,
    MemoryStore,
    SimulatedFetcher,
    SimulatedRunnerFactory,
)
from edge_agent import __version__
from edge_agent.adapters.mqtt_session import RECONNECT_MAX_S, RECONNECT_MIN_S, ReconnectSchedule
from edge_agent.core.agent import AgentCore
from edge_agent.core.context import AgentIdentity
from edge_agent.core.deadlines import Deadlines
from edge_agent.core.ports import AgentPorts
from edge_agent.outbox import Outbox, Schedule
from edge_agent.protocol import (
    DeviceEvent,
    EventBatch,
    HardwareFacts,
    MessageKind,
    ModelTelemetry,
    Presence,
    PresenceStatus,
    ProtocolError,
    ReportedState,
    SignedDesiredState,
    Telemetry,
    Topics,
    Verifier,
    open_envelope,
    seal,
)
from edge_agent.protocol.vocabulary import Channel, ExecutionProvider

log = logging.getLogger(__name__)

SIM_HARDWARE = HardwareFacts(
    gpu_class="cpu-x86_64",
    arch="x86_64",
    onnxruntime_version="simulated",
    available_providers=[ExecutionProvider.CPU.value],
    cpu_count=2,
    memory_mb=2048,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class DeviceHooks:
    """What a device tells its fleet: connected (or not), a desired state to schedule, a cut to heal later."""

    def __init__(
        self,
        connected: Callable[[SimDevice, bool], None],
        schedule: Callable[[SimDevice], None],
        faults_of: Callable[[SimDevice], DeviceFaults],
        later: Schedule,
    ) -> None:
        self.connected = connected
        self.schedule = schedule
        self.faults_of = faults_of
        self.later = later  # the outboxes' deadlines (edge_agent.outbox.Later), shared by the fleet


class SimDevice:
    def __init__(
        self,
        device_id: str,
        password: str,
        labels: dict[str, str],
        topics: Topics,
        verifier: Verifier,
        cache: ArtifactCache,
        mux: MqttMux,
        hooks: DeviceHooks,
        deadlines: Deadlines,
    ) -> None:
        self.device_id = device_id
        self.password = password
        self.topics = topics
        self._mux = mux
        self._hooks = hooks
        self.store = MemoryStore(device_id, cache)
        self.outbox = Outbox(self._publish_events, self.publish_reported, hooks.later)
        ports = AgentPorts(
            verifier=verifier,
            fetcher=SimulatedFetcher(self.store, cache, self.faults),
            runners=SimulatedRunnerFactory(self.faults),
            journal=MemoryJournal(),
            store=self.store,
            clock=utcnow,
            on_event=self.outbox.event,
            on_change=self.outbox.changed,
        )
        identity = AgentIdentity(device_id, SIM_HARDWARE, __version__, labels, serving_url=None, channel=Channel.MQTT)
        self.core = AgentCore(identity, ports, deadlines)
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.received_at = 0.0  # time.monotonic() of the last desired state received
        self.reported_at = 0.0  # ... and of the last reported state sent
        self.last_reported: ReportedState | None = None
        self.connected = False
        self.latest: SignedDesiredState | None = None  # the newest unapplied document (the ApplyWorker's slot)
        self.busy = False  # an apply of this device is scheduled or running
        self.seen_generations: set[int] = set()
        self.handled: deque[str] = deque(maxlen=4)  # what the core made of the last documents (or what it raised)
        self._publish_lock = threading.Lock()
        self._latest_lock = threading.Lock()  # a document arriving while the worker takes one is never lost
        # The agent's own reconnect schedule (jittered, capped doubling).
        self._reconnects = ReconnectSchedule(RECONNECT_MIN_S, RECONNECT_MAX_S, random.random)
        self._attempting = False  # a connection attempt is under way: its end, however it ends, schedules the next
        self._leaving = False  # the fleet said goodbye: no reconnect
        self.connects = 0  # connections the broker accepted
        self._subscribe_mid: int | None = None  # the connection's SUBSCRIBE, until its SUBACK
        self.client = self._new_client()

    def faults(self) -> DeviceFaults:
        return self._hooks.faults_of(self)

    # -- the connection (mux thread) -------------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        client = self._mux.new_client(self.device_id, self.device_id, self.password)
        will = self._presence(PresenceStatus.OFFLINE)
        client.will_set(self.topics.status(self.device_id), will, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = lambda *_: self._retry()
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def connect(self, host: str, port: int) -> None:
        """Start connecting (mux thread); the fleet hears `connected` when the broker answers."""
        self._host, self._port = host, port
        self._attempting = True
        try:
            self.client.connect(host, port, keepalive=60)
        except OSError as exc:
            log.debug("%s: connect failed: %s", self.device_id, exc)
            self._hooks.connected(self, False)
            self._retry()

    def disconnect(self) -> None:
        """A clean goodbye (mux thread): no will is published."""
        self._leaving = True
        self.client.disconnect()

    def _retry(self) -> None:
        """Schedule the next attempt after the agent's jittered wait (the session's `ReconnectSchedule`)."""
        self._attempting = False
        if not self._leaving:
            self._mux.call(self._reconnect, delay_s=self._reconnects.next())

    def _reconnect(self) -> None:
        if self._leaving:
            return
        self._attempting = True
        try:
            self.client.reconnect()
        except OSError:
            self._retry()

    def cut(self, reconnect_after_s: float) -> None:
        """Drop the connection without a DISCONNECT (the broker publishes the will), reconnect later."""

        def drop() -> None:
            sock = self.client.socket()
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(2)
            self._mux.call(self._reconnect, delay_s=reconnect_after_s)

        self._mux.call(drop)

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            self._hooks.connected(self, False)
            self._retry()
            return
        self._reconnects.reset()
        _, self._subscribe_mid = client.subscribe(self.topics.desired(self.device_id), qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: object, mid: int, _r: object, _p: object) -> None:
        """Connected once the broker acknowledged the subscription, as the agent's session says it: the presence
        and report published now go out after whatever paho resent from before the connection."""
        if mid != self._subscribe_mid:
            return
        self._subscribe_mid = None
        self._attempting = False
        self.connects += 1
        self.connected = True
        self._publish(self.topics.status(self.device_id), self._presence(PresenceStatus.ONLINE), "status", True)
        self.outbox.flush(report=True)
        self._hooks.connected(self, True)

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        was = self.connected
        self.connected = False
        self._subscribe_mid = None
        if was or self._attempting:  # a connection lost, or an attempt the broker closed before its SUBACK
            self._retry()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        self.received["desired"] += 1
        self.received_at = time.monotonic()
        if not message.payload:
            return  # a cleared retained message
        try:
            _, signed = open_envelope(bytes(message.payload), MessageKind.DESIRED, SignedDesiredState)
        except ProtocolError as exc:
            self.core.report_rejected(0, f"malformed desired-state message: {exc}")
            return
        with self._latest_lock:
            self.latest = signed
        self._hooks.schedule(self)

    # -- what the daemon publishes ---------------------------------------------------------------------------

    def _presence(self, status: PresenceStatus) -> bytes:
        return seal(MessageKind.STATUS, self.device_id, Presence(state=status), utcnow())

    def _publish(self, topic: str, payload: bytes, leaf: str, retain: bool = False, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)
        self.sent[leaf] += 1

    def _sealed(self, kind: MessageKind, body: BaseModel) -> bytes:
        return seal(kind, self.device_id, body, utcnow())

    def _publish_events(self, events: Sequence[DeviceEvent]) -> None:
        payload = self._sealed(MessageKind.EVENTS, EventBatch(events=list(events)))
        self._publish(self.topics.events(self.device_id), payload, "events")

    def publish_reported(self) -> None:
        """The retained reported state, remembered as the last one sent (in the order the broker gets them)."""
        with self._publish_lock:
            reported = self.core.reported()
            payload = self._sealed(MessageKind.REPORTED, reported)
            self._publish(self.topics.reported(self.device_id), payload, "reported", retain=True)
            self.last_reported = reported
            self.reported_at = time.monotonic()

    def publish_telemetry(self, window_s: float, models: list[ModelTelemetry]) -> None:
        if self.connected:
            payload = self._sealed(MessageKind.TELEMETRY, Telemetry(window_s=window_s, models=models))
            self._publish(self.topics.telemetry(self.device_id), payload, "telemetry", qos=0)

    # -- the apply worker's step (a pool thread) -------------------------------------------------------------

    def take_latest(self) -> SignedDesiredState | None:
        with self._latest_lock:
            signed, self.latest = self.latest, None
        return signed
