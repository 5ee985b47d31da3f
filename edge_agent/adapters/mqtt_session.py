"""One MQTT session for the agent and the control plane: the only module of the project that imports paho-mqtt.

paho-mqtt 2 (callback API v2). A session connects with the program's TLS CA and credentials and, where given, a
retained QoS 1 last will; reconnects on paho's network thread with jittered, capped exponential backoff
(`ReconnectSchedule`: `edge_agent.core.backoff.next_delay` from 1 s to 30 s, each wait drawn from the upper half of
its step, so that a fleet that lost its broker at once does not come back in lock-step waves); subscribes its topics
at QoS 1 on every connection and says it is connected (and calls the on-connected hook) once the broker acknowledged
them; publishes at QoS 1, not retained, unless the caller says otherwise. QoS 1 messages published while offline go
out on the next connection, before anything the on-connected hook publishes (`_ready`). With protocol `auto` it
first probes MQTT 5 with a connection of its own, without the will (amqtt, the demo's 3.1.1-only broker, leaves a v5
CONNECT that carries a will unanswered), retrying with the same jittered backoff (from 0.5 s) while the broker is
unreachable; it falls back to 3.1.1 when the broker refuses 5 (CONNACK "unsupported protocol version", which paho
also reports for a 3.1.1 broker's return code 1) or drops or ignores the CONNECT, and stays on 5 for any other
refusal (wrong credentials are retried with backoff, on 5). Then it connects for good, will included.

paho's own reconnect delay (the same 1, 2, 4 ... s on every device) is set to zero: the session waits its drawn delay
in paho's `on_pre_connect` hook, which paho calls on its network thread before every connection attempt, whatever
ended the previous one (a refused CONNACK, a lost connection, a broker that is not listening). `stop` wakes that wait.

The agent's link (`edge_agent.adapters.mqtt_link`) and the control plane's (`control_plane.adapters.mqtt`) build on
it and keep only their topics and handlers (docs/decisions/0010). It must never parse a message body, import
anything of the project but the pure `edge_agent.core.backoff` (the control plane imports it), log a password, or
let a callback's exception reach paho's thread (the one exception it raises on purpose calls off an attempt).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from edge_agent.core.backoff import next_delay

if TYPE_CHECKING:
    from paho.mqtt.client import _OutPacket  # paho declares its queue's items only for type checkers

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
PROBE_RETRY_MIN_S = 0.5
PROBE_TIMEOUT_S = 10.0
SUBSCRIBE_QOS = 1
FAREWELL_TIMEOUT_S = 2.0
UNSUPPORTED_PROTOCOL_VERSION = 0x84  # CONNACK reason; paho maps a 3.1.1 broker's return code 1 to it
AUTO = "auto"  # the `protocol` setting that tries MQTT 5, then 3.1.1

OnMessage = Callable[[str, bytes], None]
"""Called on paho's network thread with (topic, payload) of every message the session receives."""
OnConnected = Callable[[], object]
"""Called on paho's network thread each time the broker accepts the session, after its topics are subscribed."""
Draw = Callable[[], float]
"""A uniform draw in [0, 1): the jitter of a reconnect wait (by default `random.random`, seeded from the OS)."""


class MqttVersion(str, Enum):
    V5 = "5"
    V311 = "3.1.1"


_PAHO_PROTOCOL = {MqttVersion.V5: MQTTProtocolVersion.MQTTv5, MqttVersion.V311: MQTTProtocolVersion.MQTTv311}


def versions_to_try(protocol: str) -> tuple[MqttVersion, ...]:
    """The MQTT versions a session tries, in order, for a `protocol` setting: `auto` is 5, then 3.1.1."""
    if protocol == AUTO:
        return (MqttVersion.V5, MqttVersion.V311)
    return (MqttVersion(protocol),)


def refuses_version(connack_reason: int | None) -> bool:
    """Whether a probe's answer means the broker does not speak the version tried: it refused it, or it sent no
    CONNACK at all (`None`: dropped or ignored the CONNECT). Any other refusal comes from a broker that does."""
    return connack_reason is None or connack_reason == UNSUPPORTED_PROTOCOL_VERSION


@dataclass(frozen=True)
class ProbeOutcome:
    reached: bool  # the TCP (and TLS) connection was made
    connack_reason: int | None = None  # None: no CONNACK came
    said: str = "no CONNACK"  # the CONNACK's reason, for the log


class ReconnectSchedule:
    """The waits before a session's reconnect attempts: `next_delay`'s doubling from `initial_s`, capped at `cap_s`,
    each wait drawn from the upper half of its step by `draw`. Counted from the last accepted connection (`reset`).
    The fleet simulator's devices use it too, so that they come back from a broker restart as agents do."""

    def __init__(self, initial_s: float, cap_s: float, draw: Draw) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self._draw = draw
        self.attempt = 0

    def next(self) -> float:
        """Seconds to wait before the next attempt; each call is one more attempt."""
        delay = next_delay(self.attempt, self.initial_s, self.cap_s, self._draw())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class BrokerSettings(Protocol):
    """What a session reads of a program's `mqtt` settings; the agent's and the control plane's both have it."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> SecretStr | None: ...
    @property
    def protocol(self) -> str: ...  # `auto`, `5` or `3.1.1`
    @property
    def keepalive_s(self) -> int: ...
    @property
    def tls_ca_file(self) -> Path | None: ...


@dataclass(frozen=True)
class SessionLimits:
    """paho's own queues for a session that moves many messages (the control plane's): QoS 1 messages in flight at
    once (paho's default, 20, paces a fleet's desired states in steps of 20) and messages queued beyond them
    (0: no limit). A session without limits keeps paho's defaults (the agent's)."""

    max_inflight: int = 20
    max_queued: int = 0


@dataclass(frozen=True)
class LastWill:
    """A retained QoS 1 message: the broker's last will for the session, or the farewell `stop` publishes."""

    topic: str
    payload: bytes


class MqttSession:
    """A broker session that keeps itself up until `stop`; methods may be called from any thread."""

    def __init__(
        self,
        settings: BrokerSettings,
        client_id: str,
        on_message: OnMessage,
        on_connected: OnConnected | None = None,
        will: LastWill | None = None,
        limits: SessionLimits | None = None,
        draw: Draw | None = None,
    ) -> None:
        self._settings = settings
        self._draw = draw or random.random  # seeded from the OS when the process starts: every device draws its own
        self._reconnects = ReconnectSchedule(RECONNECT_MIN_S, RECONNECT_MAX_S, self._draw)
        self._first_attempt = True
        self._ready_after: int | None = None  # the mid of the connection's SUBSCRIBE, until its SUBACK
        self._limits = limits
        self._client_id = client_id
        self._on_message_cb = on_message
        self._on_connected_cb = on_connected
        self._will = will
        self._versions = versions_to_try(settings.protocol)
        self._version_index = 0
        self._topics: dict[str, None] = {}  # an ordered set
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._stopping = threading.Event()
        self.connected = threading.Event()
        """Set while the broker has accepted the session (set and cleared by the session only)."""
        self.down_since: float | None = time.time()
        """Wall-clock time since when the session has not been connected (None while it is): for health reports."""

    @property
    def version(self) -> MqttVersion:
        """The MQTT version the session speaks, or will try first while it has not decided."""
        return self._versions[self._version_index]

    def subscribe(self, topic: str) -> None:
        """Subscribe to `topic` on every connection from the next one."""
        self._topics[topic] = None

    def resubscribe(self, topics: list[str]) -> bool:
        """Subscribe to `topics` now and drop them again at once: the broker sends their retained messages (MQTT
        sends them on every SUBSCRIBE). A topic the session holds for good stays subscribed. False: not connected."""
        client = self._client
        if client is None or not self.connected.is_set() or not topics:
            return False
        result, _mid = client.subscribe([(topic, SUBSCRIBE_QOS) for topic in topics])
        passing = [topic for topic in topics if topic not in self._topics]
        if result == MQTTErrorCode.MQTT_ERR_SUCCESS and passing:
            client.unsubscribe(passing)
        return bool(result == MQTTErrorCode.MQTT_ERR_SUCCESS)

    def set_connected_hook(self, hook: OnConnected) -> None:
        self._on_connected_cb = hook

    def start(self) -> None:
        """Connect in the background and return at once. A setting paho cannot use (an unreadable CA file) raises."""
        self._stopping.clear()
        self._first_attempt = True
        self._reconnects.reset()
        if len(self._versions) == 1:
            with self._lock:
                self._connect(self._new_client(with_will=True))
            return
        first_probe = self._new_client(with_will=False)
        decide = threading.Thread(target=self._decide_then_connect, args=(first_probe,), name="mqtt-connect")
        decide.daemon = True
        decide.start()

    def stop(self, farewell: LastWill | None = None) -> None:
        """Publish `farewell` (retained, QoS 1; waiting up to 2 s) if connected, then disconnect for good."""
        with self._lock:
            self._stopping.set()
            client, self._client = self._client, None
        if client is None:
            return
        if farewell is not None and self.connected.is_set():
            info = client.publish(farewell.topic, farewell.payload, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=FAREWELL_TIMEOUT_S)
            except (RuntimeError, ValueError):
                log.debug("MQTT: the farewell on %s was not delivered before shutdown", farewell.topic)
        client.disconnect()
        client.loop_stop()
        self.connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message; True if handed to the broker connection now (QoS 1 ones are kept for reconnect)."""
        client = self._client
        if client is None:
            log.debug("MQTT: not connecting yet; dropping a message for %s", topic)
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # -- choosing the version ------------------------------------------------------------------------------------

    def _decide_then_connect(self, first_probe: mqtt.Client) -> None:
        probe: mqtt.Client | None = first_probe
        retries = ReconnectSchedule(PROBE_RETRY_MIN_S, RECONNECT_MAX_S, self._draw)
        while self._version_index + 1 < len(self._versions) and not self._stopping.is_set():
            outcome = self._probe(probe or self._new_client(with_will=False))
            probe = None
            if not outcome.reached:
                self._stopping.wait(retries.next())
                continue
            if not refuses_version(outcome.connack_reason):
                if outcome.connack_reason:
                    log.error("MQTT: broker speaks %s but refused this client: %s", self.version.value, outcome.said)
                break
            log.warning("MQTT: broker does not speak MQTT %s (%s); falling back", self.version.value, outcome.said)
            self._version_index += 1
        with self._lock:
            if not self._stopping.is_set():
                self._connect(self._new_client(with_will=True))

    def _probe(self, client: mqtt.Client) -> ProbeOutcome:
        """Connect once without a will, note the CONNACK (or its absence) and close."""
        s = self._settings
        answers: list[ReasonCode] = []
        done = threading.Event()

        def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
            answers.append(reason)
            done.set()

        def on_disconnect(_c: mqtt.Client, _u: object, _f: object, _r: object, _p: object) -> None:
            done.set()

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        try:
            client.connect(s.host, s.port, s.keepalive_s)
            for _ in range(int(PROBE_TIMEOUT_S / 0.1)):
                if done.is_set() or client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        except (OSError, ValueError) as exc:
            log.info("MQTT: broker %s:%d not reachable: %s", s.host, s.port, exc)
            return ProbeOutcome(reached=False)
        finally:
            _quietly_close(client)
        if not answers:
            return ProbeOutcome(reached=True)
        return ProbeOutcome(reached=True, connack_reason=answers[0].value, said=str(answers[0]))

    # -- the session's client ----------------------------------------------------------------------------------

    def _new_client(self, with_will: bool) -> mqtt.Client:
        s = self._settings
        client = _TurnTakingClient(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=_PAHO_PROTOCOL[self.version]
        )
        if s.username is not None:
            password = s.password.get_secret_value() if s.password is not None else None
            client.username_pw_set(s.username, password)
        if s.tls_ca_file is not None:
            client.tls_set(ca_certs=str(s.tls_ca_file))
        if with_will and self._will is not None:
            client.will_set(self._will.topic, self._will.payload, qos=1, retain=True)
        if self._limits is not None:
            client.max_inflight_messages_set(self._limits.max_inflight)
            client.max_queued_messages_set(self._limits.max_queued)
        return client

    def _connect(self, client: mqtt.Client) -> None:
        """Make `client` the session's and start it. Called with the lock held.

        The client is the session's before its network thread starts: the on-connected hook publishes (the agent's
        reported state), and a publish that found no client yet would be dropped.
        """
        s = self._settings
        client.reconnect_delay_set(min_delay=0, max_delay=0)  # the session waits, jittered, in `_before_attempt`
        client.on_pre_connect = self._before_attempt
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        log.info("MQTT: connecting to %s:%d as %s (protocol %s)", s.host, s.port, self._client_id, self.version.value)
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        client.loop_start()

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("MQTT: broker refused the connection: %s; retrying with backoff", reason)
            return
        self._reconnects.reset()
        if self._topics:
            result, mid = client.subscribe([(topic, SUBSCRIBE_QOS) for topic in self._topics])
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._ready_after = mid  # `_on_subscribe` says connected when the broker acknowledged them
                return
        self._ready()

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: object, mid: int, _reasons: object, _properties: object
    ) -> None:
        if mid == self._ready_after:
            self._ready_after = None
            self._ready()

    def _ready(self) -> None:
        """Say connected and call the hook: after this connection's subscriptions, and after paho re-queued, in
        `on_connect`'s caller, the QoS 1 messages published while offline. What the hook publishes (the agent's
        current reported state) thus reaches the broker after them: an older report resent later would otherwise
        become the retained one."""
        self.connected.set()
        self.down_since = None
        log.info("MQTT: connected (protocol %s)", self.version.value)
        if self._on_connected_cb is not None:
            try:
                self._on_connected_cb()
            except Exception:
                log.exception("MQTT: on-connected hook failed")

    def _before_attempt(self, _client: mqtt.Client, _userdata: object) -> None:
        """paho's on_pre_connect, on its network thread, before every connection attempt: wait the schedule's next
        delay, except before a session's first attempt. Raising an OSError is how paho lets it call an attempt off:
        a session stopped during the wait must not connect again (paho counts it as a failed attempt and exits)."""
        if self._first_attempt:
            self._first_attempt = False
            return
        delay = self._reconnects.next()
        if not self._stopping.is_set():  # one line per attempt; the schedule spaces them up to 30 s apart
            s = self._settings
            log.warning(
                "MQTT: broker %s:%d not connected; reconnecting in %.2f s (attempt %d)",
                s.host,
                s.port,
                delay,
                self._reconnects.attempt,
            )
        if self._stopping.wait(delay):
            raise ConnectionAbortedError("the MQTT session is stopping")

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self.connected.clear()
        self._ready_after = None
        if self.down_since is None:
            self.down_since = time.time()
        if not self._stopping.is_set():
            log.warning("MQTT: disconnected (%s); reconnecting with backoff", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            self._on_message_cb(message.topic, bytes(message.payload))
        except Exception:
            log.exception("MQTT: handling a message on %s failed; dropped", message.topic)


def _quietly_close(client: mqtt.Client) -> None:
    try:
        client.disconnect()
        client.loop(timeout=0.1)
    except (OSError, ValueError):
        log.debug("MQTT: the probe connection was already closed")


READS_PER_TURN = 64  # packets read per turn of the network loop before what is queued to send is written


class _TurnTakingClient(mqtt.Client):
    """paho's client, reading at most `READS_PER_TURN` packets per turn of its network loop.

    paho's own `loop_read` reads as many packets as it has messages in flight (in and out) before its loop writes
    again. For the control plane that is up to `mqtt.max_inflight_messages` plus every queued desired state: while
    10,000 devices' reports poured in, its own 10,000 desired states left over 10.5 s (docs/benchmarks.md), each
    turn reading thousands of reports first. Reading in turns of 64 lets what is queued go out between them;
    nothing is read less (the loop comes straight back while the socket has data).

    A packet the network thread queues itself (the PUBACK of a message it just read) is not followed by paho's
    wake-up byte to its own select: that was one system call per message received, and the loop writes whatever
    is queued on its next turn anyway (it selects for writing while anything waits)."""

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        if self._thread is None or threading.current_thread() is not self._thread:
            return super()._packet_queue(command, packet, mid, qos, info)
        queued: _OutPacket = {
            "command": command,
            "mid": mid,
            "qos": qos,
            "pos": 0,
            "to_process": len(packet),
            "packet": packet,
            "info": info,
        }
        self._out_packet.append(queued)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        for _ in range(READS_PER_TURN):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return MQTTErrorCode.MQTT_ERR_SUCCESS
