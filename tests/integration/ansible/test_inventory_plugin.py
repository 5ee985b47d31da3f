"""The `edge_fleet` inventory plugin against a real control plane (`edgectl server` with real Mosquitto): devices
known from their MQTT reports and from enrollment show up in `ansible-inventory --graph` / `--list` with the groups
and host variables of docs/ansible.md; a wrong URL is a clear error and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.protocol import MessageKind, seal
from tests.integration.ansible.playbook_support import BIN, PLAYBOOKS, ansible_env
from tests.integration.control_plane.helpers import reported
from tests.support import (
    ControlPlaneProcess,
    Mosquitto,
    enroll_device,
    free_port,
    mint_token,
    password_for,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def control_plane(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    server = ControlPlaneProcess(broker=mosquitto, data_dir=tmp_path_factory.mktemp("cp-inventory") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def report_over_mqtt(broker: Mosquitto, device_id: str, labels: dict[str, str], gpu_class: str) -> None:
    """Publish a device's retained ReportedState as its agent would (logged in as the device)."""
    state = reported(device_id, applied=1, labels=labels, gpu_class=gpu_class, models=(("lin", 3),))
    publish_reported(broker, device_id, seal(MessageKind.REPORTED, device_id, state, datetime.now(UTC)))


def publish_reported(broker: Mosquitto, device_id: str, payload: bytes) -> None:
    """Retained, as the agent publishes it; an empty payload clears it (the broker is shared by the session)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"inv-{device_id}-{uuid.uuid4().hex[:6]}")
    client.username_pw_set(device_id, password_for(device_id))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(f"edge/devices/{device_id}/reported", payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlaneProcess, mosquitto: Mosquitto) -> ControlPlaneProcess:
    with control_plane.client() as api:
        enroll_device(api, "dev-7", labels={"site": "factory-a", "line": "2"}, gpu_class="jetson-orin")
    issue_as_a_rollout_would(control_plane, "dev-7", generation=1, builds={"b": ["lin", 3]})
    report_over_mqtt(mosquitto, "dev-7", {"site": "factory-a", "line": "2"}, "jetson-orin")
    with control_plane.client() as api:
        enrolled = api.put(
            "/v1/devices/edge-push-1/enrollment",
            json={
                "channel": "ansible",
                "labels": {"site": "site.b"},
                "gpu_class": "cpu-x86_64",
                "ansible": {"host": "10.0.0.5", "port": 2222, "user": "edge", "python": "/usr/bin/python3"},
            },
        )
        assert enrolled.status_code == 200, enrolled.text
        wait_for(lambda: api.get("/v1/devices/dev-7").json()["reported"], what="dev-7's report stored")
    publish_reported(mosquitto, "dev-7", b"")  # stored; later tests' control planes must not see it
    return control_plane


def issue_as_a_rollout_would(server: ControlPlaneProcess, device_id: str, generation: int, builds: Any) -> None:
    """Record in the control plane's database that `builds` went to the device in `generation` (a rollout's
    doing, which this test of the inventory does not run): its report of them is then accepted."""
    import sqlite3

    with sqlite3.connect(server.data_dir / "control-plane.db") as db:
        db.execute(
            "UPDATE devices SET desired_generation = ?, issued_builds = ? WHERE id = ?",
            (generation, json.dumps(builds), device_id),
        )


@pytest.fixture(scope="module")
def viewer_token(fleet: ControlPlaneProcess) -> str:
    """The inventory reads the fleet with a viewer's token: it needs nothing more."""
    with fleet.client() as api:
        return mint_token(api, "viewer", "ansible-inventory")


def inventory(tmp_path: Path, url: str, **options: str) -> Path:
    path = tmp_path / "fleet.yml"
    path.write_text(json.dumps({"plugin": "edge_fleet", "url": url, **options}))
    return path


def ansible_inventory(source: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(source), *args],
        cwd=PLAYBOOKS,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def listed(source: Path) -> dict[str, Any]:
    done = ansible_inventory(source, "--list")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout, object_hook=trusted)
    return data


def trusted(value: dict[str, Any]) -> Any:
    """ansible-inventory marks strings from the control plane as untrusted (never templated): unwrap them."""
    return value["__ansible_unsafe"] if set(value) == {"__ansible_unsafe"} else value


def test_graph_groups_devices_by_gpu_class_site_label_and_channel(
    fleet: ControlPlaneProcess, tmp_path: Path, viewer_token: str
) -> None:
    done = ansible_inventory(inventory(tmp_path, fleet.url, token=viewer_token), "--graph")
    assert done.returncode == 0, done.stderr
    graph = done.stdout
    for group in ("@gpu_jetson_orin", "@site_factory_a", "@label_line_2", "@channel_mqtt", "@site_site_b"):
        assert group in graph, graph
    data = listed(inventory(tmp_path, fleet.url, token=viewer_token))
    assert data["gpu_jetson_orin"]["hosts"] == ["dev-7"]
    assert data["label_site_factory_a"]["hosts"] == ["dev-7"]
    assert data["channel_ansible"]["hosts"] == ["edge-push-1"]
    assert data["gpu_cpu_x86_64"]["hosts"] == ["edge-push-1"]


def test_host_variables_carry_the_enrolled_connection_and_the_reported_state(
    fleet: ControlPlaneProcess, tmp_path: Path, viewer_token: str
) -> None:
    hostvars = listed(inventory(tmp_path, fleet.url, token=viewer_token))["_meta"]["hostvars"]
    pushed = hostvars["edge-push-1"]
    assert pushed["ansible_host"] == "10.0.0.5"
    assert pushed["ansible_port"] == 2222
    assert pushed["ansible_user"] == "edge"
    assert pushed["ansible_python_interpreter"] == "/usr/bin/python3"
    assert pushed["ansible_connection"] == "ssh"
    assert pushed["edge_channel"] == "ansible"
    reporting = hostvars["dev-7"]
    assert reporting["edge_gpu_class"] == "jetson-orin"
    assert reporting["edge_labels"] == {"site": "factory-a", "line": "2"}
    assert reporting["edge_presence"] in ("online", "offline", "unknown")
    assert reporting["edge_hardware"]["gpu_class"] == "jetson-orin"
    assert reporting["edge_models"] == [{"name": "lin", "version": 3, "health": "serving"}]
    assert "ansible_host" not in reporting  # never enrolled with a connection: none invented


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"selector": "site=factory-a"}, {"dev-7"}, id="selector"),
        pytest.param({"channel": "ansible"}, {"edge-push-1"}, id="channel"),
    ],
)
def test_selector_and_channel_narrow_the_fleet(
    fleet: ControlPlaneProcess, tmp_path: Path, viewer_token: str, options: dict[str, str], expected: set[str]
) -> None:
    hosts = set(listed(inventory(tmp_path, fleet.url, token=viewer_token, **options))["_meta"]["hostvars"])
    assert hosts == expected


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"page_size": "1"}, {"dev-7", "edge-push-1"}, id="one-device-a-page"),
        pytest.param({"page_size": "1", "channel": "ansible"}, {"edge-push-1"}, id="pages-then-channel"),
        pytest.param({"page_size": "1000"}, {"dev-7", "edge-push-1"}, id="one-page"),
    ],
)
def test_the_inventory_follows_every_page(
    fleet: ControlPlaneProcess, tmp_path: Path, viewer_token: str, options: dict[str, str], expected: set[str]
) -> None:
    """The control plane pages `GET /v1/devices`; the plugin follows `Link: rel="next"` to the last page."""
    hosts = set(listed(inventory(tmp_path, fleet.url, token=viewer_token, **options))["_meta"]["hostvars"])
    assert hosts == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param(f"http://127.0.0.1:{free_port()}", "cannot read the fleet", id="unreachable"),
        pytest.param("ftp://example.invalid", "must be an http(s) URL", id="bad-url"),
    ],
)
def test_a_wrong_url_is_a_clear_error(tmp_path: Path, url: str, message: str) -> None:
    done = ansible_inventory(inventory(tmp_path, url), "--list")
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_without_a_token_the_inventory_says_the_control_plane_wants_one(
    fleet: ControlPlaneProcess, tmp_path: Path
) -> None:
    done = ansible_inventory(inventory(tmp_path, fleet.url), "--list")
    assert done.returncode != 0
    assert "401" in done.stderr and "token" in done.stderr, done.stderr
    assert "edge-push-1" not in done.stdout
