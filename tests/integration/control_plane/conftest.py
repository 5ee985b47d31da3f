"""Fixtures: the real control plane (uvicorn on a free loopback port, in a thread) against the real Mosquitto,
and MQTT clients that log in as devices."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel

from control_plane.api.app import create_app
from control_plane.settings import ServerSettings
from edge_agent.protocol import MessageKind, Topics, seal
from tests.conftest import DATABASES
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, CONTROL_PLANE_USER, Mosquitto, free_port, password_for, wait_for


@dataclass
class RunningServer:
    settings: ServerSettings
    server: uvicorn.Server
    thread: threading.Thread
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.settings.base_url

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the control plane did not shut down"


def server_settings(broker: Mosquitto, data_dir: Path, database_url: str | None = None) -> ServerSettings:
    return ServerSettings(
        data_dir=data_dir,
        database_url=database_url,
        port=free_port(),
        bootstrap_token=ADMIN_TOKEN,
        mqtt={
            "host": broker.host,
            "port": broker.port,
            "username": CONTROL_PLANE_USER,
            "password": password_for(CONTROL_PLANE_USER),
            "client_id": f"cp-test-{uuid.uuid4().hex[:8]}",
        },
    )


def start_server(settings: ServerSettings) -> RunningServer:
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="control-plane", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), timeout=30, what="control plane startup")
    assert thread.is_alive(), "the control plane failed to start"
    http = httpx.Client(base_url=settings.base_url, timeout=30, headers=ADMIN_HEADERS)
    wait_for(lambda: http.get("/healthz").json()["mqtt_connected"], what="control plane connected to mosquitto")
    return RunningServer(settings, server, thread, http)


@pytest.fixture(scope="session")
def control_plane(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(server_settings(mosquitto, tmp_path_factory.mktemp("cp-data")))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(control_plane: RunningServer) -> httpx.Client:
    return control_plane.http


@dataclass
class Deployment:
    """A control plane and the broker its devices use."""

    broker: Mosquitto
    server: RunningServer


@pytest.fixture(scope="session", params=DATABASES)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The control plane once per database, for the modules that run on both (they take `api` and `device_factory`
    from it): on SQLite the session's shared `control_plane`; on PostgreSQL a server of its own with a broker of its
    own (a broker keeps the retained desired states the other server signed with its own key)."""
    if request.param == "sqlite":
        yield Deployment(request.getfixturevalue("mosquitto"), request.getfixturevalue("control_plane"))
        return
    url = request.getfixturevalue("postgres").create_database("control_plane_session")
    broker = Mosquitto(workdir=Path(tmp_path_factory.mktemp("mosquitto-postgresql")))
    broker.start()
    try:
        running = start_server(server_settings(broker, tmp_path_factory.mktemp("cp-data-postgresql"), url))
        try:
            yield Deployment(broker, running)
        finally:
            running.stop()
    finally:
        broker.stop()


@dataclass
class DeviceClient:
    """A real MQTT client logged in as a device user; it records what arrives on its desired topic."""

    device_id: str
    client: mqtt.Client
    topics: Topics = field(default_factory=Topics)
    received: list[bytes] = field(default_factory=list)

    def publish(self, leaf: str, payload: bytes, retain: bool = True) -> None:
        info = self.client.publish(f"edge/devices/{self.device_id}/{leaf}", payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)

    def send(self, kind: MessageKind, body: BaseModel, retain: bool = True) -> None:
        from datetime import UTC, datetime

        leaf = {MessageKind.REPORTED: "reported", MessageKind.EVENT: "events", MessageKind.STATUS: "status"}[kind]
        self.publish(leaf, seal(kind, self.device_id, body, datetime.now(UTC)), retain=retain)


def connect_device(broker: Mosquitto, device_id: str) -> DeviceClient:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{device_id}-{uuid.uuid4().hex[:6]}")
    client.username_pw_set(device_id, password_for(device_id))
    device = DeviceClient(device_id, client)
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, msg: device.received.append(bytes(msg.payload))
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe(f"edge/devices/{device_id}/desired", qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert subscribed.wait(10), f"{device_id} could not subscribe"
    return device


@pytest.fixture
def device_factory(mosquitto: Mosquitto) -> Iterator[Callable[[str], DeviceClient]]:
    yield from devices_on(mosquitto)


def devices_on(broker: Mosquitto) -> Iterator[Callable[[str], DeviceClient]]:
    """A factory of device clients on `broker`, all disconnected when the test ends."""
    made: list[DeviceClient] = []

    def make(device_id: str) -> DeviceClient:
        device = connect_device(broker, device_id)
        made.append(device)
        return device

    yield make
    for device in made:
        device.client.disconnect()
        device.client.loop_stop()
