"""The playbooks, run for real with ansible-runner on `ansible_connection=local` nodes: each node has its own prefix,
config, data and fact directories and its own serving port; the agent runs under the role's supervisor (these hosts
have no systemd). The module shares two provisioned nodes; its tests run in order, as an operator would:
provision, re-provision, push models, gather facts, upgrade, decommission.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from edge_agent.protocol import Signer
from tests.integration.ansible.playbook_support import (
    ROLE,
    LocalNode,
    PlaybookRun,
    alive,
    offline_install_vars,
    project_wheel,
    run_playbook,
    wheel_with_version,
    write_bundle,
    write_inventory,
)
from tests.support import port_open, wait_for
from tests.unit.agent.builders import build_version, signed

pytestmark = pytest.mark.integration


@dataclass
class Fleet:
    nodes: list[LocalNode]
    inventory: Path
    signer: Signer
    wheel: Path
    root: Path
    provisioned: PlaybookRun

    @property
    def a(self) -> LocalNode:
        return self.nodes[0]

    @property
    def b(self) -> LocalNode:
        return self.nodes[1]

    def common_vars(self) -> dict[str, object]:
        return {
            "edge_control_plane_public_key": self.signer.public_key_b64,
            "edge_agent_channel": "ansible",
            "edge_agent_labels": {"site": "factory-a"},
            **offline_install_vars(self.wheel),
        }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("ansible-local")
    signer = Signer.generate()
    nodes = [LocalNode("edge-a", root / "edge-a"), LocalNode("edge-b", root / "edge-b")]
    made = Fleet(nodes, root / "inventory.yml", signer, project_wheel(root / "wheel"), root, provisioned=None)  # type: ignore[arg-type]
    write_inventory(made.inventory, nodes, **made.common_vars())
    try:
        made.provisioned = run_playbook("provision.yml", made.inventory)
        yield made
    finally:
        for node in nodes:
            node.stop()


def ready(node: LocalNode) -> bool:
    return httpx.get(f"{node.url}/v2/health/ready", timeout=2).status_code == 200


def served_versions(node: LocalNode, model: str = "lin") -> list[str]:
    answer = httpx.get(f"{node.url}/v2/models/{model}", timeout=2)
    return list(answer.json()["versions"]) if answer.status_code == 200 else []


def installed_version(node: LocalNode) -> str:
    python = node.prefix / "venv" / "bin" / "python"
    code = "import importlib.metadata as m; print(m.version('edge-orchestrator'))"
    # -I and cwd: only the node's own virtualenv (and its site dirs) count, not a checkout's egg-info.
    done = subprocess.run([str(python), "-I", "-c", code], cwd=node.root, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_provision_installs_configures_and_starts_the_agent(fleet: Fleet) -> None:
    run = fleet.provisioned
    assert run.rc == 0, run.explain()
    for node in fleet.nodes:
        assert run.changed(node.name) > 0
        assert node.agent.is_file()
        assert node.config_file.stat().st_mode & 0o777 == 0o600
        config = yaml.safe_load(node.config_file.read_text())
        assert config["device_id"] == node.name
        assert config["mqtt"] == {"enabled": False}  # channel ansible: no broker
        assert config["serving"] == {"host": "127.0.0.1", "port": node.port}
        assert config["control_plane_public_key"] == fleet.signer.public_key_b64
        assert config["labels"] == {"site": "factory-a"}
        assert node.agent_pid() is not None
        assert ready(node), f"{node.name} does not answer /v2/health/ready on {node.port}"


def test_second_provision_changes_nothing(fleet: Fleet) -> None:
    pids = [node.agent_pid() for node in fleet.nodes]
    run = run_playbook("provision.yml", fleet.inventory)
    assert run.rc == 0, run.explain()
    for node in fleet.nodes:
        assert run.changed(node.name) == 0, run.changed_tasks(node.name)
    assert [node.agent_pid() for node in fleet.nodes] == pids  # not restarted


def test_check_mode_on_a_fresh_host_reports_changes_and_changes_nothing(fleet: Fleet, tmp_path: Path) -> None:
    fresh = LocalNode("edge-fresh", tmp_path / "edge-fresh")
    inventory = write_inventory(tmp_path / "inventory.yml", [fresh], **fleet.common_vars())
    run = run_playbook("provision.yml", inventory, check=True)
    assert run.rc == 0, run.explain()
    assert run.changed(fresh.name) > 0
    assert not fresh.root.exists()
    assert not port_open(fresh.port)


def test_systemd_unit_renders_for_hosts_with_systemd(fleet: Fleet, tmp_path: Path) -> None:
    unit = tmp_path / "edge-agent.service"
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Render the unit",
                    "hosts": "all",
                    "gather_facts": False,
                    "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
                    "tasks": [
                        {
                            "name": "Render",
                            "ansible.builtin.template": {
                                "src": str(ROLE / "templates" / "edge-agent.service.j2"),
                                "dest": str(unit),
                                "mode": "0644",
                            },
                        }
                    ],
                }
            ]
        )
    )
    inventory = write_inventory(tmp_path / "inventory.yml", [LocalNode("edge-unit", tmp_path)])
    extra = {"edge_agent_prefix": "/opt/edge", "edge_agent_config_dir": "/etc/edge", "edge_agent_data_dir": "/srv/edge"}
    run = run_playbook(str(playbook), inventory, extra_vars=extra)
    assert run.rc == 0, run.explain()
    text = unit.read_text()
    assert "ExecStart=/opt/edge/venv/bin/edge-agent run --config /etc/edge/agent.yaml\n" in text
    assert "Restart=always\n" in text
    assert "ReadWritePaths=/srv/edge\n" in text
    assert "WantedBy=multi-user.target\n" in text


def deploy(fleet: Fleet, generation: int, version: int, signer: Signer | None = None) -> PlaybookRun:
    bundles = fleet.root / f"bundles-{generation}"
    model = build_version(fleet.root / "models", version)
    document = signed(signer or fleet.signer, generation, [model], device_id=fleet.a.name)
    write_bundle(bundles / fleet.a.name, document)
    return run_playbook(
        "deploy_model.yml", fleet.inventory, extra_vars={"edge_bundles_root": str(bundles)}, limit="edge-a"
    )


def test_deploy_model_pushes_a_model_the_agent_serves(fleet: Fleet) -> None:
    run = deploy(fleet, generation=1, version=1)
    assert run.rc == 0, run.explain()
    assert run.changed("edge-a") > 0
    result = run.fact("edge-a", "edge_result")
    assert result["ok"] is True and result["changed"] is True and result["generation"] == 1
    assert [(m["name"], m["version"]) for m in result["reported"]["models"]] == [("lin", 1)]
    # The running agent picks the applied journal up within its refresh interval and serves the model.
    wait_for(lambda: served_versions(fleet.a) == ["1"], timeout=20, what="edge-a serving lin v1")
    status = subprocess.run(
        [str(fleet.a.agent), "status", "--config", str(fleet.a.config_file), "--json"], capture_output=True, text=True
    )
    assert json.loads(status.stdout)["applied_generation"] == 1


def test_deploying_the_same_bundle_again_changes_nothing(fleet: Fleet) -> None:
    run = deploy(fleet, generation=1, version=1)
    assert run.rc == 0, run.explain()
    assert run.changed("edge-a") == 0, run.changed_tasks("edge-a")
    result = run.fact("edge-a", "edge_result")
    assert result["ok"] is True and result["changed"] is False


def test_a_bundle_signed_by_another_key_fails_the_host_and_the_old_model_keeps_serving(fleet: Fleet) -> None:
    run = deploy(fleet, generation=2, version=2, signer=Signer.generate())
    assert run.rc != 0
    assert run.failed("edge-a")
    assert any("signature" in message and "pins key" in message for message in run.failure_messages("edge-a")), (
        run.explain()
    )
    result = run.fact("edge-a", "edge_result")  # handed back before the host failed
    assert result["ok"] is False and "signature" in result["reason"]
    assert served_versions(fleet.a) == ["1"]


def test_facts_playbook_gathers_the_agent_fact(fleet: Fleet) -> None:
    run = run_playbook("facts.yml", fleet.inventory, limit="edge-a")
    assert run.rc == 0, run.explain()
    gathered = run.fact("edge-a", "ansible_local")
    assert gathered["edge_agent"]["gpu_class"] == "cpu-x86_64"
    assert run.fact("edge-a", "edge_result") == {"hardware": gathered["edge_agent"]}
    assert (fleet.a.fact_path / "edge_agent.fact").stat().st_mode & 0o111


def test_upgrade_stops_at_a_failed_batch(fleet: Fleet, tmp_path: Path) -> None:
    broken = tmp_path / "edge_orchestrator-9.9.9-py3-none-any.whl"
    broken.write_bytes(b"not a wheel")
    inventory = write_inventory(tmp_path / "inventory.yml", fleet.nodes, **fleet.common_vars())
    data = yaml.safe_load(inventory.read_text())
    data["all"]["hosts"]["edge-a"]["edge_agent_wheel"] = str(broken)  # the first batch fails
    inventory.write_text(yaml.safe_dump(data))
    before = fleet.b.agent_pid()
    run = run_playbook("upgrade_agent.yml", inventory, extra_vars={"edge_upgrade_serial": 1})
    assert run.rc != 0
    assert run.failed("edge-a")
    assert not run.ran_on("edge-b"), run.stats  # the play stopped before the second batch
    assert fleet.b.agent_pid() == before
    assert installed_version(fleet.b) == "0.1.0"


def test_upgrade_installs_the_new_version_batch_by_batch(fleet: Fleet, tmp_path: Path) -> None:
    newer = wheel_with_version(fleet.wheel, "0.1.1", tmp_path)
    inventory = write_inventory(
        tmp_path / "inventory.yml", fleet.nodes, **(fleet.common_vars() | {"edge_agent_wheel": str(newer)})
    )
    before = {node.name: node.agent_pid() for node in fleet.nodes}
    run = run_playbook(
        "upgrade_agent.yml", inventory, extra_vars={"edge_upgrade_serial": 1, "edge_upgrade_max_fail_percentage": 0}
    )
    assert run.rc == 0, run.explain()
    batches = [e for e in run.events if e.get("event") == "playbook_on_play_start"]
    assert len(batches) == 2  # serial 1: one batch per host
    for node in fleet.nodes:
        assert installed_version(node) == "0.1.1"
        assert node.agent_pid() not in (None, before[node.name])  # restarted
        assert ready(node)
    assert served_versions(fleet.a) == ["1"]  # the upgraded agent serves its last-known-good model


def test_decommission_stops_and_removes_the_agent(fleet: Fleet) -> None:
    pids = [pid for node in fleet.nodes for pid in (node.supervisor_pid(), node.agent_pid())]
    assert all(pids)
    run = run_playbook("decommission.yml", fleet.inventory)
    assert run.rc == 0, run.explain()
    assert not any(alive(pid) for pid in pids if pid)
    for node in fleet.nodes:
        assert not port_open(node.port)
        assert not node.prefix.exists() and not node.config_dir.exists() and not node.data_dir.exists()
    again = run_playbook("decommission.yml", fleet.inventory)
    assert again.rc == 0, again.explain()
    assert all(again.changed(node.name) == 0 for node in fleet.nodes), again.stats
