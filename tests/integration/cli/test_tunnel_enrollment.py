"""The tunnel as an enrolled device lives with it, with real processes on loopback: `edgectl server` announcing
its gateway (`tunnel.public_host`), `edgectl tunnel-gateway`, Mosquitto, and an `edge-agent` enrolled with
`edge-agent enroll` that was never given the gateway's host key by hand.

What is checked is what an operator or a device notices: the key enrollment pinned is the one the agent's tunnel
insists on (a gateway with another key gets nothing from it); the link's health (connected since, round trip,
bytes each way) reaches `edgectl devices show` over MQTT; a gateway restart, a SIGKILLed agent and a service that
is down on the device leave nothing stuck: the agent comes back, the gateway's socket files go with the killed
connection and the next connection works at once, a connection to a dead service is closed at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from control_plane.domain.tunnels import service_socket
from edge_agent.protocol import HardwareFacts, Signer
from edge_agent.protocol.enrollment import ACCEPTS_TUNNEL, ENROLL_ACCEPTS_HEADER, ENROLL_PATH, signed_request
from tests.support import (
    EDGE_AGENT,
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

DEVICE = "tun-e"
SERVICES = '["echo", "kserve", "down"]'


@dataclass
class Gateway:
    """One `edgectl tunnel-gateway` process (the real one, or an impostor with a host key of its own)."""

    process: subprocess.Popen[bytes]
    log: Path
    run_dir: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.process)


@dataclass
class Deployment:
    server: ControlPlaneProcess
    gateway_port: int
    root: Path
    gateway: Gateway | None = None

    def start_gateway(self, name: str = "gateway", **env: str) -> Gateway:
        log = self.root / f"{name}.log"
        run_dir = Path(env.get("EDGE_CP_TUNNEL__RUN_DIR", self.server.data_dir / "tunnels"))
        argv = [EDGECTL, "tunnel-gateway", "--data-dir", str(self.server.data_dir), "--port", str(self.gateway_port)]
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.server.env() | env)
        started = Gateway(process, log, run_dir)
        try:
            wait_for(
                lambda: "tunnel gateway listening" in started.output() or _exited(process),
                timeout=60,
                what=f"{name} up",
            )
        except BaseException:
            started.stop()  # not handed to anyone who would stop it: it would outlive the session
            raise
        return started


@dataclass
class Agent:
    config: Path
    log: Path
    echo: Echo
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            argv = [EDGE_AGENT, "run", "--config", str(self.config)]
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=python_env())

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _exited(process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"exited with {process.returncode}")
    return False


@pytest.fixture(scope="module")
def deployment(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("tunnel-enroll")
    gateway_port = free_port()
    announced = {
        "EDGE_CP_TUNNEL__PUBLIC_HOST": "127.0.0.1",
        "EDGE_CP_TUNNEL__PUBLIC_PORT": str(gateway_port),
        "EDGE_CP_TUNNEL__SERVICES": SERVICES,
    }
    server = ControlPlaneProcess(mosquitto, root / "data", extra_env=announced)
    server.start()
    deployment = Deployment(server, gateway_port, root)
    try:
        deployment.gateway = deployment.start_gateway()
        yield deployment
    finally:
        if deployment.gateway is not None:
            deployment.gateway.stop()
        server.stop()


@pytest.fixture(scope="module")
def agent(deployment: Deployment, mosquitto: Mosquitto) -> Iterator[Agent]:
    home = deployment.root / "agent"
    home.mkdir()
    config = home / "agent.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(home / "data"), "serving": {"port": free_port()}}))
    with deployment.server.client() as api:
        token = enrollment_token(api, "tunnel-enroll")
    written = enroll_agent(mosquitto, deployment.server.url, token, config, DEVICE)
    echo = Echo(DEVICE)
    written["tunnel"] = written.get("tunnel", {}) | {
        "enabled": True,
        "services": {"echo": f"127.0.0.1:{echo.port}", "down": f"127.0.0.1:{free_port()}"},  # nothing on "down"
        "health_interval_s": 1,
    }
    config.write_text(yaml.safe_dump(written))
    running = Agent(config, home / "agent.log", echo)
    running.start()
    try:
        yield running
    finally:
        stop(running.process)


def ask_unix(path: Path, line: bytes = b"hello\n") -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(line)
        return sock.makefile("rb").readline()


def ended(sock: socket.socket) -> bool:
    """The other end closed the connection (an end of file, or a reset when what was sent was never read)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def echo_at(deployment: Deployment) -> Path:
    return service_socket(deployment.server.data_dir / "tunnels", DEVICE, "echo")


def reachable(deployment: Deployment, agent: Agent) -> bytes | None:
    if agent.process is not None and agent.process.poll() is not None:
        raise AssertionError(f"the agent exited:\n{agent.output()[-3000:]}")
    path = echo_at(deployment)
    return ask_unix(path) if path.exists() else None


def reported_tunnel(deployment: Deployment) -> dict[str, Any]:
    with deployment.server.client() as api:
        device = api.get(f"/v1/devices/{DEVICE}")
    assert device.status_code == 200, device.text
    tunnel: dict[str, Any] = (device.json().get("reported") or {}).get("tunnel") or {}
    return tunnel


def edgectl(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [EDGECTL, "--url", deployment.server.url, *args]
    return subprocess.run(argv, env=python_env(), capture_output=True, text=True, timeout=60, check=False)


def identity_answer(deployment: Deployment, headers: dict[str, str]) -> dict[str, Any]:
    """An enrollment as any HTTP client sends it, with or without saying it reads the gateway."""
    with deployment.server.client() as api:
        token = enrollment_token(api, f"raw-{len(headers)}")
    hardware = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")
    request = signed_request(Signer.generate(), hardware, datetime.now(UTC), f"raw-{len(headers)}")
    sent = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers}
    url = deployment.server.url + ENROLL_PATH
    answer = httpx.post(url, content=request.model_dump_json(), headers=sent, timeout=30)
    assert answer.status_code == 200, answer.text
    identity: dict[str, Any] = answer.json()["identity"]
    return identity


def test_enrollment_pins_the_gateway_and_the_links_health_reaches_devices_show(
    deployment: Deployment, agent: Agent
) -> None:
    shown = edgectl(deployment, "tunnel-gateway", "--data-dir", str(deployment.server.data_dir), "--print-host-key")
    host_key = shown.stdout.strip()
    config = yaml.safe_load(agent.config.read_text())
    assert config["tunnel"]["gateway"] == {"host": "127.0.0.1", "port": deployment.gateway_port, "host_key": host_key}
    assert "host_key" not in config["tunnel"]  # nothing copied by hand
    assert "tunnel" not in identity_answer(deployment, {})  # an older agent is not handed a field it would refuse
    assert identity_answer(deployment, {ENROLL_ACCEPTS_HEADER: ACCEPTS_TUNNEL})["tunnel"]["host_key"] == host_key

    assert wait_for(lambda: reachable(deployment, agent), timeout=60, what="the echo via the gateway") == (
        f"{DEVICE}: hello\n".encode()
    )
    sent, answered = b"through the tunnel\n", f"{DEVICE}: through the tunnel\n".encode()
    assert ask_unix(echo_at(deployment), sent) == answered
    health = wait_for(
        lambda: (t := reported_tunnel(deployment)).get("bytes_out", 0) >= len(answered) + len(b"hello\n") + 7 and t,
        timeout=30,
        what="the link's health with the bytes in the reported state",
    )
    assert health["connected"] and health["connected_since"] and 0 < health["rtt_ms"] < 1000
    assert health["bytes_in"] >= len(sent) and sorted(health["exposed"]) == ["down", "echo", "kserve"]

    show = edgectl(deployment, "devices", "show", DEVICE)
    assert show.returncode == 0, show.stderr
    text = " ".join(show.stdout.split())
    for fragment in ("tunnel (as the device reported it)", "connected │ yes, since", " ms", " B / ", "down, echo"):
        assert fragment in text, text


def test_a_service_that_is_down_on_the_device_closes_the_connection_at_once(
    deployment: Deployment, agent: Agent
) -> None:
    wait_for(lambda: reachable(deployment, agent), timeout=60, what="the tunnel")
    down = service_socket(deployment.server.data_dir / "tunnels", DEVICE, "down")
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(down))
        sock.sendall(b"anyone?\n")
        assert ended(sock)
    assert time.monotonic() - started < 2.0
    assert ask_unix(echo_at(deployment)) == f"{DEVICE}: hello\n".encode()  # the tunnel itself stays up
    assert "down (127.0.0.1" in agent.output() and "is not answering" in agent.output()


def test_a_gateway_with_another_key_gets_nothing_and_the_real_one_is_rejoined_after_its_restart(
    deployment: Deployment, agent: Agent
) -> None:
    wait_for(lambda: reachable(deployment, agent), timeout=60, what="the tunnel")
    assert deployment.gateway is not None
    deployment.gateway.stop()
    # short and unique (socket paths fit 108 bytes), removed even when the impostor does not start
    with tempfile.TemporaryDirectory(prefix="imp-", dir="/tmp") as name:
        impostor_dir = Path(name)
        impostor = deployment.start_gateway(
            "impostor",
            EDGE_CP_TUNNEL__HOST_KEY_FILE=str(deployment.root / "impostor_host_key"),
            EDGE_CP_TUNNEL__RUN_DIR=str(impostor_dir),
        )
        try:
            refusal = "host key is not the pinned one"
            wait_for(lambda: refusal in agent.output(), timeout=60, what="the agent to refuse the impostor")
            dropped = wait_for(
                lambda: (t := reported_tunnel(deployment)).get("connected") is False and t,
                timeout=30,
                what="the dropped link in the reported state",
            )
            assert dropped["last_error"]  # the gateway closed the connection, or the impostor's key was refused
            assert f"tunnel of {DEVICE} is open" not in impostor.output()
            assert list(impostor_dir.glob("*.sock")) == []
        finally:
            impostor.stop()
    deployment.gateway = deployment.start_gateway()
    assert wait_for(lambda: reachable(deployment, agent), timeout=90, what="the agent back at the real gateway") == (
        f"{DEVICE}: hello\n".encode()
    )


def test_a_killed_agent_leaves_no_socket_at_the_gateway_and_its_next_connection_works_at_once(
    deployment: Deployment, agent: Agent
) -> None:
    wait_for(lambda: reachable(deployment, agent), timeout=60, what="the tunnel")
    sockets = deployment.server.data_dir / "tunnels"
    assert {p.name for p in sockets.glob(f"{DEVICE}.*.sock")} == {f"{DEVICE}.{s}.sock" for s in json.loads(SERVICES)}
    assert agent.process is not None
    os.kill(agent.process.pid, signal.SIGKILL)
    agent.process.wait(timeout=10)
    killed = time.monotonic()
    wait_for(lambda: not list(sockets.glob(f"{DEVICE}.*.sock")), timeout=5, what="the gateway to reap the sockets")
    assert time.monotonic() - killed < 5
    with pytest.raises(OSError):
        ask_unix(echo_at(deployment))

    agent.start()
    assert wait_for(lambda: reachable(deployment, agent), timeout=60, what="the restarted agent's tunnel") == (
        f"{DEVICE}: hello\n".encode()
    )
    assert deployment.gateway is not None
    assert "replaces the previous one" not in deployment.gateway.output()  # nothing of the killed one was left
