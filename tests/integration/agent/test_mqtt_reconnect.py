"""Agents' MQTT links through a broker restart, against a real Mosquitto of their own (restarting it loses no
retained message another test depends on): each link comes back by itself after a jittered wait, subscribes its
desired-state topic again (a message published after the restart is delivered), and a QoS 1 message it published
while the broker was down reaches the broker once it is back.

The schedule of the waits is unit-tested (tests/unit/agent/test_reconnect_schedule.py); here the links must only
come back, each after a wait of its own within the first step of the schedule.
"""

from __future__ import annotations

import logging
import re

import pytest

from edge_agent.adapters.mqtt_link import MqttLink
from edge_agent.adapters.mqtt_session import RECONNECT_MIN_S, LastWill
from edge_agent.config import MqttSettings
from edge_agent.protocol import Topics
from edge_agent.protocol.vocabulary import MqttProtocol
from tests.integration.agent.harness import ControlPlaneClient
from tests.support import Mosquitto, password_for, wait_for

pytestmark = pytest.mark.integration

DEVICES = (("dev-11", MqttProtocol.V311), ("dev-12", MqttProtocol.V5))
WAIT_LOGGED = re.compile(r"MQTT: broker \S+ not connected; reconnecting in ([0-9.]+) s \(attempt 1\)")


class Device:
    """One agent link and what it saw: desired-state payloads and connections."""

    def __init__(self, broker: Mosquitto, device: str, protocol: MqttProtocol) -> None:
        self.id = device
        self.topics = Topics()
        self.received: list[bytes] = []
        self.connects = 0
        settings = MqttSettings(
            host=broker.host, port=broker.port, username=device, password=password_for(device), protocol=protocol
        )
        self.link = MqttLink(
            settings,
            client_id=device,
            subscribe_topic=self.topics.desired(device),
            on_message=self.received.append,
            on_connected=self._connected,
            will=LastWill(self.topics.status(device), b"offline"),
        )

    def _connected(self) -> None:
        self.connects += 1


def test_links_come_back_after_a_broker_restart_resubscribed_and_with_what_they_sent_offline(
    own_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.adapters.mqtt_session")
    devices = [Device(own_broker, device, protocol) for device, protocol in DEVICES]
    for d in devices:
        d.link.start()
    try:
        wait_for(lambda: all(d.connects == 1 for d in devices), what="both links connected")

        own_broker.stop()
        wait_for(lambda: not any(d.link.connected.is_set() for d in devices), what="both links disconnected")
        for d in devices:  # QoS 1 while the broker is down: kept by the session, sent on the next connection
            assert not d.link.publish(d.topics.reported(d.id), f"sent offline by {d.id}".encode(), retain=True)
        own_broker.restart()

        wait_for(lambda: all(d.connects == 2 for d in devices), timeout=30, what="both links reconnected")
        observers = [ControlPlaneClient(own_broker, d.id, clear_retained=False) for d in devices]
        try:
            for d, observer in zip(devices, observers, strict=True):
                wait_for(
                    lambda d=d, o=observer: f"sent offline by {d.id}" in o.messages_on("reported"),  # type: ignore[misc]
                    what=f"{d.id}'s report published while the broker was down",
                )
                observer.publish_raw(f"after the restart, for {d.id}".encode())
                wait_for(
                    lambda d=d: d.received[-1:] == [f"after the restart, for {d.id}".encode()],  # type: ignore[misc]
                    what=f"{d.id} resubscribed to its desired state",
                )
        finally:
            for observer in observers:
                observer.close()
    finally:
        for d in devices:
            d.link.stop()

    first_waits = [float(m.group(1)) for r in caplog.records if (m := WAIT_LOGGED.search(r.getMessage()))]
    assert len(first_waits) == len(devices), caplog.text
    assert all(RECONNECT_MIN_S / 2 <= w <= RECONNECT_MIN_S for w in first_waits), first_waits
