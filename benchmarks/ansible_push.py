"""Ansible push benchmark: what a push deployment (deploy_model.yml) costs, and how much of it is Ansible's own.

Up to 10 real SSH hosts, each in its own network namespace with its own sshd (tests/netns_hosts.py), are provisioned
once with provision.yml (the agent from the project's wheel, Ansible channel, supervised). Then, for each host count
(forks = hosts, pipelining on, no ControlPersist), every run measures the wall time of:
  ansible ping   `ansible -m ping`: Ansible's fixed cost per run (start-up, inventory, one task on every host)
  bare copy      `ssh host 'cat > FILE' < ARTIFACT` to every host in parallel: moving the bytes, nothing else
  bare push      the push done by hand, every host in parallel: `tar | ssh 'tar -x'` of desired.json + artifacts,
                 then `ssh edge-agent apply` (a new generation with a new artifact of the same size); its apply part
                 is also shown alone
  deploy tiny    deploy_model.yml, new generation, a model of a few hundred bytes: Ansible + the agent, no bulk data
  deploy no-op   deploy_model.yml again with the same bundle: checksummed copies, the agent says "already applied"
  deploy full    deploy_model.yml, new generation, a new artifact of about --size-mb MB (an ONNX model padded with an
                 unused initializer, as tests/unit/agent/builders.py pads them)
  deploy full cp the same with ControlPersist on (Ansible's default outside these runs: one ssh master per host,
                 reused by every module run); the masters are ended by PID right after
and prints medians with ratios against the baselines of the same run. Every deploy is checked: exit code 0, every
host changed (none for the no-op), the agent's answer ok.

    .venv/bin/python benchmarks/ansible_push.py [--hosts 1,3,10] [--runs 3] [--size-mb 20]

Not a test. Needs root (network namespaces) and /usr/sbin/sshd; says why and exits 0 otherwise. Everything it
creates (namespaces, veths, sshd and agent processes, files) is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.protocol import ModelAssignment, Signer
from tests.integration.ansible.playbook_support import (
    BIN,
    PLAYBOOKS,
    install_dirs,
    offline_install_vars,
    project_wheel,
    write_bundle,
)
from tests.netns_hosts import MAX_HOSTS, NetnsHost, NetnsHosts, NetnsUnavailable
from tests.unit.agent.builders import build_version, signed

MAX_BENCH_HOSTS = min(10, MAX_HOSTS)
RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")
FIGURES = (
    "ping",
    "bare copy",
    "bare push",
    "bare apply",
    "deploy tiny",
    "deploy no-op",
    "deploy full",
    "deploy full cp",
)


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """Per host, the counters of the default callback's PLAY RECAP."""
    recap: dict[str, dict[str, int]] = {}
    for line in output.rpartition("PLAY RECAP")[2].splitlines():
        match = RECAP_LINE.match(line.strip())
        if match:
            recap[match["host"]] = {k: int(v) for k, v in (item.split("=") for item in match["counts"].split())}
    return recap


@dataclass
class Bench:
    hosts: NetnsHosts
    root: Path
    signer: Signer
    inventory: Path
    size: int
    generation: int = 0
    version: int = 0

    def env(self) -> dict[str, str]:
        return self.hosts.env(ANSIBLE_CONFIG=str(PLAYBOOKS / "ansible.cfg"))

    def node(self, host: NetnsHost) -> Path:
        return self.root / "nodes" / host.name

    def model(self, padding: int) -> ModelAssignment:
        self.version += 1
        return build_version(self.root / "models", self.version, padding=padding)

    def bundles(self, hosts: list[NetnsHost], model: ModelAssignment) -> Path:
        """A new generation of `model` for `hosts`: `bundles/{host}/desired.json` and `artifacts/<sha256>`."""
        self.generation += 1
        shutil.rmtree(self.root / "bundles", ignore_errors=True)
        for host in hosts:
            write_bundle(self.root / "bundles" / host.name, signed(self.signer, self.generation, [model], host.name))
        return self.root / "bundles"

    def ansible(self, argv: list[str]) -> tuple[float, str, int]:
        start = time.monotonic()
        result = subprocess.run(argv, cwd=PLAYBOOKS, env=self.env(), capture_output=True, text=True, check=False)
        return time.monotonic() - start, result.stdout + result.stderr, result.returncode

    def playbook(self, playbook: str, hosts: list[NetnsHost], *extra: str) -> tuple[float, dict[str, dict[str, int]]]:
        names = ",".join(h.name for h in hosts)
        argv = [str(BIN / "ansible-playbook"), "-i", str(self.inventory), "-l", names, "-f", str(len(hosts))]
        wall, output, rc = self.ansible([*argv, *extra, playbook])
        recap = parse_recap(output)
        if rc != 0 or sorted(recap) != sorted(h.name for h in hosts):
            raise RuntimeError(f"{playbook} on {names} exited with {rc}:\n{output[-4000:]}")
        return wall, recap

    def deploy(self, hosts: list[NetnsHost], expect_changed: bool, *extra: str) -> float:
        bundles = f"edge_bundles_root={self.root / 'bundles'}"
        wall, recap = self.playbook("deploy_model.yml", hosts, "-e", bundles, *extra)
        changed = {name: counts["changed"] > 0 for name, counts in recap.items()}
        if set(changed.values()) != {expect_changed}:
            raise RuntimeError(f"deploy_model.yml: expected changed={expect_changed} on every host, got {changed}")
        return wall

    def deploy_control_persist(self, hosts: list[NetnsHost]) -> float:
        """A full deploy with Ansible's default ControlPersist (one ssh master per host, reused by every module run
        of the run), as outside these benchmarks; the masters are ended by PID right after."""
        control_path = self.root / "cp"
        control_path.mkdir(exist_ok=True)
        ssh_args = f"-o ControlMaster=auto -o ControlPersist=60s -o ControlPath={control_path}/%C"
        try:
            return self.deploy(hosts, True, "-e", json.dumps({"ansible_ssh_args": ssh_args}))
        finally:
            self.hosts.kill(self.hosts.ssh_clients())

    def ping(self, hosts: list[NetnsHost]) -> float:
        names = ",".join(h.name for h in hosts)
        argv = [str(BIN / "ansible"), "-i", str(self.inventory), "edge", "-l", names, "-f", str(len(hosts))]
        wall, output, rc = self.ansible([*argv, "-m", "ansible.builtin.ping"])
        if rc != 0:
            raise RuntimeError(f"ping exited with {rc}: {output[-2000:]}")
        return wall

    def bare_copy(self, hosts: list[NetnsHost], artifact: Path) -> float:
        def copy(host: NetnsHost) -> None:
            target = self.node(host) / "bench-copy.bin"
            with artifact.open("rb") as source:
                self._ssh(host, f"cat > {target}", stdin=source)

        return _parallel(hosts, copy)

    def bare_push(self, hosts: list[NetnsHost], bundles: Path) -> tuple[float, float]:
        """(whole push, the slowest apply): tar the bundle over ssh, then `ssh edge-agent apply`, hosts in parallel."""
        applies: dict[str, float] = {}

        def push(host: NetnsHost) -> None:
            node = self.node(host)
            push_dir = node / "data" / "bench-push"
            tar = subprocess.Popen(["tar", "-C", str(bundles / host.name), "-cf", "-", "."], stdout=subprocess.PIPE)
            assert tar.stdout is not None
            self._ssh(host, f"mkdir -p {push_dir} && tar -C {push_dir} -xf -", stdin=tar.stdout)
            tar.stdout.close()
            if tar.wait() != 0:
                raise RuntimeError(f"tar of {bundles / host.name} failed")
            start = time.monotonic()
            agent, config = node / "opt" / "venv" / "bin" / "edge-agent", node / "etc" / "agent.yaml"
            out = self._ssh(
                host,
                f"{agent} apply --config {config} --desired {push_dir}/desired.json "
                f"--artifact-dir {push_dir}/artifacts --json",
            )
            applies[host.name] = time.monotonic() - start
            answer = json.loads(out)
            if not (answer["ok"] and answer["changed"]):
                raise RuntimeError(f"bare push to {host.name}: the agent did not apply it: {answer['reason']}")

        return _parallel(hosts, push), max(applies.values())

    def _ssh(self, host: NetnsHost, command: str, stdin: Any = subprocess.DEVNULL) -> str:
        result = subprocess.run(
            [*self.hosts.ssh_argv(host), command], stdin=stdin, capture_output=True, timeout=600, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"ssh {host.name} {command!r}: {result.returncode} {result.stderr.decode()[-1000:]}")
        return result.stdout.decode()


def _parallel(hosts: list[NetnsHost], work: Callable[[NetnsHost], None]) -> float:
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        for future in [pool.submit(work, host) for host in hosts]:
            future.result()
    return time.monotonic() - start


def measure(bench: Bench, hosts: list[NetnsHost], runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in FIGURES}
    padding = bench.size
    for run in range(runs):
        times["ping"].append(bench.ping(hosts))
        full = bench.model(padding)
        artifact = Path(full.artifact.url.removeprefix("file://"))
        times["bare copy"].append(bench.bare_copy(hosts, artifact))
        push, apply = bench.bare_push(hosts, bench.bundles(hosts, full))
        times["bare push"].append(push)
        times["bare apply"].append(apply)
        bench.bundles(hosts, bench.model(0))
        times["deploy tiny"].append(bench.deploy(hosts, expect_changed=True))
        times["deploy no-op"].append(bench.deploy(hosts, expect_changed=False))
        bench.bundles(hosts, bench.model(padding))
        times["deploy full"].append(bench.deploy(hosts, expect_changed=True))
        bench.bundles(hosts, bench.model(padding + 1))
        times["deploy full cp"].append(bench.deploy_control_persist(hosts))
        figures = ", ".join(f"{name} {values[-1]:.2f}" for name, values in times.items())
        print(f"{len(hosts)} host(s), run {run + 1}: {figures} s", flush=True)
    return times


def report(results: dict[int, dict[str, list[float]]], size_mb: float, runs: int, provision_s: float) -> None:
    med = {n: {name: statistics.median(values) for name, values in times.items()} for n, times in results.items()}
    print(f"\nAnsible push deploy, artifact {size_mb:.1f} MB, medians of {runs} run(s), seconds (wall):")
    print(f"(provision.yml of {max(results)} host(s), once: {provision_s:.1f} s)\n")
    print(
        "| hosts | "
        + " | ".join(FIGURES)
        + " | full / bare push | full - tiny | (full - tiny) / bare copy | no-op / ping | full cp / full |"
    )
    print("|---" * (len(FIGURES) + 6) + "|")
    for n, m in med.items():
        cells = " | ".join(f"{m[name]:.2f}" for name in FIGURES)
        transfer = m["deploy full"] - m["deploy tiny"]
        print(
            f"| {n} | {cells} | {m['deploy full'] / m['bare push']:.2f}x | {transfer:.2f} | "
            f"{transfer / m['bare copy']:.2f}x | {m['deploy no-op'] / m['ping']:.2f}x | "
            f"{m['deploy full cp'] / m['deploy full']:.2f}x |"
        )
    print("\nReading it: `full - tiny` is what the artifact's bytes add to a deploy; compare it with `bare copy`.")
    print("`no-op / ping` is a deploy that changes nothing against Ansible's fixed per-run cost.")
    print("`full cp` is the full deploy with ControlPersist on (Ansible's default outside these runs).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,3,10", help="comma-separated host counts (at most 10)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mb", type=float, default=20, help="artifact size of the full deploy")
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.hosts.split(",")})
    if not counts or counts[0] < 1 or counts[-1] > MAX_BENCH_HOSTS:
        parser.error(f"--hosts: counts between 1 and {MAX_BENCH_HOSTS}")
    with tempfile.TemporaryDirectory(prefix="ansible-push-bench-") as tmp:
        root = Path(tmp)
        try:
            hosts = NetnsHosts(counts[-1], root / "netns")
        except NetnsUnavailable as exc:
            print(f"skipped: {exc}")
            return 0
        try:
            signer = Signer.generate()
            dirs = {h.name: install_dirs(root / "nodes" / h.name) for h in hosts.hosts}
            common = {
                "edge_control_plane_public_key": signer.public_key_b64,
                "edge_agent_channel": "ansible",
                "edge_agent_service_manager": "supervised",
                **offline_install_vars(project_wheel(root / "wheel")),
            }
            inventory = hosts.write_inventory(root / "inventory.yml", host_vars=dirs, group_vars=common)
            bench = Bench(hosts, root, signer, inventory, size=int(args.size_mb * 1e6))
            print(f"provisioning {len(hosts.hosts)} host(s) ...", flush=True)
            provision_s, _ = bench.playbook("provision.yml", hosts.hosts)
            results = {n: measure(bench, hosts.hosts[:n], args.runs) for n in counts}
            report(results, bench.size / 1e6, args.runs, provision_s)
            leftovers = hosts.ssh_clients()
            if leftovers:
                print(f"warning: ssh processes {leftovers} outlived their runs")
            return 0
        finally:
            hosts.close()


if __name__ == "__main__":
    sys.exit(main())
