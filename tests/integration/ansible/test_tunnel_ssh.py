"""Ansible reaches a device that no address leads to, through its tunnel (docs/tunnels.md, "Ansible through the
tunnel").

The device is a network namespace (tests/netns_hosts.py) whose sshd listens on the namespace's own 127.0.0.1 only:
nothing outside it can connect to it. Its agent (`edge-agent run` inside the namespace, enrolled with
`edge-agent enroll`, no broker) keeps its one tunnel to `edgectl tunnel-gateway` over the namespace's veth and exposes
that sshd as its `ssh` service. Then, as an operator would:
- `ansible-playbook` with the `edge_fleet` inventory (`connection: tunnel`) runs a play on the device: its ssh goes
  through `edgectl tunnel open DEVICE ssh --stdio` and the control plane, and each connection is a recorded session;
- the control plane's own playbook run (`facts.yml`, the device enrolled with `ansible.connection: tunnel`) reaches
  it through the gateway's socket for its `ssh` service.
Skipped, with the reason, where network namespaces or sshd cannot be used; never passed without running.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.ansible.playbook_support import BIN, PLAYBOOKS
from tests.integration.tunnel_processes import Agent, Gateway, start_agent, start_gateway, stop, tunnel_env
from tests.netns_hosts import SSH_ARGS, SSH_COMMON_ARGS, NetnsHost, NetnsHosts, NetnsUnavailable
from tests.support import ControlPlaneProcess, Mosquitto, mint_token, python_env, wait_for

pytestmark = pytest.mark.integration

DEVICE = "ssh-dev-1"


@dataclass
class Lab:
    hosts: NetnsHosts
    host: NetnsHost
    server: ControlPlaneProcess
    gateway: Gateway
    agent: Agent
    root: Path
    operator: str


@pytest.fixture(scope="module")
def lab(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("tunnel-ssh")
    try:
        hosts = NetnsHosts(1, root / "netns", prefix="ssh-dev", loopback_only=True)
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    started: list[subprocess.Popen[bytes]] = []
    server = None
    try:
        host = hosts.host(DEVICE)
        prefix = root / "node"  # the filesystem is shared: the "device" runs the test's own edge-agent
        (prefix / "venv" / "bin").mkdir(parents=True)
        (prefix / "venv" / "bin" / "edge-agent").symlink_to(Path(sys.executable).parent / "edge-agent")
        env = tunnel_env(["ssh", "kserve"]) | {
            "EDGE_CP_ANSIBLE__PRIVATE_KEY_FILE": str(hosts.client_key),
            "EDGE_CP_ANSIBLE__SSH_ARGS": f"{SSH_COMMON_ARGS} {SSH_ARGS}",
            "EDGE_CP_ANSIBLE__VARS": json.dumps(
                {"edge_agent_prefix": str(prefix), "edge_agent_fact_path": str(root / "facts.d")}
            ),
        }
        server = ControlPlaneProcess(mosquitto, root / "data", extra_env=env).start()
        # the gateway listens on the root side of the namespace's veth: the one thing the device can reach
        gateway = start_gateway(server, tunnel_env(["ssh", "kserve"]), host=host.gateway)
        started.append(gateway.process)
        agent = start_agent(
            server,
            mosquitto,
            gateway,
            root / "agent",
            DEVICE,
            {"ssh": "127.0.0.1:22"},
            gateway_host=host.gateway,
            mqtt=False,
            netns=host.namespace,
        )
        started.append(agent.process)
        wait_for(lambda: agent.alive() and gateway.socket(DEVICE, "ssh").exists(), timeout=60, what="the tunnel")
        with server.client() as api:
            operator = mint_token(api, "operator", "ops-ansible")
            connection = {"connection": "tunnel", "user": "root", "python": sys.executable}
            body = {"channel": "ansible", "labels": {"site": "behind-nat"}, "ansible": connection}
            assert api.put(f"/v1/devices/{DEVICE}/enrollment", json=body).status_code == 200
        yield Lab(hosts, host, server, gateway, agent, root, operator)
    finally:
        for process in started:
            stop(process)
        if server is not None:
            server.stop()
        hosts.close()


def test_nothing_outside_the_namespace_reaches_the_devices_ssh(lab: Lab) -> None:
    with pytest.raises(OSError):
        socket.create_connection((lab.host.address, 22), timeout=5).close()
    assert lab.hosts.ssh(lab.host, "true", timeout=20).returncode != 0
    inside = lab.hosts.exec(lab.host, [*lab.hosts.ssh_argv(lab.host)[:-1], "root@127.0.0.1", "true"])
    assert inside.returncode == 0, inside.stderr  # it is there, for whoever is inside


def test_ansible_playbook_reaches_the_device_through_its_tunnel(lab: Lab) -> None:
    inventory = lab.root / "fleet.yml"
    inventory.write_text(
        json.dumps({"plugin": "edge_fleet", "url": lab.server.url, "token": lab.operator, "connection": "tunnel"})
    )
    play = lab.root / "where.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.command: ip -4 -o addr show\n      register: where\n      changed_when: false\n"
        "    - ansible.builtin.debug:\n        var: where.stdout_lines\n"
    )
    env = lab.hosts.env(
        ANSIBLE_CONFIG=str(PLAYBOOKS / "ansible.cfg"),  # enables the edge_fleet plugin
        ANSIBLE_PRIVATE_KEY_FILE=str(lab.hosts.client_key),
        ANSIBLE_SSH_COMMON_ARGS=SSH_COMMON_ARGS,
    )
    env |= {"EDGECTL_TOKEN": lab.operator, "EDGECTL_CONFIG": python_env()["EDGECTL_CONFIG"]}
    enrolled = lab.root / "fleet-enrolled.yml"  # no `connection:` option: the device's enrolled one (tunnel) rules
    enrolled.write_text(json.dumps({"plugin": "edge_fleet", "url": lab.server.url, "token": lab.operator}))
    for source in (inventory, enrolled):
        listed = subprocess.run(
            [str(BIN / "ansible-inventory"), "-i", str(source), "--host", DEVICE],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listed.returncode == 0, listed.stderr
        shown = json.loads(listed.stdout)
        assert shown["ansible_ssh_common_args"] == (
            f"-o 'ProxyCommand=edgectl --url {lab.server.url} tunnel open {DEVICE} ssh --stdio'"
        )
        assert (shown["ansible_connection"], shown["ansible_user"]) == ("ssh", "root")
        assert lab.operator not in listed.stdout  # the plugin's token never lands in a host's variables

    ran = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(play)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=lab.root,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"inet {lab.host.address}/" in ran.stdout  # the command ran inside the device's namespace
    with lab.server.client() as api:
        sessions = api.get("/v1/tunnel-sessions", params={"all": "true", "limit": 1000}).json()
    ssh_sessions = [s for s in sessions if (s["device_id"], s["service"], s["who"]) == (DEVICE, "ssh", "ops-ansible")]
    assert ssh_sessions and all(s["kind"] == "tcp" for s in ssh_sessions)
    assert all(s["bytes_to_device"] > 0 and s["bytes_from_device"] > 0 for s in ssh_sessions if s["closed_at"])


def test_the_control_planes_own_playbook_run_reaches_the_device_through_its_tunnel(lab: Lab) -> None:
    with lab.server.client() as api:
        run = api.post("/v1/playbook-runs", json={"playbook": "facts", "hosts": [DEVICE]})
        assert run.status_code == 202, run.text
        run_id = run.json()["id"]
        done = wait_for(
            lambda: (r := api.get(f"/v1/playbook-runs/{run_id}").json())["status"] in ("succeeded", "failed") and r,
            timeout=240,
            what="the facts run",
        )
    assert done["status"] == "succeeded", json.dumps(done, indent=2)
    (host,) = done["hosts"]
    assert host["host"] == DEVICE and host["status"] in ("ok", "changed")
    assert host["result"]["hardware"]["arch"] == os.uname().machine
