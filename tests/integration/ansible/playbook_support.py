"""Helpers for running the playbooks in `playbooks/` for real: `ansible-playbook` subprocesses with the JSON callback,
inventories of local-connection "nodes" (each with its own prefix, config, data and port), deploy bundles made from
signed desired states, and the project's wheel (built once per test process).

Nodes install the wheel with `--no-deps --no-index` and see this virtualenv's site-packages through the role's
`edge_agent_site_dirs` .pth: no network, and a provision takes seconds. Processes the playbooks start are ended
only by the PIDs found under a node's own prefix.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_agent.protocol import DesiredState, SignedDesiredState
from tests.support import free_port, python_env, wait_for

REPO = Path(__file__).resolve().parents[3]
PLAYBOOKS = REPO / "playbooks"
ROLE = PLAYBOOKS / "roles" / "edge_agent"
BIN = Path(sys.executable).parent
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
# The interpreter behind this virtualenv: nodes build their own virtualenv from it (same ABI as SITE_PACKAGES).
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)

_wheel: dict[str, Path] = {}


def project_wheel(workdir: Path) -> Path:
    """The project's wheel, built from a copy of the sources (the checkout stays clean) once per process."""
    if "wheel" not in _wheel:
        src = workdir / "src"
        src.mkdir(parents=True)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, src / name)
        for package in ("control_plane", "edge_agent", "model_builds"):
            shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        dist = workdir / "dist"
        subprocess.run(
            [str(BIN / "pip"), "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), src],
            check=True,
            capture_output=True,
        )
        (_wheel["wheel"],) = dist.glob("edge_orchestrator-*.whl")
    return _wheel["wheel"]


def wheel_with_version(wheel: Path, version: str, dest: Path) -> Path:
    """A copy of `wheel` that says it is `version` (what an upgrade installs): dist-info, METADATA and RECORD."""
    name, old = wheel.name.split("-")[:2]
    target = dest / wheel.name.replace(f"-{old}-", f"-{version}-")
    dest.mkdir(parents=True, exist_ok=True)
    old_info, new_info = f"{name}-{old}.dist-info/", f"{name}-{version}.dist-info/"
    records = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            path = item.filename.replace(old_info, new_info)
            if path == f"{new_info}RECORD":
                continue
            data = src.read(item)
            if path == f"{new_info}METADATA":
                data = data.replace(f"\nVersion: {old}\n".encode(), f"\nVersion: {version}\n".encode())
            out.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{path},sha256={digest},{len(data)}")
        out.writestr(f"{new_info}RECORD", "\n".join([*records, f"{new_info}RECORD,,"]) + "\n")
    return target


def ansible_env() -> dict[str, str]:
    """This virtualenv first on PATH and the playbooks' ansible.cfg (for ansible-inventory and friends)."""
    return python_env() | {"ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


HOST_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")


@dataclass
class PlaybookRun:
    """One finished playbook run through ansible-runner (as the control plane runs them): status, stats, events."""

    status: str
    rc: int
    stdout: str
    stats: dict[str, dict[str, int]]
    events: list[dict[str, Any]]

    def changed(self, host: str) -> int:
        return int(self.stats.get("changed", {}).get(host, 0))

    def failed(self, host: str) -> bool:
        return bool(self.stats.get("failures", {}).get(host) or self.stats.get("dark", {}).get(host))

    def ran_on(self, host: str) -> bool:
        return any(host in (self.stats.get(key) or {}) for key in ("ok", "failures", "dark", "skipped"))

    def results(self, host: str) -> list[tuple[str, dict[str, Any]]]:
        """(task name, result) of every task that ran on `host`, in order."""
        return [
            (e["event_data"].get("task", ""), e["event_data"].get("res", {}))
            for e in self.events
            if e.get("event") in HOST_EVENTS and e.get("event_data", {}).get("host") == host
        ]

    def fact(self, host: str, name: str) -> Any:
        """The last value `set_fact` gave fact `name` on `host` (None if never set)."""
        value = None
        for _, result in self.results(host):
            facts = result.get("ansible_facts") or {}
            if name in facts:
                value = facts[name]
        return value

    def failure_messages(self, host: str) -> list[str]:
        return [
            str(e["event_data"].get("res", {}).get("msg", ""))
            for e in self.events
            if e.get("event") == "runner_on_failed"
            and e["event_data"].get("host") == host
            and not e["event_data"].get("ignore_errors")
        ]

    def changed_tasks(self, host: str) -> list[str]:
        return [name for name, r in self.results(host) if r.get("changed")]

    def explain(self) -> str:
        return f"status {self.status} rc {self.rc}\nstats: {self.stats}\n{self.stdout[-8000:]}"


def run_playbook(
    playbook: str,
    inventory: Path,
    *,
    extra_vars: Mapping[str, Any] | None = None,
    check: bool = False,
    limit: str | None = None,
    timeout: int = 300,
) -> PlaybookRun:
    """Run `playbooks/{playbook}` on `inventory` with ansible-runner; returns when it has finished."""
    import ansible_runner

    with tempfile.TemporaryDirectory(prefix="runner-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(PLAYBOOKS),
            playbook=playbook,
            inventory=str(inventory),
            extravars=dict(extra_vars or {}),
            cmdline="--check" if check else None,
            limit=limit,
            envvars={"PATH": python_env()["PATH"], "ANSIBLE_NOCOLOR": "1"},
            timeout=timeout,
            quiet=True,
        )
        stdout = runner.stdout.read()
        return PlaybookRun(runner.status, runner.rc, stdout, runner.stats or {}, list(runner.events))


def install_dirs(root: Path) -> dict[str, str]:
    """The role variables that put one node's agent under `root`: opt/ (prefix), etc/ (config), data/."""
    return {
        "edge_agent_prefix": str(root / "opt"),
        "edge_agent_config_dir": str(root / "etc"),
        "edge_agent_data_dir": str(root / "data"),
    }


@dataclass
class LocalNode:
    """An "edge node" reached with ansible_connection=local: its own directories under `root` and its own port."""

    name: str
    root: Path
    port: int = field(default_factory=free_port)

    @property
    def prefix(self) -> Path:
        return self.root / "opt"

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def fact_path(self) -> Path:
        return self.root / "facts.d"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "agent.yaml"

    @property
    def agent(self) -> Path:
        return self.prefix / "venv" / "bin" / "edge-agent"

    @property
    def pidfile(self) -> Path:
        return self.prefix / "run" / "supervisor.pid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hostvars(self) -> dict[str, Any]:
        return {
            **install_dirs(self.root),
            "edge_agent_fact_path": str(self.fact_path),
            "edge_agent_serving_port": self.port,
        }

    def supervisor_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def agent_pid(self) -> int | None:
        """The `edge-agent run` process under this node's supervisor."""
        supervisor = self.supervisor_pid()
        children = children_of(supervisor) if supervisor else []
        return children[0] if children else None

    def stop(self) -> None:
        """Teardown: end this node's supervisor and agent by PID, whatever state a failed test left them in."""
        supervisor = self.supervisor_pid()
        if supervisor is None:
            return
        pids = [supervisor, *children_of(supervisor)]
        os.kill(supervisor, signal.SIGTERM)
        try:
            wait_for(lambda: not any(alive(p) for p in pids), timeout=20, what=f"{self.name}'s agent to stop")
        except AssertionError:
            for pid in pids:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def children_of(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def write_inventory(path: Path, nodes: Iterable[LocalNode], **common: Any) -> Path:
    """A YAML inventory of `nodes` on the local connection; `common` becomes `all.vars`."""
    inventory = {
        "all": {
            "hosts": {node.name: node.hostvars() for node in nodes},
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **common},
        }
    }
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def offline_install_vars(wheel: Path) -> dict[str, Any]:
    """Role variables that install `wheel` without network: the dependencies come from this virtualenv."""
    return {
        "edge_agent_wheel": str(wheel),
        "edge_agent_pip_extra_args": "--no-deps --no-index",
        "edge_agent_python": BASE_PYTHON,
        "edge_agent_site_dirs": [SITE_PACKAGES],
    }


def write_bundle(bundle_dir: Path, signed: SignedDesiredState, files: Iterable[Path] = ()) -> Path:
    """A deploy bundle (`desired.json`, `artifacts/<sha256>`) as deploy_model.yml expects in `edge_bundle_dir`.

    Artifacts whose URL is a file:// URL are copied from there; pass others in `files`.
    """
    artifacts = bundle_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (bundle_dir / "desired.json").write_text(signed.model_dump_json())
    document = DesiredState.model_validate_json(signed.document)
    sources = list(files)
    refs = document.artifact_refs()
    sources += [Path(ref.url.removeprefix("file://")) for ref in refs if ref.url.startswith("file://")]
    for source in sources:
        data = source.read_bytes()
        (artifacts / hashlib.sha256(data).hexdigest()).write_bytes(data)
    return bundle_dir
