"""The tunnel gateway and the agent's tunnel link, both real asyncssh on loopback, in one process.

The control plane's records are a dictionary here (`Records`, standing in for the database the gateway reads; the
process test in tests/integration/cli/test_tunnels.py uses the real one). What is checked is what a device and an
operator notice: bytes through a device's exposed service, a revoked device's tunnel closing while another's keeps
passing bytes, a rotated key keeping the device reachable, what a hostile device does NOT get, the link's round
trip and bytes each way, and nothing left stuck: a local service that is down, a cloud port used while the tunnel is
down, the sockets a killed gateway left.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from control_plane.adapters.tunnel_gateway import GatewayOptions, TunnelGateway, public_host_key, reap_stale_sockets
from control_plane.domain.tunnels import Admission, service_socket
from control_plane.services.tunnels import TunnelAccessService, TunnelPolicy
from edge_agent.adapters.tunnel import TunnelLink, TunnelOptions
from edge_agent.protocol import Signer
from tests.support import Echo, free_port, wait_for

pytestmark = pytest.mark.integration


class Records:
    """What the database would say: each device's enrolled key and whether its access is revoked."""

    def __init__(self) -> None:
        self.rows: dict[str, Admission] = {}

    def admissions(self, device_ids: Iterable[str]) -> dict[str, Admission]:
        return {d: self.rows[d] for d in device_ids if d in self.rows}

    def enroll(self, device_id: str, key: Signer) -> None:
        self.rows[device_id] = Admission(device_id, key.public_key_b64, revoked=False)

    def revoke(self, device_id: str) -> None:
        self.rows[device_id] = Admission(device_id, self.rows[device_id].public_key, revoked=True)


@dataclass
class Gateway:
    gateway: TunnelGateway
    loop: asyncio.AbstractEventLoop
    port: int
    run_dir: Path
    access: TunnelAccessService

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)


@pytest.fixture
def records() -> Records:
    return Records()


@pytest.fixture
def gateway(tmp_path: Path, records: Records) -> Iterator[Gateway]:
    # Short (socket paths must fit 108 bytes) and unique: a name made from the test's would be the same in every
    # pytest-xdist worker's temporary directory and in a second test session.
    run_dir = Path(tempfile.mkdtemp(prefix="tun-", dir="/tmp"))
    policy = TunnelPolicy(run_dir, frozenset({"echo", "ssh"}), {"registry": ("127.0.0.1", 1)}, timedelta(seconds=60))
    access = TunnelAccessService(records, policy, lambda: datetime.now(UTC))
    options = GatewayOptions("127.0.0.1", 0, tmp_path / "host_key", run_dir, recheck_interval_s=0.2)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    built: Future[TunnelGateway] = Future()
    loop.call_soon_threadsafe(lambda: built.set_result(TunnelGateway(options, access)))
    handle = Gateway(built.result(timeout=10), loop, 0, run_dir, access)
    handle.port = handle.call(handle.gateway.start())
    try:
        yield handle
    finally:
        handle.call(handle.gateway.close())
        loop.call_soon_threadsafe(loop.stop)
        shutil.rmtree(run_dir, ignore_errors=True)


def agent(gateway: Gateway, tmp_path: Path, device_id: str, key: Signer, **more: Any) -> TunnelLink:
    key_file = tmp_path / f"{device_id}.pem"
    key_file.write_bytes(key.to_pem())
    options = TunnelOptions(
        device_id=device_id,
        host="127.0.0.1",
        port=gateway.port,
        host_key=more.pop("host_key", public_host_key(gateway.gateway.host_key)),
        key_file=key_file,
        reconnect_min_s=0.1,
        reconnect_max_s=0.3,
        key_check_s=0.1,
        **more,
    )
    link = TunnelLink(options)
    link.start()
    return link


def ask(path: Path, line: bytes = b"hello\n") -> bytes:
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


def test_each_device_is_reached_at_its_own_socket_and_revocation_closes_only_its_tunnel(
    gateway: Gateway, records: Records, tmp_path: Path
) -> None:
    keys = {d: Signer.generate() for d in ("dev-a", "dev-b")}
    for device_id, key in keys.items():
        records.enroll(device_id, key)
    links = {d: agent(gateway, tmp_path, d, k, services={"echo": ("127.0.0.1", Echo(d).port)}) for d, k in keys.items()}
    try:
        socket_a = service_socket(gateway.run_dir, "dev-a", "echo")
        socket_b = service_socket(gateway.run_dir, "dev-b", "echo")
        assert wait_for(lambda: socket_a.exists() and ask(socket_a), what="dev-a's echo") == b"dev-a: hello\n"
        assert wait_for(lambda: socket_b.exists() and ask(socket_b), what="dev-b's echo") == b"dev-b: hello\n"

        records.revoke("dev-a")
        revoked_at = time.monotonic()
        wait_for(lambda: "dev-a" not in gateway.gateway.open_tunnels, timeout=1.0, what="dev-a's tunnel to close")
        assert time.monotonic() - revoked_at < 1.0
        assert not socket_a.exists()
        assert ask(socket_b) == b"dev-b: hello\n"
        wait_for(lambda: links["dev-a"].health().reconnects >= 2, what="dev-a to be refused again")
        assert "dev-a" not in gateway.gateway.open_tunnels
        assert "refused this device's key" in (links["dev-a"].health().last_error or "")
        assert ask(socket_b, b"still\n") == b"dev-b: still\n"
    finally:
        for link in links.values():
            link.stop()


def test_a_rotated_key_keeps_the_device_reachable_and_the_old_key_is_dropped(
    gateway: Gateway, records: Records, tmp_path: Path
) -> None:
    old, new = Signer.generate(), Signer.generate()
    records.enroll("dev-r", old)
    link = agent(gateway, tmp_path, "dev-r", old, services={"echo": ("127.0.0.1", Echo("dev-r").port)})
    try:
        path = service_socket(gateway.run_dir, "dev-r", "echo")
        wait_for(lambda: path.exists() and ask(path), what="dev-r's echo")
        records.enroll("dev-r", new)  # the control plane approved the rotation; the agent still holds the old key
        wait_for(lambda: "dev-r" in gateway.access.in_grace, what="a recheck to see the rotated key")
        assert gateway.gateway.open_tunnels["dev-r"] == old.public_key_b64
        assert ask(path) == b"dev-r: hello\n"

        (tmp_path / "dev-r.pem").write_bytes(new.to_pem())  # `edge-agent enroll --rotate` replaced the key file
        wait_for(lambda: gateway.gateway.open_tunnels.get("dev-r") == new.public_key_b64, what="the switch")
        assert wait_for(lambda: path.exists() and ask(path), what="dev-r's echo after the switch") == b"dev-r: hello\n"
    finally:
        link.stop()
    with pytest.raises(asyncssh.PermissionDenied):
        gateway.call(_connect(gateway, "dev-r", old))


async def _connect(gateway: Gateway, device_id: str, key: Signer) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=device_id,
        client_keys=[asyncssh.import_private_key(key.to_pem())],
        known_hosts=None,
        agent_path=None,
        config=[],
    )


async def _attempts(gateway: Gateway, key: Signer) -> dict[str, str]:
    """As dev-x, try what a hostile device would: the answer for each attempt."""
    seen: dict[str, str] = {}
    async with await _connect(gateway, "dev-x", key) as conn:
        await conn.forward_remote_port("echo", 0, "127.0.0.1", 9)  # its own: allowed, once
        attempts = {"bind dev-b's service name": "dev-b", "bind an unallocated service": "postgres", "rebind": "echo"}
        for name, listen in attempts.items():
            try:
                await conn.forward_remote_port(listen, 0, "127.0.0.1", 9)
                seen[name] = "granted"
            except asyncssh.ChannelListenError:
                seen[name] = "refused"
        try:
            await conn.forward_remote_port("echo", 8080, "127.0.0.1", 9)
            seen["listen on a TCP port"] = "granted"
        except asyncssh.ChannelListenError:
            seen["listen on a TCP port"] = "refused"
        try:
            await conn.forward_remote_path(str(gateway.run_dir / "dev-b.echo.sock"), "/tmp/x")
            seen["bind dev-b's socket path"] = "granted"
        except asyncssh.ChannelListenError:
            seen["bind dev-b's socket path"] = "refused"
        for name, (host, port) in {
            "reach a cloud service off the allow-list": ("metadata", 0),
            "reach an address directly": ("127.0.0.1", 22),
            "reach dev-b's socket": (str(gateway.run_dir / "dev-b.echo.sock"), 0),
        }.items():
            try:
                await conn.open_connection(host, port)
                seen[name] = "granted"
            except asyncssh.ChannelOpenError:
                seen[name] = "refused"
        try:
            await conn.open_unix_connection(str(gateway.run_dir / "dev-b.echo.sock"))
            seen["open dev-b's socket path"] = "granted"
        except asyncssh.ChannelOpenError:
            seen["open dev-b's socket path"] = "refused"
        try:
            await conn.run("id", check=False, timeout=5)
            seen["run a command"] = "granted"
        except asyncssh.ChannelOpenError:
            seen["run a command"] = "refused"
    return seen


def test_a_device_gets_nothing_it_was_not_allocated(gateway: Gateway, records: Records, tmp_path: Path) -> None:
    key_b = Signer.generate()
    records.enroll("dev-b", key_b)
    link_b = agent(gateway, tmp_path, "dev-b", key_b, services={"echo": ("127.0.0.1", Echo("dev-b").port)})
    try:
        path_b = service_socket(gateway.run_dir, "dev-b", "echo")
        wait_for(lambda: path_b.exists() and ask(path_b), what="dev-b's echo")
        key_x = Signer.generate()
        records.enroll("dev-x", key_x)
        seen = gateway.call(_attempts(gateway, key_x))
        assert seen == dict.fromkeys(seen, "refused"), seen
        assert ask(path_b) == b"dev-b: hello\n"  # dev-b's service was neither taken over nor closed
    finally:
        link_b.stop()


@pytest.mark.parametrize(
    ("who", "why"),
    [
        pytest.param("dev-a", "another device's key", id="someone-elses-key"),
        pytest.param("dev-unknown", "a device the control plane does not know", id="unknown-device"),
        pytest.param("../etc", "a name that is not a device id", id="path-in-the-name"),
    ],
)
def test_a_key_that_is_not_the_devices_own_gets_no_tunnel(
    gateway: Gateway, records: Records, who: str, why: str
) -> None:
    records.enroll("dev-a", Signer.generate())
    records.enroll("dev-b", intruder := Signer.generate())
    with pytest.raises(asyncssh.PermissionDenied):
        gateway.call(_connect(gateway, who, intruder))
    assert who not in gateway.gateway.open_tunnels, why


def test_a_service_the_gateway_does_not_allocate_is_refused_and_the_others_stay_up(
    gateway: Gateway, records: Records, tmp_path: Path
) -> None:
    key = Signer.generate()
    records.enroll("dev-s", key)
    services = {"echo": ("127.0.0.1", Echo("dev-s").port), "postgres": ("127.0.0.1", 5432)}
    link = agent(gateway, tmp_path, "dev-s", key, services=services)
    try:
        path = service_socket(gateway.run_dir, "dev-s", "echo")
        assert wait_for(lambda: path.exists() and ask(path), what="dev-s's echo") == b"dev-s: hello\n"
        assert link.health().exposed == ("echo",)
        assert "refused to expose postgres" in (link.health().last_error or "")
        assert not service_socket(gateway.run_dir, "dev-s", "postgres").exists()
    finally:
        link.stop()


def test_the_agent_refuses_a_gateway_whose_host_key_is_not_pinned(
    gateway: Gateway, records: Records, tmp_path: Path
) -> None:
    key = Signer.generate()
    records.enroll("dev-p", key)
    impostor = public_host_key(asyncssh.generate_private_key("ssh-ed25519"))
    link = agent(gateway, tmp_path, "dev-p", key, host_key=impostor)
    try:
        wait_for(lambda: link.health().last_error, what="the refusal")
        assert "not the pinned one" in (link.health().last_error or "")
        assert "dev-p" not in gateway.gateway.open_tunnels
    finally:
        link.stop()


def test_the_link_measures_its_round_trip_and_counts_the_bytes_each_way(
    gateway: Gateway, records: Records, tmp_path: Path
) -> None:
    key = Signer.generate()
    records.enroll("dev-m", key)
    link = agent(gateway, tmp_path, "dev-m", key, services={"echo": ("127.0.0.1", Echo("dev-m").port)})
    try:
        path = service_socket(gateway.run_dir, "dev-m", "echo")
        wait_for(lambda: link.health().connected and path.exists(), what="dev-m's tunnel")
        rtt = link.health().rtt_ms
        assert rtt is not None and 0 < rtt < 1000
        before = link.health()
        assert ask(path, b"twelve bytes\n") == b"dev-m: twelve bytes\n"
        # what reached the device through the tunnel, and what left it: the payload, not SSH's framing
        after = wait_for(lambda: (h := link.health()).bytes_out > before.bytes_out and h, what="the answer counted")
        assert after.bytes_in - before.bytes_in == len(b"twelve bytes\n")
        assert after.bytes_out - before.bytes_out == len(b"dev-m: twelve bytes\n")
    finally:
        link.stop()


def test_a_local_service_that_is_down_closes_the_connection_at_once_and_leaves_no_channel(
    gateway: Gateway, records: Records, tmp_path: Path
) -> None:
    key = Signer.generate()
    records.enroll("dev-d", key)
    link = agent(gateway, tmp_path, "dev-d", key, services={"echo": ("127.0.0.1", free_port())})  # nothing there
    try:
        path = service_socket(gateway.run_dir, "dev-d", "echo")
        wait_for(lambda: link.health().connected and path.exists(), what="dev-d's tunnel")
        started = time.monotonic()
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b"anyone?\n")
            assert ended(sock)  # closed by the gateway, not left waiting
        assert time.monotonic() - started < 2.0
        wait_for(lambda: gateway.gateway.open_channels("dev-d") == 0, timeout=2, what="no channel at the gateway")
        assert link.health().connected and "dev-d" in gateway.gateway.open_tunnels  # the tunnel itself stays up
    finally:
        link.stop()


def test_a_cloud_port_used_while_the_tunnel_is_down_is_closed_at_once(
    gateway: Gateway, records: Records, tmp_path: Path
) -> None:
    key = Signer.generate()
    records.enroll("dev-c", key)
    records.revoke("dev-c")  # the gateway refuses it: the link never comes up
    port = free_port()
    link = agent(gateway, tmp_path, "dev-c", key, cloud_services={"registry": port})
    try:
        wait_for(lambda: link.health().reconnects >= 1, what="a refused attempt")
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"hello\n")
            assert ended(sock)
        assert time.monotonic() - started < 2.0
    finally:
        link.stop()


def test_a_gateway_that_was_killed_leaves_no_socket_behind_at_its_next_start() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="tun-stale-", dir="/tmp"))  # mode 0700, as the gateway makes it
    stale, live = run_dir / "dev-a.echo.sock", run_dir / "dev-b.echo.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))  # bound and closed without unlinking: what a SIGKILLed gateway leaves
    with socket.socket(socket.AF_UNIX) as serving:
        serving.bind(str(live))
        serving.listen()
        try:
            assert reap_stale_sockets(run_dir) == [stale]
            assert not stale.exists() and live.exists()  # something still answers on it: not ours to remove
        finally:
            live.unlink()
            run_dir.rmdir()
