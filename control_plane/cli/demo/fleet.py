"""The demo's world on disk: the workdir, the control plane's settings file and each agent's agent.yaml.

Pure file writing from values; it starts nothing. The three demo devices and their labels are defined here.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from control_plane.cli.client import CliError

MARKER = ".edgectl-demo"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class DemoDevice:
    device_id: str
    labels: dict[str, str]
    serving_port: int = 0


DEMO_DEVICES = (
    DemoDevice("dev-1", {"site": "factory-a"}),
    DemoDevice("dev-2", {"site": "factory-a"}),
    DemoDevice("dev-3", {"site": "store-b"}),
)


@dataclass(frozen=True)
class Ports:
    broker: int
    api: int
    serving: dict[str, int] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def allocate_ports(devices: tuple[DemoDevice, ...]) -> Ports:
    return Ports(broker=free_port(), api=free_port(), serving={d.device_id: free_port() for d in devices})


def prepare_workdir(workdir: Path) -> Path:
    """Create or wipe the workdir; refuse to wipe a non-empty folder the demo did not make."""
    workdir = workdir.resolve()
    if workdir.exists():
        if any(workdir.iterdir()) and not (workdir / MARKER).exists():
            raise CliError(f"{workdir} exists and was not made by `edgectl demo`; choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("made by `edgectl demo`; wiped at the start of every run\n")
    return workdir


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def control_plane_config(workdir: Path, ports: Ports, code_dir: Path) -> dict[str, Any]:
    """The demo server's settings; `code_dir` is its one training code root (the demo model's folder)."""
    return {
        "host": LOOPBACK,
        "port": ports.api,
        "data_dir": str(workdir / "control-plane"),
        "mqtt": {"host": LOOPBACK, "port": ports.broker, "protocol": "auto", "client_id": "demo-control-plane"},
        "device_offline_after_s": 30,
        "training": {"code_dirs": [str(code_dir)]},
    }


def agent_config(workdir: Path, device: DemoDevice, ports: Ports) -> dict[str, Any]:
    """The agent's settings before it enrolls: `edge-agent enroll` adds its identity (the pinned key, its broker
    credentials, its artifact credential). The labels here are only what the agent reports; the control plane's
    come from the enrollment token (`enrollment_tokens`)."""
    return {
        "device_id": device.device_id,
        "labels": dict(device.labels),
        "data_dir": str(workdir / "agents" / device.device_id),
        "mqtt": {"host": LOOPBACK, "port": ports.broker, "protocol": "auto"},
        "serving": {"host": LOOPBACK, "port": ports.serving[device.device_id]},
        "telemetry_interval_s": 5,
    }


def enrollment_tokens(devices: tuple[DemoDevice, ...]) -> list[tuple[dict[str, Any], list[DemoDevice]]]:
    """One auto-approving enrollment token per label set (a site), good for its devices only and for ten minutes,
    with the devices it enrolls."""
    groups: dict[tuple[tuple[str, str], ...], list[DemoDevice]] = {}
    for device in devices:
        groups.setdefault(tuple(sorted(device.labels.items())), []).append(device)
    return [
        (
            {
                "name": "demo-" + "-".join(v for _, v in labels),
                "labels": dict(labels),
                "auto_approve": True,
                "max_uses": len(members),
                "expires_in_s": 600,
            },
            members,
        )
        for labels, members in groups.items()
    ]
