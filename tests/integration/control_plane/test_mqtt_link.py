"""The MQTT link against real brokers: MQTT 5 with Mosquitto, and the fall back to 3.1.1 with amqtt (the
embedded demo broker speaks only 3.1.1)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.adapters.mqtt import MqttLink
from control_plane.settings import MqttSettings
from tests.support import CONTROL_PLANE_USER, Mosquitto, free_port, password_for, port_open, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def amqtt_port(tmp_path: Path) -> Iterator[int]:
    executable = shutil.which("amqtt", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.fail("amqtt is a dependency of the project but its `amqtt` script is not installed")
    port = free_port()
    config = tmp_path / "amqtt.yaml"
    config.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
    )
    process = subprocess.Popen([executable, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port), what="amqtt listening")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def exchange(settings: MqttSettings) -> tuple[str, list[tuple[str, bytes]]]:
    received: list[tuple[str, bytes]] = []
    probe = "edge/devices/probe-1/reported"  # other tests' retained messages arrive too; watch only this one

    def collect(topic: str, payload: bytes) -> None:
        if topic == probe:
            received.append((topic, payload))

    link = MqttLink(settings, on_message=collect)
    link.start()
    try:
        assert link.wait_connected(15), "the link did not connect"
        link.publish(probe, b"hello", retain=False)
        wait_for(lambda: received, what="own message back through the subscription")
        return link.protocol_in_use, received
    finally:
        link.stop()


def test_auto_speaks_mqtt5_with_mosquitto(mosquitto: Mosquitto) -> None:
    settings = MqttSettings(
        host=mosquitto.host, port=mosquitto.port, username=CONTROL_PLANE_USER,
        password=password_for(CONTROL_PLANE_USER), client_id="link-test-v5",
    )  # fmt: skip
    protocol, received = exchange(settings)
    assert protocol == "5"
    assert received == [("edge/devices/probe-1/reported", b"hello")]


def test_auto_falls_back_to_311_with_amqtt(amqtt_port: int) -> None:
    protocol, received = exchange(MqttSettings(port=amqtt_port, client_id="link-test-311"))
    assert protocol == "3.1.1"
    assert received == [("edge/devices/probe-1/reported", b"hello")]
