"""The control plane and a real agent through broker trouble: a broker restart and an agent's unclean death.

Each test runs its own Mosquitto (tests/integration/fleet/conftest.py), so restarting it loses no retained message
another test depends on.
"""

from __future__ import annotations

import json
import queue
import uuid
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from tests.integration.agent.harness import AgentProcess
from tests.integration.control_plane.conftest import RunningServer
from tests.integration.control_plane.helpers import deployable
from tests.support import CONTROL_PLANE_USER, Mosquitto, password_for, wait_for
from tests.unit.control_plane.onnx_models import B, W

pytestmark = pytest.mark.integration


def device(control_plane: RunningServer) -> dict[str, Any] | None:
    devices = control_plane.http.get("/v1/devices").json()
    return next((d for d in devices if d["id"] == "dev-1"), None)


def test_after_a_broker_restart_both_sides_reconnect_and_a_rollout_still_lands(
    own_broker: Mosquitto, control_plane: RunningServer, agent: AgentProcess
) -> None:
    api = control_plane.http
    wait_for(lambda: (d := device(control_plane)) and d["presence"] == "online", what="dev-1 online")
    build = deployable(api, "outage-model")

    own_broker.restart()  # retained messages and sessions are gone; both sides must reconnect on their own.
    # The rollout below can only succeed if the control plane published after reconnecting and the agent
    # resubscribed, applied and reported after reconnecting.
    wait_for(lambda: api.get("/healthz").json()["mqtt_connected"], timeout=60, what="control plane reconnected")

    rollout = api.post(
        "/v1/rollouts", json={"model": build["model"], "version": build["version"], "selector": {"labels": {}}}
    )
    assert rollout.status_code == 201, rollout.text
    rollout_id = rollout.json()["id"]
    wait_for(
        lambda: api.get(f"/v1/rollouts/{rollout_id}").json()["phase"] == "succeeded",
        timeout=60,
        what=f"rollout to succeed after the broker restart; agent log:\n{agent.output()[-2000:]}",
    )
    serving_url = device(control_plane)["reported"]["serving_url"]  # type: ignore[index]
    x = [[1.0, 2.0, 3.0, 4.0]]
    answer = httpx.post(
        f"{serving_url}/v2/models/outage-model/infer",
        json={"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": x[0]}]},
        timeout=10,
    ).json()
    expected = (np.array(x, dtype=np.float32) @ W + B).ravel()
    assert answer["outputs"][0]["data"] == pytest.approx(expected.tolist(), rel=1e-5)


def test_an_agent_that_dies_uncleanly_is_shown_offline_by_its_last_will(
    control_plane: RunningServer, agent: AgentProcess
) -> None:
    wait_for(lambda: (d := device(control_plane)) and d["presence"] == "online", what="dev-1 online")
    agent.kill()  # SIGKILL: no goodbye; only the broker's last will can tell
    wait_for(
        lambda: device(control_plane)["presence"] == "offline",  # type: ignore[index]
        timeout=60,
        what="dev-1 offline through its last will",
    )


def retained_desired(broker: Mosquitto, device_id: str) -> dict[str, Any] | None:
    """The desired-state message the broker holds retained for `device_id` now (None: none), as a late subscriber
    (a device coming back) gets it."""
    got: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}")
    client.username_pw_set(CONTROL_PLANE_USER, password_for(CONTROL_PLANE_USER))
    client.on_message = lambda _c, _u, message: got.put(bytes(message.payload))
    subscribed: queue.Queue[bool] = queue.Queue()
    client.on_subscribe = lambda *_args: subscribed.put(True)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe(f"edge/devices/{device_id}/desired", qos=1)
        subscribed.get(timeout=10)
        payload = got.get(timeout=1)  # a retained message is delivered with the SUBACK, before anything else
    except queue.Empty:
        return None
    finally:
        client.disconnect()
        client.loop_stop()
    envelope: dict[str, Any] = json.loads(payload)
    return envelope


def test_a_restarted_broker_that_lost_its_retained_messages_gets_every_desired_state_again(
    own_broker: Mosquitto, control_plane: RunningServer, agent: AgentProcess
) -> None:
    api = control_plane.http
    wait_for(lambda: (d := device(control_plane)) and d["presence"] == "online", what="dev-1 online")
    build = deployable(api, "republish-model")
    rollout = api.post(
        "/v1/rollouts", json={"model": build["model"], "version": build["version"], "selector": {"labels": {}}}
    ).json()["id"]
    wait_for(lambda: api.get(f"/v1/rollouts/{rollout}").json()["phase"] == "succeeded", timeout=60, what="rollout")
    generation = device(control_plane)["desired_generation"]  # type: ignore[index]
    assert retained_desired(own_broker, "dev-1") is not None

    own_broker.restart()  # no persistence: every retained message is gone

    wait_for(lambda: api.get("/healthz").json()["mqtt_connected"], timeout=60, what="control plane reconnected")
    back = wait_for(lambda: retained_desired(own_broker, "dev-1"), timeout=30, what="the desired state republished")
    assert json.loads(back["body"]["document"])["generation"] == generation
