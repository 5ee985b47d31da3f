"""Rollouts over the Ansible channel, end to end: `edgectl server` (a process) enrolls two local-connection nodes,
provisions them with the real provision.yml through ansible-runner (POST /v1/playbook-runs), and rolls models out to
them with deploy_model.yml; a third device is enrolled behind a closed SSH port.

What an operator sees is asserted: rollout phases and per-device statuses with their reasons, the model version
each node's inference API answers with, and the playbook runs the rollout started.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.ansible.playbook_support import (
    LocalNode,
    offline_install_vars,
    project_wheel,
)
from tests.integration.rollouts.fleet import answered_version, device_status, fleet_serves, rollout, wait_phase
from tests.integration.rollouts.models import (
    inputs_only,
    linear,
    push_and_build,
    upload_and_build,
    wrong_reference_samples,
)
from tests.support import ControlPlaneProcess, Mosquitto, free_port, wait_for

pytestmark = pytest.mark.integration

MODEL = "pushed-model"
SITE = {"site": "no-broker"}
NODE_VARS = ("edge_agent_prefix", "edge_agent_config_dir", "edge_agent_data_dir", "edge_agent_fact_path")


@dataclass
class PushFleet:
    control_plane: ControlPlaneProcess
    api: httpx.Client
    nodes: dict[str, LocalNode]

    def why(self) -> str:
        runs = self.api.get("/v1/playbook-runs").json()
        return f"runs: {json.dumps(runs)[-4000:]}\n--- control plane:\n{self.control_plane.output()[-4000:]}"

    def run(self, body: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
        answer = self.api.post("/v1/playbook-runs", json=body)
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["id"]
        final: dict[str, Any] = wait_for(
            lambda: (
                (r := self.api.get(f"/v1/playbook-runs/{run_id}").json())["status"]
                in ("succeeded", "failed", "cancelled")
                and r
            ),
            timeout=timeout,
            what=f"playbook run {run_id}",
        )
        return final

    def create(self, version: int, selector: dict[str, str], **spec: Any) -> str:
        body = {"model": MODEL, "version": version, "selector": {"labels": selector}, **spec}
        answer = self.api.post("/v1/rollouts", json=body)
        assert answer.status_code == 201, answer.text
        rollout_id: str = answer.json()["id"]
        return rollout_id


def node_settings(nodes: dict[str, LocalNode], wheel: Path) -> dict[str, Any]:
    """Inventory variables for every host the control plane runs playbooks on (EDGE_CP_ANSIBLE__VARS): each node's
    own directories and port, looked up by inventory_hostname, and the offline install."""
    table = {name: {**node.hostvars(), "port": node.port} for name, node in nodes.items()}
    per_host = {key: f"{{{{ edge_test_nodes[inventory_hostname].{key} }}}}" for key in NODE_VARS}
    return {
        "edge_test_nodes": table,
        **per_host,
        "edge_agent_serving_port": "{{ edge_test_nodes[inventory_hostname].port }}",
        "edge_agent_channel": "ansible",
        "edge_agent_labels": SITE,
        **offline_install_vars(wheel),
    }


@pytest.fixture(scope="module")
def push_fleet(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushFleet]:
    """Provisioned once for the module (the tests run in order, as an operator would): two nodes serving nothing."""
    tmp_path = tmp_path_factory.mktemp("push-fleet")
    nodes = {name: LocalNode(name, tmp_path / name) for name in ("push-1", "push-2")}
    # push-gone is enrolled by one test behind a closed SSH port: it has directories but is never reached
    known = nodes | {"push-gone": LocalNode("push-gone", tmp_path / "push-gone")}
    settings = node_settings(known, project_wheel(tmp_path / "wheel"))
    control_plane = ControlPlaneProcess(
        mosquitto,
        tmp_path / "cp",
        extra_env={"EDGE_CP_ANSIBLE__VARS": json.dumps(settings), "EDGE_CP_ANSIBLE__KEEP_RUNS": "5"},
    )
    control_plane.start()
    api = control_plane.client()
    fleet = PushFleet(control_plane, api, nodes)
    try:
        for name in nodes:
            enroll(api, name, {"connection": "local", "python": sys.executable})
        provisioned = fleet.run({"playbook": "provision", "hosts": list(nodes)})
        assert provisioned["status"] == "succeeded", fleet.why()
        yield fleet
    finally:
        api.close()
        control_plane.stop()
        for node in nodes.values():
            node.stop()


def enroll(api: httpx.Client, device_id: str, ansible: dict[str, Any]) -> None:
    body = {"channel": "ansible", "labels": SITE, "gpu_class": "cpu-x86_64", "ansible": ansible}
    answer = api.put(f"/v1/devices/{device_id}/enrollment", json=body)
    assert answer.status_code == 200, answer.text


def test_rollouts_gates_and_rollback_over_ssh_less_push(push_fleet: PushFleet) -> None:
    api, nodes = push_fleet.api, push_fleet.nodes
    ids = tuple(nodes)
    # provision enrolled each node with the hardware its agent detected, from the controller
    devices = {d["id"]: d for d in api.get("/v1/devices").json()}
    assert all(devices[i]["hardware"]["gpu_class"] == "cpu-x86_64" for i in ids), devices
    # ... with a token of that run's own, revoked when the run ended (no standing credential on the controller)
    run_tokens = [t for t in api.get("/v1/tokens").json() if t["name"].startswith("playbook-run-")]
    assert run_tokens and all(t["revoked_at"] is not None and t["role"] == "operator" for t in run_tokens)
    assert all(t["last_used_at"] is not None for t in run_tokens)

    push_and_build(api, MODEL, linear(1), inputs_only())
    first = push_fleet.create(1, SITE)
    done = wait_phase(api, first, ("succeeded",), 180, push_fleet.why)
    assert set(device_status(done).values()) == {"activated"}
    assert fleet_serves(api, MODEL, 1, ids)
    for node in nodes.values():  # the daemon picks up what `edge-agent apply` installed
        wait_for(lambda n=node: answered_version(n.url, MODEL) == 1, timeout=30, what=f"{node.name} serving v1")
    runs = api.get("/v1/playbook-runs").json()
    assert any(r["playbook"] == "deploy_model" and r["purpose"] == f"rollout:{first}" for r in runs), runs

    # A version whose reference outputs its own model does not reproduce never ships: the control plane re-proves
    # the artifact against them and rejects the build, so no rollout of it can start.
    bad = upload_and_build(api, MODEL, linear(2), wrong_reference_samples())
    assert bad["status"] == "rejected" and bad["parity"]["measured_by"] == "control-plane", bad
    refused = api.post("/v1/rollouts", json={"model": MODEL, "version": 2, "selector": {"labels": SITE}})
    assert refused.status_code == 409, refused.text

    # v3 installs on the canary, but the canary's gate wants served requests that never come (these nodes have no
    # broker, so no telemetry): the gate fails at the end of the bake, the rollout aborts and the canary is
    # restored to v1 from its previous slot by another push, while the other node never sees v3.
    push_and_build(api, MODEL, linear(3), inputs_only())
    second = push_fleet.create(
        3,
        SITE,
        strategy={"type": "canary", "canary": {"count": 1}, "waves": [{"percent": 100}]},
        bake_s=1,
        step_gates={"canary": {"min_requests": 5}},
    )
    ended = wait_phase(api, second, ("rolled_back", "aborted", "succeeded"), 240, push_fleet.why)
    assert ended["phase"] == "rolled_back", ended
    statuses = device_status(ended)
    canary = next(d for d, s in statuses.items() if s == "restored")
    assert sorted(statuses.values()) == ["restored", "waiting"]
    events = api.get(f"/v1/rollouts/{second}/events", headers={"Accept": "application/json"})
    assert "request(s) of v3 by the end of the bake" in events.text, events.text[-2000:]
    for node in nodes.values():  # the daemon picks up what the restoring `edge-agent apply` switched back to
        wait_for(
            lambda n=node: answered_version(n.url, MODEL) == 1,
            timeout=30,
            what=f"{node.name} (canary {canary}) serving v1 again",
        )


def test_an_unreachable_host_fails_its_step_at_once(push_fleet: PushFleet) -> None:
    api = push_fleet.api
    closed = free_port()
    enroll(api, "push-gone", {"host": "127.0.0.1", "port": closed, "user": "root"})
    version = push_and_build(api, MODEL, linear(3), inputs_only())["version"]
    rollout_id = push_fleet.create(version, SITE, gates={"on_fail": "pause"}, device_deadline_s=600)
    ended = wait_phase(api, rollout_id, ("paused",), 180, push_fleet.why)
    body = rollout(api, rollout_id)
    gone = next(d for d in body["devices"] if d["device_id"] == "push-gone")
    assert gone["status"] == "failed" and "unreachable" in (gone["reason"] or ""), gone
    assert ended["phase"] == "paused"
    device = api.get("/v1/devices/push-gone").json()
    assert device["delivery_failure"]["generation"] == device["desired_generation"]
    assert api.post(f"/v1/rollouts/{rollout_id}/abort").status_code in (200, 202)
    wait_phase(api, rollout_id, ("rolled_back", "aborted"), 180, push_fleet.why)
    assert api.delete("/v1/devices/push-gone").status_code == 204


def test_decommission_stops_the_agent_and_forgets_the_device(push_fleet: PushFleet) -> None:
    api, node = push_fleet.api, push_fleet.nodes["push-2"]
    assert node.supervisor_pid() is not None
    run = push_fleet.run({"playbook": "decommission", "hosts": ["push-2"]})
    assert run["status"] == "succeeded", push_fleet.why()
    wait_for(lambda: node.supervisor_pid() is None, timeout=20, what="push-2's agent to stop")
    assert not node.prefix.exists() and not node.data_dir.exists()
    assert api.get("/v1/devices/push-2").status_code == 404, "the run's own result must not bring the device back"
    assert api.get("/v1/devices/push-1").status_code == 200
