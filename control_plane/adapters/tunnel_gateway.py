"""The tunnel gateway's SSH server: the control plane's only importer of asyncssh.

Devices connect out to it (one connection each), authenticate with their enrolled ed25519 key as user DEVICE_ID,
and may then do exactly two things: expose a service allocated to them (a remote forward whose "host" is the
service name, port 0) and open a direct connection to a cloud service on the allow-list (by name). The
gateway, not the device, decides where an exposed service listens: a unix socket derived from the authenticated
device id (`control_plane.domain.tunnels.service_socket`). Everything else SSH offers (shells, exec, subsystems,
agent and X11 forwarding, unix-socket forwards, listening on TCP ports, passwords) is refused.

Who may connect, and whether an open tunnel stays, is the `TunnelAccess` port's answer (control_plane/services/
tunnels.py): asked at each connection and, for every open tunnel, on a short timer, so a revocation closes a
tunnel within one recheck interval and no file is ever rewritten. This module never decides policy itself and
never logs key material beyond a fingerprint.

Nothing is left without its other end: a device's sockets go with its connection (closed, dropped, killed, or
replaced by its newer one), with the gateway when it stops, and a socket file a killed gateway left behind is
removed at the next start when nothing answers on it. A connection to a device's service whose local service is
down is refused by the agent and closed here at once. A direct connection to `RTT_PROBE` (the agent measuring
its round trip) is refused without a word.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import asyncssh
from asyncssh.listener import create_unix_forward_listener
from asyncssh.session import SSHTCPSessionFactory

from edge_agent.protocol.tunnel import RTT_PROBE

log = logging.getLogger(__name__)

ED25519 = "ssh-ed25519"


class TunnelAccess(Protocol):
    """The gateway's questions to the control plane's records (blocking calls: run off the event loop)."""

    def admit(self, device_id: str, public_key: str) -> str | None:
        """None: `device_id` may connect with `public_key` (base64 of the raw ed25519 key); else why not."""
        ...

    def recheck(self, open_keys: Mapping[str, str]) -> dict[str, str]:
        """Of the open tunnels (device id -> the key it authenticated with), those to close, with the reason."""
        ...

    def socket_for(self, device_id: str, service: str) -> Path | None:
        """Where `device_id`'s `service` listens, or None: the service is not one a device may expose."""
        ...

    def cloud_address(self, service: str, port: int) -> tuple[str, int] | None:
        """The address a direct connection to cloud service `service` leads to, or None: refused."""
        ...


@dataclass(frozen=True)
class GatewayOptions:
    host: str
    port: int
    host_key_file: Path
    run_dir: Path
    recheck_interval_s: float = 0.5
    login_timeout_s: float = 10.0
    keepalive_interval_s: float = 15.0
    keepalive_count_max: int = 3


@dataclass
class _Tunnel:
    device_id: str
    public_key: str
    conn: asyncssh.SSHServerConnection
    sockets: list[Path] = field(default_factory=list)
    channels: set[asyncssh.SSHTCPChannel[bytes]] = field(default_factory=set)  # open to the device's services
    closed: bool = False


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The gateway's ed25519 host key; created on first start, readable by this user only (mode 0600)."""
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(f"{path}: the tunnel host key is readable by others (mode {mode:o}); chmod 600 it")
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key(ED25519)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # the gateway and the server (announcing it at enrollment) started together
        return asyncssh.read_private_key(path)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key())
    log.info("created the tunnel gateway's host key %s", path)
    return key


def public_host_key(key: asyncssh.SSHKey) -> str:
    """The line an agent pins (`tunnel.host_key` in agent.yaml): `ssh-ed25519 AAAA...`."""
    algorithm, body = key.export_public_key("openssh").decode().split()[:2]
    return f"{algorithm} {body}"


def reap_stale_sockets(run_dir: Path) -> list[Path]:
    """Remove the service sockets in `run_dir` nothing listens on any more (left by a gateway that was killed);
    the ones removed. A socket something still answers on is left alone."""
    removed = []
    for path in sorted(run_dir.glob("*.sock")):
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(1.0)  # a live listener with a full backlog must not hold the start
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink(missing_ok=True)
                removed.append(path)
            except OSError:
                continue
            else:
                log.warning("%s is served by another process; is a second gateway using this run_dir?", path)
    return removed


def raw_ed25519(key: asyncssh.SSHKey) -> str | None:
    """Base64 of the raw 32-byte ed25519 public key (the form enrollment stores), or None for another algorithm."""
    if key.get_algorithm() != ED25519:
        return None
    wire = base64.b64decode(key.export_public_key("openssh").split()[1])
    return base64.b64encode(wire[-32:]).decode()


class TunnelGateway:
    """Serves device tunnels until `close`; `open_tunnels` says who is connected (for tests and status)."""

    def __init__(self, options: GatewayOptions, access: TunnelAccess) -> None:
        self._options = options
        self._access = access
        self._tunnels: dict[str, _Tunnel] = {}
        self._server: asyncssh.SSHAcceptor | None = None
        self._recheck: asyncio.Task[None] | None = None
        self.host_key = load_or_create_host_key(options.host_key_file)

    @property
    def open_tunnels(self) -> dict[str, str]:
        return {device: tunnel.public_key for device, tunnel in self._tunnels.items()}

    def open_channels(self, device_id: str) -> int:
        """Connections to `device_id`'s services open now (for tests and status)."""
        tunnel = self._tunnels.get(device_id)
        return 0 if tunnel is None else len(tunnel.channels)

    async def start(self) -> int:
        """Listen; the port bound (useful with port 0)."""
        self._options.run_dir.mkdir(parents=True, exist_ok=True)
        self._options.run_dir.chmod(0o700)
        stale = reap_stale_sockets(self._options.run_dir)
        if stale:
            log.info("removed %d service socket(s) left by a gateway that did not stop cleanly", len(stale))
        self._server = await asyncssh.listen(
            self._options.host,
            self._options.port,
            server_factory=lambda: _DeviceServer(self),
            server_host_keys=[self.host_key],
            login_timeout=self._options.login_timeout_s,
            keepalive_interval=self._options.keepalive_interval_s,
            keepalive_count_max=self._options.keepalive_count_max,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            password_auth=False,
            kbdint_auth=False,
        )
        self._recheck = asyncio.create_task(self._recheck_loop(), name="tunnel-recheck")
        return int(self._server.get_port())

    async def close(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        for tunnel in list(self._tunnels.values()):
            tunnel.conn.close()
            self.closed(tunnel)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- called by the per-connection server ------------------------------------------------------------------
    async def admit(self, device_id: str, key: asyncssh.SSHKey) -> bool:
        raw = raw_ed25519(key)
        if raw is None:
            log.warning("tunnel refused for %s: only ed25519 device keys are accepted", device_id)
            return False
        why = await asyncio.to_thread(self._access.admit, device_id, raw)
        if why is not None:
            log.warning("tunnel refused for %s: %s", device_id, why)
            return False
        return True

    def opened(self, tunnel: _Tunnel) -> None:
        """A device authenticated: its newer connection replaces an older one (an agent reconnecting, or switching
        to a rotated key), so a device never holds two tunnels and its sockets have one owner."""
        previous = self._tunnels.get(tunnel.device_id)
        self._tunnels[tunnel.device_id] = tunnel
        if previous is not None and previous.conn is not tunnel.conn:
            log.info("tunnel of %s: a new connection replaces the previous one", tunnel.device_id)
            previous.conn.close()
        log.info("tunnel of %s is open", tunnel.device_id)

    def closed(self, tunnel: _Tunnel) -> None:
        """A connection is gone: its sockets go with it, unless its device's newer connection owns them now."""
        if tunnel.closed:
            return
        tunnel.closed = True
        if self._tunnels.get(tunnel.device_id) is tunnel:
            del self._tunnels[tunnel.device_id]
            for path in tunnel.sockets:
                path.unlink(missing_ok=True)
        log.info("tunnel of %s is closed", tunnel.device_id)

    async def expose(self, tunnel: _Tunnel, service: str, port: int) -> asyncssh.SSHListener | bool:
        path = self._access.socket_for(tunnel.device_id, service) if port == 0 else None
        if path is None or path in tunnel.sockets or self._tunnels.get(tunnel.device_id) is not tunnel:
            log.warning("tunnel of %s: refused to expose %r port %d (not allocated)", tunnel.device_id, service, port)
            return False
        conn = tunnel.conn

        async def to_device(
            session_factory: SSHTCPSessionFactory[bytes],
        ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]:
            chan, session = await conn.create_connection(session_factory, service, 0)
            tunnel.channels.add(chan)
            asyncio.get_running_loop().create_task(_forget(tunnel.channels, chan))
            return chan, session

        path.unlink(missing_ok=True)  # left by this device's previous connection (only it may own the name)
        tunnel.sockets.append(path)  # before the wait: a connection that drops meanwhile takes the file with it
        listener = await create_unix_forward_listener(conn, asyncio.get_running_loop(), to_device, str(path))
        if tunnel.closed:  # it dropped while the listener was made: asyncssh will not close this one
            listener.close()
            current = self._tunnels.get(tunnel.device_id)
            if current is None or path not in current.sockets:
                path.unlink(missing_ok=True)
            return False
        path.chmod(0o600)
        log.info("tunnel of %s: %s exposed at %s", tunnel.device_id, service, path)
        return listener

    def reach(self, tunnel: _Tunnel, service: str, port: int) -> Awaitable[asyncssh.SSHTCPSession[bytes]] | bool:
        if service == RTT_PROBE:
            return False  # the agent timing the answer: no cloud service, nothing to log
        address = self._access.cloud_address(service, port)
        if address is None:
            log.warning(
                "tunnel of %s: refused a connection to %r port %d (not allowed)", tunnel.device_id, service, port
            )
            return False
        return cast(Awaitable[asyncssh.SSHTCPSession[bytes]], tunnel.conn.forward_connection(*address))

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self._options.recheck_interval_s)
            if not self._tunnels:
                continue
            try:
                closing = await asyncio.to_thread(self._access.recheck, self.open_keys())
            except Exception:  # a database hiccup must not stop the rechecks; the next one tries again
                log.exception("tunnel recheck failed; trying again in %g s", self._options.recheck_interval_s)
                continue
            for device_id, reason in closing.items():
                tunnel = self._tunnels.get(device_id)
                if tunnel is not None:
                    log.warning("closing the tunnel of %s: %s", device_id, reason)
                    tunnel.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, reason)

    def open_keys(self) -> dict[str, str]:
        return {device: tunnel.public_key for device, tunnel in self._tunnels.items()}


async def _forget(channels: set[asyncssh.SSHTCPChannel[bytes]], chan: asyncssh.SSHTCPChannel[bytes]) -> None:
    await chan.wait_closed()
    channels.discard(chan)


class _DeviceServer(asyncssh.SSHServer):
    """One device's connection: public-key authentication as its device id, and the two forwards it may ask for."""

    def __init__(self, gateway: TunnelGateway) -> None:
        self._gateway = gateway
        self._conn: asyncssh.SSHServerConnection | None = None
        self._key: str | None = None
        self._tunnel: _Tunnel | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        if self._tunnel is not None:
            self._gateway.closed(self._tunnel)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if not await self._gateway.admit(username, key):
            return False
        self._key = raw_ed25519(key)
        return True

    def auth_completed(self) -> None:
        assert self._conn is not None and self._key is not None
        username = self._conn.get_extra_info("username")
        self._tunnel = _Tunnel(str(username), self._key, self._conn)
        self._gateway.opened(self._tunnel)

    def server_requested(self, listen_host: str, listen_port: int) -> Awaitable[asyncssh.SSHListener | bool] | bool:
        if self._tunnel is None:
            return False
        return self._gateway.expose(self._tunnel, listen_host, listen_port)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]] | bool:
        if self._tunnel is None:
            return False
        return self._gateway.reach(self._tunnel, dest_host, dest_port)
