"""The agent's MQTT link against real Mosquitto (MQTT 5 and 3.1.1) and the broker ACL it relies on."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.adapters.mqtt_link import MqttLink
from edge_agent.adapters.mqtt_session import LastWill
from edge_agent.config import MqttSettings
from edge_agent.protocol import Topics
from edge_agent.protocol.vocabulary import MqttProtocol
from tests.integration.agent.harness import ControlPlaneClient
from tests.support import free_port, password_for, wait_for

pytestmark = pytest.mark.integration


def link_for(broker, device: str, protocol: MqttProtocol, received: list[bytes], connects: list[int]) -> MqttLink:
    settings = MqttSettings(
        host=broker.host, port=broker.port, username=device, password=password_for(device), protocol=protocol
    )
    topics = Topics()
    return MqttLink(
        settings,
        client_id=device,
        subscribe_topic=topics.desired(device),
        on_message=received.append,
        on_connected=lambda: connects.append(1),
        will=LastWill(topics.status(device), b"offline"),
    )


@pytest.mark.parametrize(
    ("protocol", "device", "in_use"),
    [
        pytest.param(MqttProtocol.V5, "dev-8", MqttProtocol.V5, id="mqtt5"),
        pytest.param(MqttProtocol.V311, "dev-9", MqttProtocol.V311, id="mqtt311"),
        pytest.param(MqttProtocol.AUTO, "dev-10", MqttProtocol.V5, id="auto-prefers-5"),
    ],
)
def test_link_receives_its_retained_desired_state(mosquitto, protocol, device, in_use):
    control = ControlPlaneClient(mosquitto, device)
    control.publish_raw(b"desired-v1")
    received: list[bytes] = []
    connects: list[int] = []
    link = link_for(mosquitto, device, protocol, received, connects)
    link.start()
    try:
        wait_for(lambda: received == [b"desired-v1"], what="retained desired delivered")
        assert link.protocol_in_use is in_use and connects == [1]
        assert link.publish(Topics().reported(device), b"state", retain=True)
        wait_for(
            lambda: any(t.endswith("/reported") and p == b"state" for t, p, _ in control.messages), what="reported"
        )
    finally:
        link.stop(farewell=LastWill(Topics().status(device), b"bye"))
        control.close()


def test_auto_falls_back_to_311_when_the_broker_refuses_5(tmp_path):
    amqtt_broker = pytest.importorskip("amqtt.broker")
    import asyncio

    port = free_port()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
        "topic-check": {"enabled": False},
    }
    loop = asyncio.new_event_loop()
    # amqtt's Broker makes a Future without a loop (asyncio's current one): after any earlier test in this process
    # ran asyncio.run(), the main thread has none and that raised; which tests ran before depends on the worker.
    asyncio.set_event_loop(loop)
    try:
        broker = amqtt_broker.Broker(config, loop=loop)
    finally:
        asyncio.set_event_loop(None)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(broker.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(15)
    received: list[bytes] = []
    settings = MqttSettings(host="127.0.0.1", port=port, protocol=MqttProtocol.AUTO)
    link = MqttLink(
        settings,
        "dev-fallback",
        "edge/devices/dev-fallback/desired",
        received.append,
        lambda: None,
        LastWill("edge/devices/dev-fallback/status", b"offline"),
    )
    link.start()
    try:
        wait_for(lambda: link.connected.is_set(), timeout=20, what="connected to amqtt")
        assert link.protocol_in_use is MqttProtocol.V311
    finally:
        link.stop()
        asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_a_device_never_receives_another_devices_desired_state(mosquitto):
    for device, payload in (("dev-2", b"for dev-2 only"), ("dev-1", b"for dev-1")):
        ControlPlaneClient(mosquitto, device).publish_raw(payload)
    got: list[tuple[str, bytes]] = []
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="acl-dev-1")
    client.username_pw_set("dev-1", password_for("dev-1"))
    client.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload)))
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        # The broker grants the forbidden subscription (SUBACK) but must never deliver on it.
        client.subscribe([("edge/devices/dev-2/desired", 1), ("edge/devices/dev-1/desired", 1)])
        wait_for(lambda: ("edge/devices/dev-1/desired", b"for dev-1") in got, what="own retained desired")
        client.publish("edge/devices/dev-1/desired", b"sentinel", qos=1).wait_for_publish(5)
        wait_for(lambda: ("edge/devices/dev-1/desired", b"sentinel") in got, what="sentinel after")
        assert not [t for t, _ in got if "dev-2" in t]
    finally:
        client.disconnect()
        client.loop_stop()
        for device in ("dev-1", "dev-2"):
            cleanup = ControlPlaneClient(mosquitto, device)
            cleanup.close()


@pytest.mark.parametrize(
    ("protocol", "device"),
    [
        pytest.param(MqttProtocol.V5, "dev-13", id="mqtt5"),
        pytest.param(MqttProtocol.V311, "dev-14", id="mqtt311"),
        pytest.param(MqttProtocol.AUTO, "dev-15", id="auto"),
    ],
)
def test_what_the_on_connected_hook_publishes_reaches_the_broker(mosquitto, protocol, device):
    """The agent reports its state from the on-connected hook: a publish there must never find the session without
    its client (the demo's devices once stayed offline because the hook ran before the client was the session's)."""
    control = ControlPlaneClient(mosquitto, device)
    published: list[bool] = []
    settings = MqttSettings(
        host=mosquitto.host, port=mosquitto.port, username=device, password=password_for(device), protocol=protocol
    )
    link: MqttLink | None = None

    def report() -> None:
        assert link is not None
        published.append(link.publish(Topics().reported(device), b"hello from the hook", retain=True))

    link = MqttLink(
        settings,
        client_id=device,
        subscribe_topic=Topics().desired(device),
        on_message=lambda _p: None,
        on_connected=report,
        will=LastWill(Topics().status(device), b"offline"),
    )
    link.start()
    try:
        wait_for(lambda: published, what="the hook ran")
        assert published == [True]
        wait_for(
            lambda: any(p == b"hello from the hook" for t, p, _ in control.messages if t.endswith("/reported")),
            what="the hook's report at the broker",
        )
    finally:
        link.stop()
        control.close()
