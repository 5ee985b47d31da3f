"""The agent's one outbound tunnel to the control plane's tunnel gateway: the agent's only importer of asyncssh.

The device authenticates with its enrolled key (device-key.pem, the same ed25519 key enrollment approved) as user
DEVICE_ID, and refuses any gateway whose host key is not the pinned one. Over the one connection it exposes its
configured local services (a remote forward per service, named by the service; the gateway decides where it
listens) and offers local ports that lead to the cloud services the gateway allows. It reconnects with jittered,
capped backoff (`edge_agent.core.backoff.next_delay`, from the shortest delay again once a connection was up) and
sends SSH keepalives, so a dead link is noticed and replaced. When the key file changes (`edge-agent enroll
--rotate`), it connects with the new key first and only then lets the old connection go (the gateway replaces a
device's older connection with its newer one).

Forwarding is asyncssh's own (`SSHForwarder`, flow control included); this module only counts the bytes each
forwarded connection carries, and measures the link's round trip as the time the gateway takes to refuse a
direct connection to `RTT_PROBE` (asyncssh has no public ping). The local ports for cloud services belong to the
link, not to one connection: they stay bound across reconnects, and a connection made while the tunnel is down
is closed at once. A local service that is down is refused when the gateway asks for it (within
`local_connect_timeout_s`), so nothing waits on the gateway's side.

It runs in its own thread with its own event loop and never blocks the daemon; it never logs key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import asyncssh

from edge_agent.config import TunnelSettings
from edge_agent.core.backoff import next_delay
from edge_agent.core.link_health import LinkHealth
from edge_agent.protocol.tunnel import RTT_PROBE

log = logging.getLogger(__name__)

KEY_CHECK_S = 5.0  # how often the key file is looked at for a rotation
Count = Callable[[int], None]


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
    connect_timeout_s: float = 30.0
    local_connect_timeout_s: float = 10.0
    health_interval_s: float = 60.0  # how often the round trip is measured


class TunnelError(Exception):
    """The tunnel cannot be set up as configured; the text says what to change."""


class _Counted(asyncssh.SSHForwarder):
    """asyncssh's forwarder for one side of a forwarded connection, counting the bytes that side receives."""

    def __init__(self, count: Count, peer: asyncssh.SSHForwarder | None = None) -> None:
        super().__init__(peer)
        self._count = count

    def data_received(self, data: bytes, datatype: int | None = None) -> None:
        self._count(len(data))
        super().data_received(data, datatype)


class _Outbound(_Counted):
    """An edge application's connection to 127.0.0.1:PORT, forwarded to cloud service `service` over whichever
    connection the link holds; closed at once when it holds none or the gateway refuses."""

    def __init__(self, link: TunnelLink, service: str) -> None:
        super().__init__(link.count_out)
        self._link = link
        self._service = service
        self._opening: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        cast(asyncio.Transport, transport).pause_reading()  # nothing is read before the channel can take it
        self._opening = asyncio.ensure_future(self._open(cast(asyncio.Transport, transport)))

    async def _open(self, transport: asyncio.Transport) -> None:
        conn = self._link.connection
        if conn is None:
            self.close()
            return
        try:
            await conn.create_connection(
                lambda: cast(asyncssh.SSHTCPSession[bytes], _Counted(self._link.count_in, self)), self._service, 0
            )
        except (asyncssh.Error, OSError) as exc:
            log.warning("tunnel: a connection to cloud service %s was refused: %s", self._service, _explain(exc))
            self.close()
            return
        if transport.is_closing():
            self.close()  # the application hung up meanwhile: the channel goes too
        else:
            transport.resume_reading()


class TunnelLink:
    def __init__(
        self,
        options: TunnelOptions,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            self._host_key = asyncssh.import_public_key(options.host_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise TunnelError(f"tunnel.host_key is not an SSH public key line ('ssh-ed25519 AAAA...'): {exc}") from exc
        self._options = options
        self._draw = draw
        self._clock = clock
        self._on_change = on_change
        self._monotonic = monotonic
        self._health = LinkHealth()
        self._bytes_in = 0
        self._bytes_out = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._local: dict[str, asyncio.Server] = {}
        self._was_up = False
        self.connection: asyncssh.SSHClientConnection | None = None

    def health(self) -> LinkHealth:
        with self._lock:
            return replace(self._health, bytes_in=self._bytes_in, bytes_out=self._bytes_out)

    def count_in(self, size: int) -> None:
        self._bytes_in += size  # only the link's event loop counts; readers see a whole int

    def count_out(self, size: int) -> None:
        self._bytes_out += size

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
        self._on_change()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._started.set()
        attempt = 0
        try:
            while not self._stopping.is_set():
                self._was_up = False
                try:
                    await self._hold()
                except (OSError, asyncssh.Error, TunnelError) as exc:
                    why = _explain(exc)
                    log.warning("tunnel to %s:%d: %s", self._options.host, self._options.port, why)
                    self._set(connected=False, connected_since=None, exposed=(), last_error=why)
                if self._stopping.is_set():
                    break
                attempt = 0 if self._was_up else attempt  # a link that was up starts again from the shortest delay
                delay = next_delay(attempt, self._options.reconnect_min_s, self._options.reconnect_max_s, self._draw())
                attempt += 1
                self._set(reconnects=self.health().reconnects + 1)
                await _wait(self._stopping, delay)
        finally:
            for server in self._local.values():
                server.close()

    async def _hold(self) -> None:
        """One connection: set up, then held until it drops, the agent stops, or the key file changes (then a
        connection with the new key is made before this one is let go). The round trip is measured on the way."""
        o = self._options
        key_mark = _mark(o.key_file)
        conn = await self._connect()
        assert self._stopping is not None
        stopping = asyncio.ensure_future(self._stopping.wait())
        next_probe = self._monotonic() + o.health_interval_s
        try:
            while True:
                closed = asyncio.ensure_future(conn.wait_closed())
                wait = min(o.key_check_s, max(0.0, next_probe - self._monotonic()))
                await asyncio.wait([closed, stopping], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if stopping.done():
                    return
                if closed.done():
                    raise TunnelError("the gateway closed the connection")
                closed.cancel()
                if self._monotonic() >= next_probe:
                    self._set(rtt_ms=await self._round_trip(conn))
                    next_probe = self._monotonic() + o.health_interval_s
                if _mark(o.key_file) != key_mark:
                    log.info("tunnel: the device key changed; reconnecting with the new key")
                    key_mark = _mark(o.key_file)
                    old, conn = conn, await self._connect()
                    old.close()
        finally:
            stopping.cancel()
            conn.close()
            self.connection = None
            self._set(connected=False, connected_since=None, exposed=())

    async def _connect(self) -> asyncssh.SSHClientConnection:
        o = self._options
        try:
            key = asyncssh.import_private_key(o.key_file.read_bytes())
        except (OSError, asyncssh.KeyImportError) as exc:
            raise TunnelError(f"cannot use the device key {o.key_file}: {exc}") from exc
        unbound = await self._listen_locally()
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
            connect_timeout=o.connect_timeout_s,
            login_timeout=o.connect_timeout_s,
            config=[],
        )
        exposed: list[str] = []
        refused: list[str] = []
        try:
            for name, (host, port) in o.services.items():
                try:
                    await conn.create_server(self._inbound_factory(name, host, port), name, 0)
                    exposed.append(name)
                except asyncssh.ChannelListenError:  # one refused service must not take the others down
                    refused.append(name)
            rtt_ms = await self._round_trip(conn)
        except BaseException:
            conn.close()
            raise
        problems = []
        if refused:
            problems.append(f"the gateway refused to expose {', '.join(refused)}: not among its tunnel.services")
        if unbound:
            problems.append(f"cannot listen for cloud services {', '.join(unbound)}")
        problem = "; ".join(problems) or None
        if problem is not None:
            log.warning("tunnel: %s", problem)
        self.connection = conn
        self._was_up = True
        self._set(
            connected=True,
            connected_since=self._clock(),
            last_error=problem,
            exposed=tuple(sorted(exposed)),
            rtt_ms=rtt_ms,
        )
        log.info("tunnel to %s:%d is up; exposing %s", o.host, o.port, ", ".join(sorted(exposed)) or "nothing")
        return conn

    def _inbound_factory(
        self, name: str, host: str, port: int
    ) -> Callable[[str, int], Awaitable[asyncssh.SSHTCPSession[bytes]]]:
        """What answers the gateway's connections to exposed service `name`: a forward to its local address."""

        def factory(_orig_host: str, _orig_port: int) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
            return self._inbound(name, host, port)

        return factory

    async def _inbound(self, name: str, host: str, port: int) -> asyncssh.SSHTCPSession[bytes]:
        """Connect to the local service first: a service that is down refuses the gateway's channel at once."""
        loop = asyncio.get_running_loop()
        try:
            _, local = await asyncio.wait_for(
                loop.create_connection(lambda: _Counted(self.count_out), host, port),
                timeout=self._options.local_connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            log.warning("tunnel: %s (%s:%d) is not answering: %s", name, host, port, why)
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED, f"{name} is down on the device: {why}"
            ) from None
        return cast(asyncssh.SSHTCPSession[bytes], _Counted(self.count_in, local))

    async def _listen_locally(self) -> list[str]:
        """Bind 127.0.0.1:PORT for each cloud service not bound yet; those that cannot be bound (tried again at
        the next connection)."""
        loop = asyncio.get_running_loop()
        unbound = []
        for name, port in self._options.cloud_services.items():
            if name in self._local:
                continue
            try:
                outbound = functools.partial(_Outbound, self, name)
                self._local[name] = await loop.create_server(outbound, "127.0.0.1", port)
            except OSError as exc:
                unbound.append(f"{name} (127.0.0.1:{port}: {exc.strerror or exc})")
        return unbound

    async def _round_trip(self, conn: asyncssh.SSHClientConnection) -> float | None:
        """Milliseconds the gateway takes to answer a request it refuses at once; None when it does not answer
        within the connect timeout."""
        started = self._monotonic()
        try:
            chan, _ = await asyncio.wait_for(
                conn.create_connection(asyncssh.SSHTCPSession[bytes], RTT_PROBE, 0),
                timeout=self._options.connect_timeout_s,
            )
            chan.close()  # a gateway that let it through: still one round trip
        except asyncssh.ChannelOpenError:
            pass  # the answer expected
        except (TimeoutError, asyncssh.Error, OSError):
            return None
        return (self._monotonic() - started) * 1000.0


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
        return (
            f"the gateway's host key is not the pinned one (tunnel.host_key, or tunnel.gateway from enrollment): "
            f"{exc.reason}; refusing to connect"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return "the gateway refused this device's key (not enrolled, rotated away, or revoked)"
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return "the gateway did not answer in time"
    return str(exc) or type(exc).__name__


def tunnel_options(device_id: str, settings: TunnelSettings, key_file: Path, serving: tuple[str, int]) -> TunnelOptions:
    """The link's options from the agent's `tunnel` settings (validated there: a host key and the key file are
    set); the gateway's address and host key are those set in agent.yaml, else those enrollment wrote."""
    host, port, host_key = settings.endpoint()
    assert host_key is not None
    services = {name: _address(value) for name, value in settings.services.items()}
    if settings.expose_inference:
        serving_host, serving_port = serving
        local = "127.0.0.1" if serving_host in ("0.0.0.0", "::", "") else serving_host
        services.setdefault("kserve", (local, serving_port))
    return TunnelOptions(
        device_id=device_id,
        host=host,
        port=port,
        host_key=host_key,
        key_file=key_file,
        services=services,
        cloud_services=dict(settings.cloud_services),
        keepalive_interval_s=settings.keepalive_interval_s,
        connect_timeout_s=settings.connect_timeout_s,
        health_interval_s=settings.health_interval_s,
    )


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)
