"""The control plane's MQTT link: the only module that imports paho-mqtt.

It connects (and reconnects, with backoff) to the broker, subscribes to every device's reported/events/status/
telemetry topics, hands each message to a callback as (topic, payload), and publishes retained QoS 1 messages.
Other exact topics can be routed to handlers of their own (`route`: the dynamic-security plugin's answers).
Protocol `auto` speaks MQTT 5 and falls back to 3.1.1 when the broker refuses or drops a v5 CONNECT (the
embedded demo broker speaks only 3.1.1). A callback that raises is logged; it never stops the network loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from control_plane.settings import MqttProtocol, MqttSettings
from edge_agent.protocol import Topics

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
ConnectedHandler = Callable[[], object]
SUBSCRIBED_LEAVES = ("reported", "events", "status", "telemetry")
_V5 = MQTTProtocolVersion.MQTTv5
_V311 = MQTTProtocolVersion.MQTTv311
_PROTOCOLS = {MqttProtocol.V5: _V5, MqttProtocol.V311: _V311, MqttProtocol.AUTO: _V5}


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        on_message: MessageHandler,
        on_connected: ConnectedHandler | None = None,
    ) -> None:
        self._settings = settings
        self._topics = Topics(settings.topic_prefix)
        self._handler = on_message
        self._on_connected = on_connected
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._client: mqtt.Client | None = None
        self._protocol = _PROTOCOLS[settings.protocol]
        self._ever_connected = False
        self._stopped = False
        self._routes: dict[str, MessageHandler] = {}

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def protocol_in_use(self) -> str:
        return "5" if self._protocol == _V5 else "3.1.1"

    def set_connected_hook(self, hook: ConnectedHandler) -> None:
        """Called (from the network thread) each time the link comes up, after subscribing."""
        self._on_connected = hook

    def route(self, topic: str, handler: MessageHandler) -> None:
        """Subscribe to the exact `topic` on every connection (from the next one) and hand its messages to
        `handler` instead of the device callback. Set routes before `start`."""
        self._routes[topic] = handler

    def start(self) -> None:
        with self._lock:
            self._stopped = False
            self._client = self._start_client(self._protocol)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, retain: bool = True, qos: int = 1) -> bool:
        """Queue a message; True if handed to the broker connection now (QoS 1 ones are kept for reconnect)."""
        client = self._client
        if client is None:
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    # -- paho plumbing ----------------------------------------------------------------------------------------
    def _start_client(self, protocol: MQTTProtocolVersion) -> mqtt.Client:
        s = self._settings
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=protocol)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls_ca_file is not None:
            client.tls_set(ca_certs=str(s.tls_ca_file))
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        client.loop_start()
        log.info("MQTT: connecting to %s:%s (protocol %s)", s.host, s.port, self.protocol_in_use)
        return client

    def _may_fall_back(self) -> bool:
        return self._settings.protocol is MqttProtocol.AUTO and self._protocol == _V5 and not self._ever_connected

    def _fall_back(self) -> None:
        """Replace the v5 client by a 3.1.1 one (from a helper thread: paho's loop cannot stop itself)."""

        def swap() -> None:
            with self._lock:
                if self._stopped or self._protocol != _V5:
                    return
                old = self._client
                self._protocol = _V311
                if old is not None:
                    old.disconnect()
                    old.loop_stop()
                log.warning("MQTT: broker refused MQTT 5; falling back to 3.1.1")
                self._client = self._start_client(_V311)

        threading.Thread(target=swap, name="mqtt-fallback", daemon=True).start()

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("MQTT: connection refused: %s", reason_code)
            if self._may_fall_back() and reason_code.value in (1, 0x84):  # unsupported protocol version
                self._fall_back()
            return
        self._ever_connected = True
        routed = [(topic, 1) for topic in self._routes]
        client.subscribe([*routed, *((self._topics.all_devices(leaf), 1) for leaf in SUBSCRIBED_LEAVES)])
        self._connected.set()
        log.info("MQTT: connected, protocol %s", self.protocol_in_use)
        if self._on_connected is not None:
            try:
                self._on_connected()
            except Exception:
                log.exception("MQTT: on-connected hook failed")

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if self._stopped:
            return
        log.warning("MQTT: disconnected (%s); reconnecting with backoff", reason_code)
        if self._may_fall_back():
            self._fall_back()  # the broker dropped a v5 CONNECT without answering

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        handler = self._routes.get(message.topic, self._handler)
        try:
            handler(message.topic, bytes(message.payload))
        except Exception:
            log.exception("MQTT: handling a message on %s failed; dropped", message.topic)
