"""The agent's MQTT link; the only module of the agent that imports paho-mqtt.

paho-mqtt 2 (callback API v2), QoS 1, a retained "offline" last will, reconnects with backoff on paho's network
thread. With protocol `auto` it first probes MQTT 5 and falls back to 3.1.1 when the broker refuses 5 (CONNACK
"unsupported protocol version", or a dropped connection before any CONNACK, as 3.1.1-only brokers do).
Never parses message bodies (the daemon does) and never lets a callback exception reach paho's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import MqttProtocol, MqttSettings

log = logging.getLogger(__name__)

UNSUPPORTED_PROTOCOL_VERSION = 132  # CONNACK reason (3.1.1 return code 1 is mapped to it by paho)
PROBE_TIMEOUT_S = 10.0

MessageHandler = Callable[[bytes], None]
ConnectedHandler = Callable[[], None]


@dataclass(frozen=True)
class LastWill:
    topic: str
    payload: bytes


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        subscribe_topic: str,
        on_message: MessageHandler,
        on_connected: ConnectedHandler,
        will: LastWill,
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._topic = subscribe_topic
        self._on_message_cb = on_message
        self._on_connected_cb = on_connected
        self._will = will
        self._client: mqtt.Client | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.protocol_in_use: MqttProtocol | None = None
        self.connected = threading.Event()

    def start(self) -> None:
        """Connect in the background; returns at once (the agent serves whether or not a broker answers)."""
        self._thread = threading.Thread(target=self._run, name="mqtt-connect", daemon=True)
        self._thread.start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        client = self._client
        if client is None:
            log.debug("not connected yet; dropping message for %s", topic)
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self, farewell: LastWill | None = None) -> None:
        self._stop.set()
        client = self._client
        if client is None:
            return
        if farewell is not None and self.connected.is_set():
            info = client.publish(farewell.topic, farewell.payload, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                log.debug("offline presence was not delivered before shutdown")
        client.disconnect()
        client.loop_stop()

    # -- connecting ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        version = self._settings.protocol
        if version is MqttProtocol.AUTO:
            decided = self._decide_version()
            if decided is None:
                return
            version = decided
        self.protocol_in_use = version
        log.info("MQTT link uses protocol %s to %s:%d", version.value, self._settings.host, self._settings.port)
        client = self._make_client(version, with_will=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_async(self._settings.host, self._settings.port, self._settings.keepalive_s)
        self._client = client
        if not self._stop.is_set():
            client.loop_start()

    def _decide_version(self) -> MqttProtocol | None:
        delay = 0.5
        while not self._stop.is_set():
            decided = self._probe_v5()
            if decided is not None:
                return decided
            self._stop.wait(delay)
            delay = min(delay * 2, 30.0)
        return None

    def _probe_v5(self) -> MqttProtocol | None:
        """MQTT 5 if the broker accepts a v5 CONNECT, 3.1.1 if it refuses it; None if it is unreachable."""
        outcome: dict[str, Any] = {}
        done = threading.Event()
        client = self._make_client(MqttProtocol.V5, with_will=False)

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
            outcome["reason"] = reason
            done.set()

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, _r: ReasonCode, _p: Any) -> None:
            outcome.setdefault("dropped", True)
            done.set()

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        try:
            client.connect(self._settings.host, self._settings.port, self._settings.keepalive_s)
            for _ in range(int(PROBE_TIMEOUT_S / 0.1)):
                if done.is_set() or client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                    break
        except (OSError, ValueError) as exc:
            log.info("MQTT broker %s:%d not reachable: %s", self._settings.host, self._settings.port, exc)
            return None
        finally:
            _quietly_close(client)
        return _version_from_probe(outcome)

    def _make_client(self, version: MqttProtocol, with_will: bool) -> mqtt.Client:
        protocol = mqtt.MQTTv5 if version is MqttProtocol.V5 else mqtt.MQTTv311
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=protocol
        )
        settings = self._settings
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            client.username_pw_set(settings.username, password)
        if settings.tls_ca_file is not None:
            client.tls_set(ca_certs=str(settings.tls_ca_file))
        if with_will:
            client.will_set(self._will.topic, self._will.payload, qos=1, retain=True)
        return client

    # -- callbacks (paho's network thread) -----------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the connection: %s", reason)
            return
        log.info("MQTT connected (protocol %s)", self.protocol_in_use.value if self.protocol_in_use else "?")
        self.connected.set()
        client.subscribe(self._topic, qos=1)
        try:
            self._on_connected_cb()
        except Exception:
            log.exception("on-connect handler failed")

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); paho reconnects with backoff", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self._topic:
            return
        try:
            self._on_message_cb(bytes(message.payload))
        except Exception:
            log.exception("handler for %s failed", message.topic)


def _version_from_probe(outcome: dict[str, Any]) -> MqttProtocol:
    reason: ReasonCode | None = outcome.get("reason")
    if reason is None:
        log.info("broker dropped an MQTT 5 CONNECT without answering; falling back to 3.1.1")
        return MqttProtocol.V311
    if reason.value == UNSUPPORTED_PROTOCOL_VERSION:
        log.info("broker refused MQTT 5 (%s); falling back to 3.1.1", reason)
        return MqttProtocol.V311
    if reason.is_failure:
        log.error("broker speaks MQTT 5 but refused this client: %s", reason)
    return MqttProtocol.V5


def _quietly_close(client: mqtt.Client) -> None:
    try:
        client.disconnect()
        client.loop(timeout=0.1)
    except (OSError, ValueError):
        log.debug("probe connection already closed")
