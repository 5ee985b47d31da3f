"""provision.yml with an enrollment token, for real: ansible-runner on a local-connection node, a real control plane
(`edgectl server`). The node runs `edge-agent enroll` itself; the token's presets place it in the fleet; the token and
the credentials it received appear nowhere in what Ansible prints; a second run changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.ansible.playbook_support import (
    LocalNode,
    offline_install_vars,
    project_wheel,
    run_playbook,
    write_inventory,
)
from tests.support import ControlPlaneProcess, Mosquitto, enrollment_token

pytestmark = pytest.mark.integration


@pytest.fixture
def control_plane(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    server = ControlPlaneProcess(broker=mosquitto, data_dir=tmp_path / "cp")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_provision_with_an_enrollment_token_enrolls_the_node_itself_once(
    control_plane: ControlPlaneProcess, tmp_path: Path
) -> None:
    with control_plane.client() as api:
        public_key = api.get("/v1/keys/signing").json()["public_key"]
        token = enrollment_token(api, "ansible-site", labels={"site": "tok"}, channel="ansible", max_uses=1)
    node = LocalNode("edge-tok", tmp_path / "edge-tok")
    inventory = write_inventory(
        tmp_path / "inventory.yml",
        [node],
        edge_control_plane_public_key=public_key,
        edge_control_plane_url=control_plane.url,
        edge_agent_enrollment_token=token,
        edge_agent_channel="ansible",
        edge_agent_labels={"site": "what-the-node-says"},
        **offline_install_vars(project_wheel(tmp_path / "wheel")),
    )
    try:
        first = run_playbook("provision.yml", inventory)
        assert first.rc == 0, first.explain()
        config = yaml.safe_load(node.config_file.read_text())
        assert config["device_id"] == "edge-tok" and config["mqtt"]["enabled"] is False
        assert node.config_file.stat().st_mode & 0o777 == 0o600
        assert Path(config["device_key_file"]).stat().st_mode & 0o777 == 0o600
        secrets = (token, config["control_plane_token"], config["mqtt"]["password"])
        assert not any(secret in first.stdout for secret in secrets)  # no_log: Ansible printed none of them
        with control_plane.client() as api:
            device = api.get("/v1/devices/edge-tok").json()
            assert (device["labels"], device["channel"]) == ({"site": "tok"}, "ansible")  # the token's, not the node's
        me = httpx.get(
            f"{control_plane.url}/v1/whoami", headers={"Authorization": f"Bearer {config['control_plane_token']}"}
        ).json()
        assert (me["role"], me["device_id"]) == ("device", "edge-tok")
        pid = node.agent_pid()
        assert pid is not None

        again = run_playbook("provision.yml", inventory)  # the token is used up: it is not asked again
        assert again.rc == 0, again.explain()
        assert again.changed(node.name) == 0, again.changed_tasks(node.name)
        assert node.agent_pid() == pid
        assert yaml.safe_load(node.config_file.read_text()) == config
    finally:
        node.stop()
