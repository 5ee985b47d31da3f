"""The cloud side of the tunnel benchmark: `edgectl server` and `edgectl tunnel-gateway` as real processes on one
data dir, and devices enrolled through `POST /v1/enroll` with their own keys (the agent's enrollment client).

The server's MQTT link is left unconnected (nothing listens on its port): tunnels do not use MQTT. Every process
started here is stopped by its PID on the way out.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx

from edge_agent.adapters.enrollment_client import EnrollmentClient
from edge_agent.protocol import HardwareFacts, Signer
from edge_agent.protocol.enrollment import EnrollmentStatus, signed_request
from tests.support import ADMIN_HEADERS, ADMIN_TOKEN, EDGECTL, free_port, python_env, wait_for

HARDWARE = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")
T = TypeVar("T")


@dataclass
class Cloud:
    data_dir: Path
    url: str
    gateway: subprocess.Popen[bytes]
    gateway_port: int
    host_key: str

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "tunnels"


def _process(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _once_up(process: subprocess.Popen[bytes], log: Path, probe: Callable[[], T | None], what: str) -> T:
    """What `probe` answers once `process` is up; its log's tail at once if it exits first."""

    def check() -> T | None:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        return probe()

    return wait_for(check, timeout=90, what=what)


@contextmanager
def cloud(root: Path) -> Iterator[Cloud]:
    data_dir = root / "data"
    env = python_env() | {
        "EDGE_CP_BOOTSTRAP_TOKEN": ADMIN_TOKEN,
        "EDGE_CP_MQTT__HOST": "127.0.0.1",
        "EDGE_CP_MQTT__PORT": str(free_port()),  # nothing listens: the tunnels do not use MQTT
        "EDGE_CP_TUNNEL__SERVICES": '["kserve", "bulk"]',
    }
    port, gateway_port = free_port(), free_port()
    server_log, gateway_log = root / "server.log", root / "gateway.log"
    server_argv = [EDGECTL, "server", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    server = _process(server_argv, server_log, env)
    gateway: subprocess.Popen[bytes] | None = None
    try:
        url = f"http://127.0.0.1:{port}"
        _once_up(server, server_log, lambda: httpx.get(f"{url}/healthz", timeout=2).status_code, "edgectl server")
        argv = [EDGECTL, "tunnel-gateway", "--data-dir", str(data_dir), "--port", str(gateway_port)]
        gateway = _process(argv, gateway_log, env)
        pin = re.compile(r"tunnel\.host_key\): (ssh-ed25519 \S+)")
        found = _once_up(gateway, gateway_log, lambda: pin.search(gateway_log.read_text()), "the tunnel gateway")
        yield Cloud(data_dir, url, gateway, gateway_port, found.group(1))
    finally:
        if gateway is not None:
            _stop(gateway)
        _stop(server)


def enroll(cloud: Cloud, device_ids: list[str], keys_dir: Path) -> dict[str, Path]:
    """Each device makes its key and asks `POST /v1/enroll` with an auto-approving token, as `edge-agent enroll`."""
    body = {"name": "tunnel-bench", "labels": {}, "auto_approve": True, "max_uses": len(device_ids)}
    answer = httpx.post(f"{cloud.url}/v1/enrollment-tokens", json=body, headers=ADMIN_HEADERS, timeout=30)
    answer.raise_for_status()
    token = answer.json()["token"]
    client = EnrollmentClient(cloud.url)
    keys_dir.mkdir(mode=0o700)

    def one(device_id: str) -> Path:
        key = Signer.generate()
        got = client.ask(signed_request(key, HARDWARE, datetime.now(UTC), device_id), token)
        if got.status is not EnrollmentStatus.APPROVED:
            raise RuntimeError(f"{device_id} not enrolled: {got.status.value} {got.message}")
        path = keys_dir / f"{device_id}.pem"
        path.write_bytes(key.to_pem())
        path.chmod(0o600)
        return path

    try:
        with ThreadPoolExecutor(4) as pool:
            return dict(zip(device_ids, pool.map(one, device_ids), strict=True))
    finally:
        client.close()
