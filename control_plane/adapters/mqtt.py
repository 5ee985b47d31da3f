"""The control plane's MQTT link: every device's reported/events/status/telemetry topics in, desired states out.

The session itself (connecting, the MQTT 5 -> 3.1.1 fallback the embedded demo broker needs, TLS, credentials,
reconnecting with backoff, publishing) is `edge_agent.adapters.mqtt_session`, the one paho-mqtt user of the project,
shared with the agent (docs/decisions/0010). This module keeps what is the control plane's: the topics it
subscribes to, the device callback that gets each message as (topic, payload), the exact topics routed to handlers
of their own (`route`: the dynamic-security plugin's answers), its publish default (retained, as desired states
are), paho's in-flight and queue limits raised for a fleet's traffic (mqtt.max_inflight_messages,
mqtt.max_queued_messages), and asking the broker again for devices' retained reports and presence
(`refetch_retained`, after the ingest queue dropped some). A callback that raises is logged; it never stops the
network loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from control_plane.settings import MqttSettings
from edge_agent.adapters.mqtt_session import MqttSession, SessionLimits
from edge_agent.protocol import Topics

MessageHandler = Callable[[str, bytes], None]
ConnectedHandler = Callable[[], object]
SUBSCRIBED_LEAVES = ("reported", "events", "status", "telemetry")


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        on_message: MessageHandler,
        on_connected: ConnectedHandler | None = None,
    ) -> None:
        topics = Topics(settings.topic_prefix)
        self._settings = settings
        self._topics = topics
        self._handler = on_message
        self._routes: dict[str, MessageHandler] = {}
        limits = SessionLimits(settings.max_inflight_messages, settings.max_queued_messages)
        self._session = MqttSession(settings, settings.client_id, self._dispatch, on_connected, limits=limits)
        for leaf in SUBSCRIBED_LEAVES:
            self._session.subscribe(topics.all_devices(leaf))

    @property
    def connected(self) -> bool:
        return self._session.connected.is_set()

    @property
    def broker(self) -> str:
        """The broker this link talks to, as `host:port` (for health reports)."""
        return f"{self._settings.host}:{self._settings.port}"

    @property
    def down_since(self) -> datetime | None:
        """Since when the link has been down (UTC); None while it is connected."""
        since = self._session.down_since
        return None if since is None or self.connected else datetime.fromtimestamp(since, UTC)

    @property
    def protocol_in_use(self) -> str:
        return self._session.version.value

    def set_connected_hook(self, hook: ConnectedHandler) -> None:
        """Called (from the network thread) each time the link comes up, after subscribing."""
        self._session.set_connected_hook(hook)

    def route(self, topic: str, handler: MessageHandler) -> None:
        """Subscribe to the exact `topic` on every connection (from the next one) and hand its messages to
        `handler` instead of the device callback. Set routes before `start`."""
        self._routes[topic] = handler
        self._session.subscribe(topic)

    def start(self) -> None:
        self._session.start()

    def stop(self) -> None:
        self._session.stop()

    def wait_connected(self, timeout: float) -> bool:
        return self._session.wait_connected(timeout)

    def publish(self, topic: str, payload: bytes, retain: bool = True, qos: int = 1) -> bool:
        """Queue a message; True if handed to the broker connection now (QoS 1 ones are kept for reconnect).
        Retained unless told otherwise: the services' Publisher port says so (desired states are retained)."""
        return self._session.publish(topic, payload, qos=qos, retain=retain)

    def refetch_retained(self, device_ids: Sequence[str]) -> bool:
        """Have the broker send these devices' retained reported state and presence again (False: not connected)."""
        topics = [topic for d in device_ids for topic in (self._topics.reported(d), self._topics.status(d))]
        return self._session.resubscribe(topics)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        self._routes.get(topic, self._handler)(topic, payload)
