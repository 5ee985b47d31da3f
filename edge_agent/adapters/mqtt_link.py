"""The agent's MQTT link: its desired-state topic in, its messages out, its presence as the last will.

The session itself (connecting, the MQTT 5 -> 3.1.1 fallback, TLS, credentials, reconnecting, publishing) is
`edge_agent.adapters.mqtt_session`, shared with the control plane; this module keeps only what is the agent's: the
one topic it listens to, and that the agent serves whether or not a broker answers, so a broker setting it cannot
use is logged, never raised. It never parses message bodies (the daemon does).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edge_agent.adapters.mqtt_session import LastWill, MqttSession
from edge_agent.config import MqttSettings
from edge_agent.protocol.vocabulary import MqttProtocol

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes], None]
ConnectedHandler = Callable[[], None]


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
        self._topic = subscribe_topic
        self._on_message_cb = on_message
        self._session = MqttSession(settings, client_id, self._on_message, on_connected, will)
        self._session.subscribe(subscribe_topic)

    @property
    def connected(self) -> threading.Event:
        return self._session.connected

    @property
    def protocol_in_use(self) -> MqttProtocol:
        return MqttProtocol(self._session.version.value)

    def start(self) -> None:
        """Connect in the background; returns at once (the agent serves whether or not a broker answers)."""
        try:
            self._session.start()
        except (OSError, ValueError) as exc:
            log.error("MQTT link not started, the agent serves without it: %s", exc)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        return self._session.publish(topic, payload, qos=qos, retain=retain)

    def stop(self, farewell: LastWill | None = None) -> None:
        self._session.stop(farewell)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self._topic:
            self._on_message_cb(payload)
