"""Values of the Ansible channel: the playbooks the control plane may run, a run and its per-host results.

Pure values and decisions only: the runner (ansible-runner) lives in `control_plane.adapters.playbook_runner`,
the queue in `control_plane.services.playbook_runs`. Nothing here touches a file, a process or the clock.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class PlaybookName(str, Enum):
    """The playbooks in `playbooks/` the control plane runs; no other path is ever run (no operator-given file)."""

    PROVISION = "provision"
    DEPLOY_MODEL = "deploy_model"
    FACTS = "facts"
    UPGRADE_AGENT = "upgrade_agent"
    DECOMMISSION = "decommission"

    @property
    def calls_control_plane(self) -> bool:
        """Whether the playbook calls the control plane's REST API from the controller (enroll, forget)."""
        return self in (PlaybookName.PROVISION, PlaybookName.DECOMMISSION)

    @property
    def file_name(self) -> str:
        return f"{self.value}.yml"


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class HostStatus(str, Enum):
    PENDING = "pending"  # not reached yet (or the run ended before it)
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"

    @property
    def succeeded(self) -> bool:
        return self in (HostStatus.OK, HostStatus.CHANGED, HostStatus.SKIPPED)


# The fact a playbook sets on a host (`ansible.builtin.set_fact: edge_result: {...}`) to hand a result back to
# the control plane. deploy_model.yml sets it to `edge-agent apply --json`'s output ({ok, changed, generation,
# reason, reported}); facts.yml to {"hardware": <edge-agent facts --json>}.
RESULT_FACT = "edge_result"


TUNNEL = "tunnel"  # an enrolled connection: ssh through the device's tunnel to its exposed `ssh` service


@dataclass(frozen=True)
class AnsibleConnection:
    """How Ansible reaches an enrolled device (its inventory variables)."""

    host: str | None = None  # ansible_host; None: the device id is the host name
    port: int | None = None  # ansible_port
    user: str | None = None  # ansible_user
    connection: str = "ssh"  # ansible_connection: ssh | local | tunnel (ssh through the device's tunnel)
    python: str | None = None  # ansible_python_interpreter

    def inventory_vars(self, proxy_command: str | None = None) -> dict[str, Any]:
        """The inventory variables. A `tunnel` connection is ssh whose transport is `proxy_command` (the device's
        address and port play no part: the tunnel leads to its `ssh` service); without one it cannot be reached."""
        if self.connection == TUNNEL:
            if proxy_command is None:
                raise ValueError("a tunnel connection needs the command that reaches the device's ssh service")
            return self._common({"ansible_connection": "ssh", "ansible_ssh_common_args": proxy_args(proxy_command)})
        return self._common(
            {"ansible_connection": self.connection, "ansible_host": self.host, "ansible_port": self.port}
        )

    def _common(self, out: dict[str, Any]) -> dict[str, Any]:
        out |= {"ansible_user": self.user, "ansible_python_interpreter": self.python}
        return {key: value for key, value in out.items() if value is not None}


def proxy_args(command: str) -> str:
    """ssh arguments that make `command` (already quoted for a shell) the transport: what ansible's
    `ansible_ssh_common_args` carries; ansible splits them like a shell, so the option is one quoted word."""
    return "-o " + shlex.quote(f"ProxyCommand={command}")


@dataclass(frozen=True)
class HostResult:
    host: str  # the device id
    status: HostStatus
    result: Mapping[str, Any] | None = None  # the host's `edge_result` fact, if the playbook set one
    message: str | None = None  # the failing task's message (failed / unreachable)


@dataclass(frozen=True)
class PlaybookRunRequest:
    playbook: PlaybookName
    selector: str | None = None  # devices on the Ansible channel that match (k=v,...,gpu_class=C)
    hosts: tuple[str, ...] = ()  # or these device ids
    extra_vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlaybookRun:
    id: str
    playbook: PlaybookName
    status: RunStatus
    hosts: tuple[HostResult, ...]
    extra_vars: Mapping[str, Any]
    created_at: datetime
    purpose: str | None = None  # e.g. "rollout:<id>" when the rollout executor started it
    selector: str | None = None  # the request's selector, when it named no hosts
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rc: int | None = None
    error: str | None = None

    def host(self, device_id: str) -> HostResult | None:
        return next((h for h in self.hosts if h.host == device_id), None)


@dataclass(frozen=True)
class RunEvent:
    """One ansible-runner event, trimmed to what an operator reads."""

    run_id: str
    seq: int
    at: datetime
    kind: str  # the runner's event name: playbook_on_task_start, runner_on_ok, runner_on_failed, ...
    host: str | None
    task: str | None
    changed: bool
    failed: bool
    message: str  # one line: "dev-1: ok: Apply the desired state"
    id: int = 0  # the stored record's id (the SSE event id); 0 until stored


@dataclass(frozen=True)
class PlaybookJob:
    """What the runner needs for one run: the playbook, each host's inventory variables, the extra vars
    (unredacted: they live only in memory and, while the run goes, in a 0600 file the runner then removes)."""

    run_id: str
    playbook: PlaybookName
    hosts: Mapping[str, Mapping[str, Any]]  # device id -> inventory variables (connection + per-host vars)
    extra_vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlaybookOutcome:
    """How a run ended, as the runner saw it."""

    status: RunStatus  # succeeded, failed or cancelled
    hosts: tuple[HostResult, ...]
    rc: int | None = None
    error: str | None = None  # why the run failed as a whole (timeout, no playbook, runner error)
