"""The playbooks over real SSH: three hosts, each in its own network namespace with its own sshd (tests/netns_hosts).

Only the network is separate - the filesystem is shared, so every host gets its own prefix, config and data dirs
under this module's tmp dir, while each serves on 127.0.0.1:8500 of its own namespace. The agents run on the
Ansible channel (no broker), installed from the project's wheel with `--no-deps --no-index`. Runs go through
ansible-runner (as the control plane runs them); the inventory alone carries the SSH settings.

The tests run in order, as an operator would: provision, push a model, push it again, push while one host's link is
cut, push again once it is back. They also check that no ssh process of ours outlives a run (Ansible's default
ControlPersist would keep one, and with it a session inside the host's namespace).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.protocol import Signer
from tests.integration.ansible.playbook_support import (
    BIN,
    PlaybookRun,
    alive,
    children_of,
    install_dirs,
    offline_install_vars,
    project_wheel,
    run_playbook,
    write_bundle,
)
from tests.netns_hosts import NetnsHost, NetnsHosts, NetnsUnavailable
from tests.support import wait_for
from tests.unit.agent.builders import build_version, signed

pytestmark = pytest.mark.integration

PORT = 8500  # the same in every namespace: each has its own loopback


@dataclass
class SshFleet:
    hosts: NetnsHosts
    inventory: Path
    signer: Signer
    root: Path
    provisioned: PlaybookRun | None = None

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.hosts.hosts]

    def node_dir(self, host: NetnsHost) -> Path:
        return self.root / "nodes" / host.name

    def supervisor_pid(self, host: NetnsHost) -> int | None:
        try:
            pid = int((self.node_dir(host) / "opt" / "run" / "supervisor.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def served_versions(self, host: NetnsHost, model: str = "lin") -> list[str]:
        """What the agent inside `host`'s namespace serves (asked on that namespace's 127.0.0.1)."""
        status, body = self.hosts.http_get(host, f"http://127.0.0.1:{PORT}/v2/models/{model}")
        return list(json.loads(body)["versions"]) if status == 200 else []

    def active_version(self, host: NetnsHost, model: str = "lin") -> str | None:
        return next(iter(self.served_versions(host, model)), None)  # the active version comes first

    def deploy(self, generation: int, version: int) -> PlaybookRun:
        """Bundles for every host (desired state signed for its device id) and one deploy_model.yml run."""
        bundles = self.root / f"bundles-{generation}"
        model = build_version(self.root / "models", version)
        for name in self.names:
            write_bundle(bundles / name, signed(self.signer, generation, [model], device_id=name))
        return run_playbook("deploy_model.yml", self.inventory, extra_vars={"edge_bundles_root": str(bundles)})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshFleet]:
    root = tmp_path_factory.mktemp("ansible-ssh")
    try:
        hosts = NetnsHosts(3, root / "netns")
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        signer = Signer.generate()
        dirs = {host.name: install_dirs(root / "nodes" / host.name) for host in hosts.hosts}
        common = {
            "edge_control_plane_public_key": signer.public_key_b64,
            "edge_agent_channel": "ansible",
            "edge_agent_serving_port": PORT,
            "edge_agent_service_manager": "supervised",
            **offline_install_vars(project_wheel(root / "wheel")),
        }
        # A cut link shows as a connect timeout: keep it short.
        inventory = root / "inventory.yml"
        hosts.write_inventory(inventory, host_vars=dirs, group_vars=common, connect_timeout_s=5)
        made = SshFleet(hosts, inventory, signer, root)
        made.provisioned = run_playbook("provision.yml", inventory)
        yield made
    finally:
        hosts.close()  # kills the agents too: they run inside the namespaces


def test_provision_over_ssh_runs_an_agent_inside_every_namespace(fleet: SshFleet) -> None:
    run = fleet.provisioned
    assert run is not None and run.rc == 0, run.explain() if run else None
    for host in fleet.hosts.hosts:
        assert run.changed(host.name) > 0
        supervisor = fleet.supervisor_pid(host)
        assert supervisor is not None, f"no supervisor for {host.name}"
        # started over SSH, so inside the host's namespace: its sshd's session spawned it
        assert {supervisor, *children_of(supervisor)} <= set(fleet.hosts.pids(host))
        status, _ = fleet.hosts.http_get(host, f"http://127.0.0.1:{PORT}/v2/health/ready")
        assert status == 200, f"{host.name}'s agent does not answer in its namespace"


def test_deploy_over_ssh_serves_the_model_on_every_host(fleet: SshFleet) -> None:
    run = fleet.deploy(generation=1, version=1)
    assert run.rc == 0, run.explain()
    for host in fleet.hosts.hosts:
        assert run.changed(host.name) > 0
        result = run.fact(host.name, "edge_result")
        assert result["ok"] is True and result["changed"] is True and result["generation"] == 1
        assert result["reported"]["device_id"] == host.name
        wait_for(lambda host=host: fleet.served_versions(host) == ["1"], timeout=20, what=f"{host.name} on lin v1")


def test_a_second_deploy_changes_nothing(fleet: SshFleet) -> None:
    run = fleet.deploy(generation=1, version=1)
    assert run.rc == 0, run.explain()
    assert {name: run.changed(name) for name in fleet.names} == dict.fromkeys(fleet.names, 0), run.explain()


def test_a_host_whose_link_is_cut_is_unreachable_and_the_others_succeed(fleet: SshFleet) -> None:
    cut = fleet.hosts.hosts[1]
    others = [host for host in fleet.hosts.hosts if host is not cut]
    fleet.hosts.cut(cut)
    try:
        run = fleet.deploy(generation=2, version=2)
    finally:
        fleet.hosts.restore(cut)
    assert run.rc == 4, run.explain()  # ansible-playbook's exit code for unreachable hosts
    assert run.status == "failed"
    assert run.stats["dark"] == {cut.name: 1}, run.stats
    assert not run.stats.get("failures"), run.stats
    assert run.fact(cut.name, "edge_result") is None
    for host in others:
        assert run.changed(host.name) > 0
        assert run.fact(host.name, "edge_result")["generation"] == 2
        wait_for(lambda host=host: fleet.active_version(host) == "2", timeout=20, what=f"{host.name} on v2")
    assert fleet.served_versions(cut) == ["1"]  # untouched: it keeps serving what it had

    again = fleet.deploy(generation=2, version=2)  # the link is back: only the missed host changes
    assert again.rc == 0, again.explain()
    assert {name: again.changed(name) > 0 for name in fleet.names} == {h.name: h is cut for h in fleet.hosts.hosts}
    wait_for(lambda: fleet.active_version(cut) == "2", timeout=20, what=f"{cut.name} on v2")


def test_no_ssh_process_outlives_a_run(fleet: SshFleet) -> None:
    assert fleet.hosts.ssh_clients() == []
    for host in fleet.hosts.hosts:
        # left in the namespace: sshd's listener and the supervised agent - no session a lingering master holds open
        supervisor = fleet.supervisor_pid(host)
        assert supervisor is not None
        expected = {fleet.hosts.sshd_pid(host), supervisor, *children_of(supervisor)}
        wait_for(lambda host=host, expected=expected: set(fleet.hosts.pids(host)) == expected, what="sessions gone")


def test_the_control_persist_trap_is_real(fleet: SshFleet) -> None:
    """Without the inventory's ssh_args, Ansible's default ControlPersist=60s leaves a master ssh behind."""
    inventory = json.loads(fleet.inventory.read_text())
    for host_vars in inventory["all"]["children"]["edge"]["hosts"].values():
        del host_vars["ansible_ssh_args"]
    plain = fleet.root / "inventory-default-ssh-args.yml"
    plain.write_text(json.dumps(inventory))
    env = fleet.hosts.env(ANSIBLE_SSH_CONTROL_PATH_DIR=str(fleet.root / "cp"))
    del env["ANSIBLE_SSH_ARGS"]
    argv = [str(BIN / "ansible"), "-i", str(plain), "edge", "-m", "ansible.builtin.ping"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    leftovers = fleet.hosts.ssh_clients()
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert leftovers, "expected Ansible's default ControlPersist to keep a master ssh alive"
    finally:
        fleet.hosts.kill(leftovers)
    assert fleet.hosts.ssh_clients() == []
