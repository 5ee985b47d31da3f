"""Service-interconnect tunnels end to end: `edgectl server`, `edgectl tunnel-gateway` and two `edge-agent run`
processes on loopback, each agent enrolled with `edge-agent enroll` and exposing a TCP echo service and its
inference API through its one outbound connection.

The operator reaches each device's services at the gateway; `edgectl devices revoke` closes one device's tunnel
within a second and keeps refusing it while the other device's tunnel keeps passing bytes; a device holding its
own valid key still gets nothing that was not allocated to it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
import yaml

from control_plane.domain.tunnels import service_socket
from tests.support import (
    ADMIN_TOKEN,
    EDGECTL,
    ControlPlaneProcess,
    Echo,
    Mosquitto,
    enroll_agent,
    enrollment_token,
    free_port,
    python_env,
    wait_for,
)

pytestmark = pytest.mark.integration

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    run_dir: Path
    host_key: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Agent:
    device_id: str
    process: subprocess.Popen[bytes]
    log: Path
    key_file: Path
    cloud_port: int


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def server(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    running = ControlPlaneProcess(mosquitto, tmp_path_factory.mktemp("tunnels") / "data")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def cloud() -> Echo:
    return Echo("cloud")


@pytest.fixture(scope="module")
def gateway(server: ControlPlaneProcess, cloud: Echo) -> Iterator[Gateway]:
    env = server.env() | {
        "EDGE_CP_TUNNEL__SERVICES": '["echo", "kserve"]',
        "EDGE_CP_TUNNEL__CLOUD_SERVICES": f'{{"registry": "127.0.0.1:{cloud.port}"}}',
    }
    common = ["--data-dir", str(server.data_dir)]
    shown = subprocess.run(
        [EDGECTL, "tunnel-gateway", *common, "--print-host-key"], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    host_key = shown.stdout.strip()
    assert host_key.startswith("ssh-ed25519 ")
    key_file = server.data_dir / "tunnel_host_key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    port = free_port()
    log = server.data_dir.parent / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [EDGECTL, "tunnel-gateway", *common, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    handle = Gateway(process, port, log, server.data_dir / "tunnels", host_key)
    wait_for(lambda: "tunnel gateway listening" in handle.output(), what="the gateway to listen")
    assert f"agents pin this host key (tunnel.host_key): {host_key}" in handle.output()
    try:
        yield handle
    finally:
        stop(process)


def start_agent(
    server: ControlPlaneProcess, mosquitto: Mosquitto, gateway: Gateway, root: Path, device_id: str
) -> Agent:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "agent.yaml"
    base = {"data_dir": str(root / "data"), "serving": {"host": "127.0.0.1", "port": free_port()}}
    config.write_text(yaml.safe_dump(base))
    with server.client() as api:
        token = enrollment_token(api, f"tunnel-{device_id}")
    written = enroll_agent(mosquitto, server.url, token, config, device_id)
    cloud_port = free_port()
    written["tunnel"] = {
        "enabled": True,
        "port": gateway.port,
        "host_key": gateway.host_key,
        "services": {"echo": f"127.0.0.1:{Echo(device_id).port}"},
        "cloud_services": {"registry": cloud_port},
    }
    config.write_text(yaml.safe_dump(written))
    log = root / "agent.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [EDGE_AGENT, "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, env=python_env()
        )
    return Agent(device_id, process, log, Path(written["device_key_file"]), cloud_port)


@pytest.fixture(scope="module")
def agents(
    server: ControlPlaneProcess, mosquitto: Mosquitto, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Agent]]:
    root = tmp_path_factory.mktemp("agents")
    started = {d: start_agent(server, mosquitto, gateway, root / d, d) for d in ("tun-a", "tun-b")}
    try:
        yield started
    finally:
        for agent in started.values():
            stop(agent.process)


def ask_unix(path: Path, line: bytes = b"hello\n") -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(line)
        return sock.makefile("rb").readline()


def ask_tcp(port: int, line: bytes = b"hello\n") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(line)
        return sock.makefile("rb").readline()


def echo_of(gateway: Gateway, device_id: str) -> Path:
    return service_socket(gateway.run_dir, device_id, "echo")


def reachable(gateway: Gateway, agent: Agent) -> bytes | None:
    if agent.process.poll() is not None:
        raise AssertionError(f"{agent.device_id} exited:\n{agent.log.read_text()[-3000:]}")
    path = echo_of(gateway, agent.device_id)
    return ask_unix(path) if path.exists() else None


def test_each_device_exposes_its_services_and_reaches_its_allowed_cloud_service(
    gateway: Gateway, agents: dict[str, Agent]
) -> None:
    for device_id, agent in agents.items():
        answer = wait_for(lambda a=agent: reachable(gateway, a), timeout=60, what=f"{device_id}'s echo via the gateway")
        assert answer == f"{device_id}: hello\n".encode()
        kserve = service_socket(gateway.run_dir, device_id, "kserve")
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(kserve)), timeout=10) as http:
            assert http.get("http://device/v2/health/live").status_code == 200
        assert wait_for(lambda a=agent: ask_tcp(a.cloud_port), what="the cloud service") == b"cloud: hello\n"


async def _hostile(gateway: Gateway, pem: bytes, server_port: int) -> dict[str, str]:
    """As tun-a, with its own valid key: what it tries against tun-b and the cloud, and the answer to each."""
    key = asyncssh.import_private_key(pem)
    seen: dict[str, str] = {}
    try:
        await asyncssh.connect(
            "127.0.0.1", gateway.port, username="tun-b", client_keys=[key], known_hosts=None, agent_path=None, config=[]
        )
        seen["log in as tun-b"] = "granted"
    except asyncssh.PermissionDenied:
        seen["log in as tun-b"] = "refused"
    b_socket = str(echo_of(gateway, "tun-b"))
    async with asyncssh.connect(
        "127.0.0.1", gateway.port, username="tun-a", client_keys=[key], known_hosts=None, agent_path=None, config=[]
    ) as conn:
        attempts: dict[str, Any] = {
            "bind tun-b's name": lambda: conn.forward_remote_port("tun-b", 0, "127.0.0.1", 9),
            "bind tun-b's socket path": lambda: conn.forward_remote_path(b_socket, "/tmp/none"),
            "open tun-b's socket path": lambda: conn.open_unix_connection(b_socket),
            "reach the control plane's API (not allowed)": lambda: conn.open_connection("127.0.0.1", server_port),
            "reach an unlisted cloud service": lambda: conn.open_connection("metadata", 0),
        }
        for name, attempt in attempts.items():
            try:
                await attempt()
                seen[name] = "granted"
            except (asyncssh.ChannelListenError, asyncssh.ChannelOpenError):
                seen[name] = "refused"
    return seen


def test_a_device_with_a_valid_key_gets_nothing_it_was_not_allocated(
    server: ControlPlaneProcess, gateway: Gateway, agents: dict[str, Agent]
) -> None:
    for agent in agents.values():
        wait_for(lambda a=agent: reachable(gateway, a), timeout=60, what=f"{agent.device_id}'s echo")
    seen = asyncio.run(_hostile(gateway, agents["tun-a"].key_file.read_bytes(), server.port))
    assert seen == dict.fromkeys(seen, "refused"), seen
    assert ask_unix(echo_of(gateway, "tun-b")) == b"tun-b: hello\n"  # tun-b's service is still tun-b's


def test_revoking_one_device_closes_its_tunnel_within_a_second_and_the_other_keeps_passing_bytes(
    server: ControlPlaneProcess, gateway: Gateway, agents: dict[str, Agent]
) -> None:
    a, b = agents["tun-a"], agents["tun-b"]
    for agent in (a, b):
        wait_for(lambda g=agent: reachable(gateway, g), timeout=60, what=f"{agent.device_id}'s echo")
    revoked = subprocess.run(
        [EDGECTL, "--url", server.url, "--token", ADMIN_TOKEN, "devices", "revoke", "tun-a"],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr
    at = time.monotonic()
    wait_for(lambda: not echo_of(gateway, "tun-a").exists(), timeout=1.0, what="tun-a's tunnel to close")
    assert time.monotonic() - at < 1.0
    with pytest.raises(OSError):
        ask_unix(echo_of(gateway, "tun-a"))
    assert ask_unix(echo_of(gateway, "tun-b")) == b"tun-b: hello\n"

    refusals = "tunnel refused for tun-a: device access revoked"
    wait_for(lambda: gateway.output().count(refusals) >= 2, timeout=30, what="tun-a's reconnects to be refused")
    assert not echo_of(gateway, "tun-a").exists()
    assert ask_unix(echo_of(gateway, "tun-b"), b"still here\n") == b"tun-b: still here\n"
    assert ask_tcp(b.cloud_port) == b"cloud: hello\n"
    with pytest.raises(OSError):
        ask_tcp(a.cloud_port)  # the revoked device's applications no longer reach the cloud either
