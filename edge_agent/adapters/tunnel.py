"""The agent's one outbound tunnel to the control plane's tunnel gateway: the agent's only importer of asyncssh.

The device authenticates with its enrolled key (device-key.pem, the same ed25519 key enrollment approved) as user
DEVICE_ID, and refuses any gateway whose host key is not the pinned `tunnel.host_key`. Over the one connection it
exposes its configured local services (a remote forward per service, named by the service; the gateway decides
where it listens) and offers local ports that lead to the cloud services the gateway allows. It reconnects with
jittered, capped backoff (`edge_agent.core.backoff.next_delay`) and sends SSH keepalives, so a dead link is noticed
and replaced. When the key file changes (`edge-agent enroll --rotate`), it connects with the new key first and only
then lets the old connection go (the gateway replaces a device's older connection with its newer one).

It runs in its own thread with its own event loop and never blocks the daemon; it never logs key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import asyncssh

from edge_agent.config import TunnelSettings
from edge_agent.core.backoff import next_delay

log = logging.getLogger(__name__)

KEY_CHECK_S = 5.0  # how often the key file is looked at for a rotation


@dataclass(frozen=True)
class TunnelOptions:
    device_id: str
    host: str
    port: int
    host_key: str  # "ssh-ed25519 AAAA...": the gateway's public host key, pinned
    key_file: Path  # the device's enrolled private key (PEM)
    services: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # exposed: name -> local address
    cloud_services: Mapping[str, int] = field(default_factory=dict)  # reached: name -> local port on 127.0.0.1
    keepalive_interval_s: float = 15.0
    keepalive_count_max: int = 3
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    key_check_s: float = KEY_CHECK_S


@dataclass(frozen=True)
class LinkHealth:
    """What the agent knows of its tunnel (bytes each way and RTT are not measured yet: docs/tunnels.md)."""

    connected: bool = False
    connected_since: datetime | None = None
    reconnects: int = 0
    last_error: str | None = None
    exposed: tuple[str, ...] = ()


class TunnelError(Exception):
    """The tunnel cannot be set up as configured; the text says what to change."""


class TunnelLink:
    def __init__(
        self,
        options: TunnelOptions,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        try:
            self._host_key = asyncssh.import_public_key(options.host_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise TunnelError(f"tunnel.host_key is not an SSH public key line ('ssh-ed25519 AAAA...'): {exc}") from exc
        self._options = options
        self._draw = draw
        self._clock = clock
        self._health = LinkHealth()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def health(self) -> LinkHealth:
        with self._lock:
            return self._health

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tunnel", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._main())

    def _set(self, **changes: object) -> None:
        with self._lock:
            self._health = replace(self._health, **changes)  # type: ignore[arg-type]

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._started.set()
        attempt = 0
        while not self._stopping.is_set():
            try:
                await self._hold()
                attempt = 0
            except (OSError, asyncssh.Error, TunnelError) as exc:
                why = _explain(exc)
                log.warning("tunnel to %s:%d: %s", self._options.host, self._options.port, why)
                self._set(connected=False, connected_since=None, exposed=(), last_error=why)
            if self._stopping.is_set():
                break
            delay = next_delay(attempt, self._options.reconnect_min_s, self._options.reconnect_max_s, self._draw())
            attempt += 1
            self._set(reconnects=self.health().reconnects + 1)
            await _wait(self._stopping, delay)

    async def _hold(self) -> None:
        """One connection: set up, then held until it drops, the agent stops, or the key file changes (then a
        connection with the new key is made before this one is let go)."""
        key_mark = _mark(self._options.key_file)
        conn = await self._connect()
        assert self._stopping is not None
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                closed = asyncio.ensure_future(conn.wait_closed())
                await asyncio.wait(
                    [closed, stopping], timeout=self._options.key_check_s, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping.done():
                    return
                if closed.done():
                    raise TunnelError("the gateway closed the connection")
                closed.cancel()
                if _mark(self._options.key_file) != key_mark:
                    log.info("tunnel: the device key changed; reconnecting with the new key")
                    key_mark = _mark(self._options.key_file)
                    old, conn = conn, await self._connect()
                    old.close()
        finally:
            stopping.cancel()
            conn.close()
            self._set(connected=False, connected_since=None, exposed=())

    async def _connect(self) -> asyncssh.SSHClientConnection:
        o = self._options
        try:
            key = asyncssh.import_private_key(o.key_file.read_bytes())
        except (OSError, asyncssh.KeyImportError) as exc:
            raise TunnelError(f"cannot use the device key {o.key_file}: {exc}") from exc
        conn = await asyncssh.connect(
            o.host,
            o.port,
            username=o.device_id,
            client_keys=[key],
            known_hosts=([self._host_key], [], []),
            agent_path=None,
            password=None,
            kbdint_auth=False,
            keepalive_interval=o.keepalive_interval_s,
            keepalive_count_max=o.keepalive_count_max,
            config=[],
        )
        exposed: list[str] = []
        refused: list[str] = []
        try:
            for name, (host, port) in o.services.items():
                try:
                    await conn.forward_remote_port(name, 0, host, port)
                    exposed.append(name)
                except asyncssh.ChannelListenError:  # one refused service must not take the others down
                    refused.append(name)
            for name, local_port in o.cloud_services.items():
                await conn.forward_local_port("127.0.0.1", local_port, name, 0)
        except BaseException:
            conn.close()
            raise
        problem = None
        if refused:
            problem = f"the gateway refused to expose {', '.join(refused)}: not among its tunnel.services"
            log.warning("tunnel: %s", problem)
        self._set(connected=True, connected_since=self._clock(), last_error=problem, exposed=tuple(sorted(exposed)))
        log.info("tunnel to %s:%d is up; exposing %s", o.host, o.port, ", ".join(sorted(exposed)) or "nothing")
        return conn


def _mark(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return f"the gateway's host key is not the pinned tunnel.host_key ({exc.reason}); refusing to connect"
    if isinstance(exc, asyncssh.PermissionDenied):
        return "the gateway refused this device's key (not enrolled, rotated away, or revoked)"
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__


def tunnel_options(device_id: str, settings: TunnelSettings, key_file: Path, serving: tuple[str, int]) -> TunnelOptions:
    """The link's options from the agent's `tunnel` settings (validated there: host key and key file are set)."""
    assert settings.host_key is not None
    services = {name: _address(value) for name, value in settings.services.items()}
    if settings.expose_inference:
        host, port = serving
        services.setdefault("kserve", ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port))
    return TunnelOptions(
        device_id=device_id,
        host=settings.host,
        port=settings.port,
        host_key=settings.host_key,
        key_file=key_file,
        services=services,
        cloud_services=dict(settings.cloud_services),
        keepalive_interval_s=settings.keepalive_interval_s,
    )


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)
