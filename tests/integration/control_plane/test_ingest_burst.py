"""A burst of device messages over the real broker into the real control plane (issue 11, item 2): the network
thread only queues, a writer stores batches, and no report is lost - with the default queue nothing is dropped;
with a queue far too small the drops are counted in GET /v1/status and the stored state still converges to every
device's last retained report, by itself (the control plane fetches the dropped devices' retained topics again).

The devices are raw publishes with the control plane's test credentials (its ACL covers `edge/#`): hundreds of
device ids without hundreds of broker accounts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.protocol import DeviceEvent, EventStep, MessageKind, Presence, PresenceStatus, seal
from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.integration.control_plane.helpers import reported
from tests.support import CONTROL_PLANE_USER, Mosquitto, enroll_device, password_for, wait_for

pytestmark = pytest.mark.integration

DEVICES = [f"burst-{n:03d}" for n in range(300)]
REPORTS = 3  # per device, retained; the last one is what must be stored
EVENTS = 5  # per device, not retained: every one must be stored (with the default queue)


def plane(tmp_path: Path, **mqtt_settings: Any) -> tuple[RunningServer, Mosquitto]:
    broker = Mosquitto(workdir=tmp_path / "broker")
    broker.start()
    settings = server_settings(broker, tmp_path / "cp")
    settings = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update=mqtt_settings)})
    running = start_server(settings)
    for device_id in DEVICES:
        enroll_device(running.http, device_id)
    return running, broker


@pytest.fixture
def default_plane(tmp_path: Path) -> Iterator[tuple[RunningServer, Mosquitto]]:
    running, broker = plane(tmp_path)
    yield running, broker
    running.stop()
    broker.stop()


@pytest.fixture
def tiny_queue_plane(tmp_path: Path) -> Iterator[tuple[RunningServer, Mosquitto]]:
    running, broker = plane(tmp_path, ingest_queue=16, ingest_batch=8)
    yield running, broker
    running.stop()
    broker.stop()


def burst(broker: Mosquitto, events: int) -> int:
    """Every device's presence, `events` events and REPORTS reports, as fast as the broker takes them."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"burst-{uuid.uuid4().hex[:8]}")
    client.username_pw_set(CONTROL_PLANE_USER, password_for(CONTROL_PLANE_USER))
    client.max_inflight_messages_set(1000)
    client.connect(broker.host, broker.port)
    client.loop_start()
    now = datetime.now(UTC)
    sent = []
    try:
        for round_ in range(max(REPORTS, events)):
            for device_id in DEVICES:
                topic = f"edge/devices/{device_id}"
                if round_ == 0:
                    online = seal(MessageKind.STATUS, device_id, Presence(state=PresenceStatus.ONLINE), now)
                    sent.append(client.publish(f"{topic}/status", online, qos=1, retain=True))
                if round_ < events:
                    body = DeviceEvent(generation=0, step=EventStep.RECEIVED, reason=f"e{round_}", at=now)
                    sent.append(client.publish(f"{topic}/events", seal(MessageKind.EVENT, device_id, body, now), qos=1))
                if round_ < REPORTS:
                    state = reported(device_id).model_copy(update={"agent_version": f"r{round_}"})
                    payload = seal(MessageKind.REPORTED, device_id, state, now)
                    sent.append(client.publish(f"{topic}/reported", payload, qos=1, retain=True))
        for info in sent:
            info.wait_for_publish(timeout=60)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(sent)


def ingest(api: httpx.Client) -> dict[str, Any]:
    answer = api.get("/v1/status")
    assert answer.status_code == 200, answer.text
    counters: dict[str, Any] = answer.json()["ingest"]
    return counters


def settled(api: httpx.Client, expect_received: int | None = None) -> bool:
    c = ingest(api)
    caught_up = c["queued"] == 0 and c["resync_pending"] == 0 and c["applied"] == c["received"]
    return caught_up and (expect_received is None or c["received"] >= expect_received)


def stored_versions(api: httpx.Client) -> dict[str, str | None]:
    found = {}
    for device_id in DEVICES:
        device = api.get(f"/v1/devices/{device_id}").json()
        found[device_id] = (device.get("reported") or {}).get("agent_version")
    return found


def test_a_burst_is_stored_whole_with_the_default_queue(default_plane: tuple[RunningServer, Mosquitto]) -> None:
    running, broker = default_plane
    api = running.http
    sent = burst(broker, EVENTS)

    wait_for(lambda: settled(api, sent), timeout=120, what="the control plane to apply the burst")
    counters = ingest(api)
    assert counters["dropped"] == 0 and counters["received"] == sent and counters["resyncs"] == 0
    assert counters["batches"] >= 1 and counters["high_water"] >= 1 and counters["mean_batch"] >= 1
    assert stored_versions(api) == dict.fromkeys(DEVICES, f"r{REPORTS - 1}")
    for device_id in DEVICES[:: len(DEVICES) // 10]:  # every event of a sample of devices, none lost
        events = api.get(f"/v1/devices/{device_id}/events", params={"limit": 100}).json()
        assert sorted(e["reason"] for e in events if e["step"] == "received") == [f"e{n}" for n in range(EVENTS)]
        assert api.get(f"/v1/devices/{device_id}").json()["presence"] == "online"


def test_over_a_tiny_queue_drops_are_counted_and_the_fleet_state_converges_by_itself(
    tiny_queue_plane: tuple[RunningServer, Mosquitto],
) -> None:
    running, broker = tiny_queue_plane
    api = running.http
    burst(broker, events=0)

    def converged() -> bool:
        return settled(api) and stored_versions(api) == dict.fromkeys(DEVICES, f"r{REPORTS - 1}")

    wait_for(converged, timeout=180, what="every device's last retained report stored")
    counters = ingest(api)
    assert counters["dropped"] > 0 and counters["last_drop_at"] is not None
    assert counters["resyncs"] >= 1 and counters["capacity"] == 16
