"""Service-interconnect tunnels end to end: `edgectl server`, `edgectl tunnel-gateway` and two `edge-agent run`
processes on loopback, each agent enrolled with `edge-agent enroll` and exposing a TCP echo service and its
inference API through its one outbound connection.

The operator reaches each device's services at the gateway; `edgectl devices revoke` closes one device's tunnel
within a second and keeps refusing it while the other device's tunnel keeps passing bytes; a device holding its
own valid key still gets nothing that was not allocated to it.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from control_plane.domain.tunnels import service_socket
from tests.integration.tunnel_processes import (
    Agent,
    Gateway,
    ask_tcp,
    ask_unix,
    start_agent,
    start_gateway,
    stop,
    tunnel_env,
)
from tests.support import ADMIN_TOKEN, EDGECTL, ControlPlaneProcess, Echo, Mosquitto, python_env, wait_for

pytestmark = pytest.mark.integration


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
    handle = start_gateway(server, tunnel_env(["echo", "kserve"], {"registry": f"127.0.0.1:{cloud.port}"}))
    try:
        assert handle.host_key.startswith("ssh-ed25519 ")
        assert oct((server.data_dir / "tunnel_host_key").stat().st_mode & 0o777) == "0o600"
        assert f"agents pin this host key (tunnel.host_key): {handle.host_key}" in handle.output()
        yield handle
    finally:
        stop(handle.process)


@pytest.fixture(scope="module")
def agents(
    server: ControlPlaneProcess, mosquitto: Mosquitto, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Agent]]:
    root = tmp_path_factory.mktemp("agents")
    started = {
        d: start_agent(server, mosquitto, gateway, root / d, d, {"echo": f"127.0.0.1:{Echo(d).port}"})
        for d in ("tun-a", "tun-b")
    }
    try:
        yield started
    finally:
        for agent in started.values():
            stop(agent.process)


def echo_of(gateway: Gateway, device_id: str) -> Path:
    return service_socket(gateway.run_dir, device_id, "echo")


def reachable(gateway: Gateway, agent: Agent) -> bytes | None:
    agent.alive()
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
            # the tunnel may be up before the agent's inference API listens: poll, never assume the order
            live = wait_for(lambda h=http: h.get("http://device/v2/health/live"), what=f"{device_id}'s kserve")
            assert live.status_code == 200
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
