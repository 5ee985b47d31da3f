"""The embedded broker as a real process, spoken to by real paho clients over MQTT 3.1.1.

What the product relies on: QoS 1 delivery, retained desired documents for late subscribers, last wills when a
device dies, and a clean exit on SIGTERM.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.support import free_port, port_open, python_env, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = (tmp_path / "broker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "control_plane.adapters.embedded_broker", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=python_env(),
    )
    try:
        wait_for(lambda: port_open(port) or (proc.poll() is not None and _died(tmp_path)), what="embedded broker")
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        log.close()


def _died(tmp_path: Path) -> bool:
    raise AssertionError("broker exited: " + (tmp_path / "broker.log").read_text())


class Client:
    """A paho 3.1.1 client whose received messages land in a queue."""

    def __init__(self, port: int, client_id: str, will: tuple[str, bytes] | None = None) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.paho.on_message = lambda _c, _u, msg: self.messages.put(msg)
        if will is not None:
            self.paho.will_set(will[0], will[1], qos=1, retain=True)
        self.paho.connect("127.0.0.1", port, keepalive=30)
        self.paho.loop_start()
        wait_for(self.paho.is_connected, what=f"{client_id} connected")

    def subscribe(self, topic: str) -> None:
        granted: queue.Queue[bool] = queue.Queue()
        self.paho.on_subscribe = lambda *_args: granted.put(True)
        self.paho.subscribe(topic, qos=1)
        granted.get(timeout=5)

    def next_message(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


def test_qos1_publish_is_delivered(broker: int) -> None:
    sub = Client(broker, "cp")
    pub = Client(broker, "dev-1")
    try:
        sub.subscribe("edge/devices/+/events")
        info = pub.paho.publish("edge/devices/dev-1/events", b'{"step": "activated"}', qos=1)
        info.wait_for_publish(timeout=5)
        msg = sub.next_message()
        assert (msg.topic, msg.payload, msg.qos) == ("edge/devices/dev-1/events", b'{"step": "activated"}', 1)
    finally:
        sub.close()
        pub.close()


def test_late_subscriber_gets_the_retained_desired_document(broker: int) -> None:
    cp = Client(broker, "cp")
    cp.paho.publish("edge/devices/dev-2/desired", b"generation 1", qos=1, retain=True).wait_for_publish(5)
    cp.paho.publish("edge/devices/dev-2/desired", b"generation 2", qos=1, retain=True).wait_for_publish(5)
    cp.close()
    device = Client(broker, "dev-2")
    try:
        device.subscribe("edge/devices/dev-2/desired")
        msg = device.next_message()
        assert msg.payload == b"generation 2"
        assert msg.retain
        with pytest.raises(queue.Empty):
            device.messages.get(timeout=0.3)  # only the latest retained document, once
    finally:
        device.close()


DYING_CLIENT = textwrap.dedent(
    """
    import sys, time
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-3", protocol=mqtt.MQTTv311)
    c.will_set("edge/devices/dev-3/status", b"offline", qos=1, retain=True)
    c.on_connect = lambda *a: print("connected", flush=True)
    c.connect("127.0.0.1", int(sys.argv[1]), keepalive=30)
    c.loop_forever()
    """
)


def test_last_will_is_delivered_when_a_client_dies(broker: int) -> None:
    watcher = Client(broker, "cp")
    dying = subprocess.Popen(
        [sys.executable, "-c", DYING_CLIENT, str(broker)], stdout=subprocess.PIPE, env=python_env()
    )
    try:
        assert dying.stdout is not None
        assert dying.stdout.readline().strip() == b"connected"
        watcher.subscribe("edge/devices/+/status")
        dying.kill()  # no DISCONNECT packet: the broker must publish the will
        dying.wait(timeout=5)
        msg = watcher.next_message(timeout=10)
        assert (msg.topic, msg.payload) == ("edge/devices/dev-3/status", b"offline")
    finally:
        if dying.poll() is None:
            dying.kill()
            dying.wait()
        watcher.close()


def test_sigterm_stops_the_broker_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "control_plane.adapters.embedded_broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=python_env(),
    )
    wait_for(lambda: port_open(port), what="embedded broker")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out.decode()
    assert b"stopped" in out
    assert not port_open(port)


def test_port_in_use_is_a_clear_error() -> None:
    port = free_port()
    holder = subprocess.Popen(
        [sys.executable, "-m", "control_plane.adapters.embedded_broker", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=python_env(),
    )
    try:
        wait_for(lambda: port_open(port), what="first broker")
        second = subprocess.run(
            [sys.executable, "-m", "control_plane.adapters.embedded_broker", "--port", str(port)],
            capture_output=True,
            text=True,
            env=python_env(),
            timeout=20,
        )
        assert second.returncode != 0
        assert f"127.0.0.1:{port}" in second.stdout + second.stderr
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=10)
