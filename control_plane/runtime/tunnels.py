"""The tunnel gateway's composition: its own process (`edgectl tunnel-gateway`), on the control plane's settings
and database, with the SSH server adapter and the access service between them.

It migrates the database like the server does (the same, idempotent upgrade), then serves until SIGINT/SIGTERM.
It starts nothing of the control plane's (no MQTT link, no API, no builders) and decides nothing itself.
`tunnel_sessions` wires the server's side: the sessions operators open to devices' services at the gateway's
sockets (the server shares the gateway's data_dir, so its `tunnel.run_dir`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.tunnel_repository import TunnelAdmissionRepository
from control_plane.adapters.service_sockets import ServiceSockets
from control_plane.adapters.tunnel_gateway import GatewayOptions, TunnelGateway, public_host_key
from control_plane.domain.tunnel_sessions import SessionLimits
from control_plane.domain.tunnels import parse_address
from control_plane.runtime.storage import Storage
from control_plane.services.audit import AuditService
from control_plane.services.tunnel_sessions import SessionPolicy, TunnelSessionService
from control_plane.services.tunnels import TunnelAccessService, TunnelPolicy
from control_plane.settings import ServerSettings
from edge_agent.protocol.tunnel import TunnelEndpoint

log = logging.getLogger(__name__)

Ready = Callable[[str, int, str], None]  # (host, port, the host key line agents pin) once listening


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_gateway(settings: ServerSettings) -> tuple[TunnelGateway, Callable[[], None]]:
    """The gateway and what closes its database; the database is migrated, nothing listens yet."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    tunnel = settings.tunnel
    policy = TunnelPolicy(
        run_dir=settings.tunnel_run_dir,
        services=frozenset(tunnel.services),
        cloud_services={name: parse_address(address) for name, address in tunnel.cloud_services.items()},
        rotation_grace=timedelta(seconds=tunnel.rotation_grace_s),
    )
    access = TunnelAccessService(TunnelAdmissionRepository(engine), policy, _utc_now)
    options = GatewayOptions(
        host=tunnel.host,
        port=tunnel.port,
        host_key_file=settings.tunnel_host_key_file,
        run_dir=settings.tunnel_run_dir,
        recheck_interval_s=tunnel.recheck_interval_s,
        keepalive_interval_s=tunnel.keepalive_interval_s,
    )
    return TunnelGateway(options, access), engine.dispose


def tunnel_sessions(
    settings: ServerSettings, storage: Storage, audit: AuditService, clock: Callable[[], datetime]
) -> tuple[TunnelSessionService, ServiceSockets]:
    """The sessions operators open to devices' services, and how their bytes reach the gateway's sockets."""
    tunnel = settings.tunnel
    policy = SessionPolicy(
        run_dir=settings.tunnel_run_dir,
        services=frozenset(tunnel.services),
        limits=SessionLimits(
            idle=timedelta(seconds=tunnel.session_idle_timeout_s), absolute=timedelta(seconds=tunnel.session_max_s)
        ),
    )
    repos = storage.repos
    sessions = TunnelSessionService(repos.tunnel_sessions, repos.tunnel_admissions, audit, policy, clock)
    return sessions, ServiceSockets(tunnel.connect_timeout_s, tunnel.read_timeout_s)


def announced_gateway(settings: ServerSettings) -> TunnelEndpoint | None:
    """What enrollment tells devices of the gateway (`tunnel.public_host` set), with the host key they pin."""
    tunnel = settings.tunnel
    if tunnel.public_host is None:
        return None
    port = tunnel.public_port or tunnel.port
    return TunnelEndpoint(host=tunnel.public_host, port=port, host_key=host_key_line(settings))


def host_key_line(settings: ServerSettings) -> str:
    """The public half of the gateway's host key (created if absent), for agents to pin."""
    from control_plane.adapters.tunnel_gateway import load_or_create_host_key

    return public_host_key(load_or_create_host_key(settings.tunnel_host_key_file))


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; the soft limit now in force.

    The gateway holds two descriptors per connected device (its SSH connection and its service's socket), and the
    usual default soft limit (1,024, systemd's included) stops it near 500 devices: accepts then fail in a loop and
    devices time out. asyncio polls with epoll, so nothing needs the low soft limit; the hard limit stays the
    operator's (`LimitNOFILE=`, `ulimit -Hn`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit above the kernel's nr_open
            log.warning("could not raise the open-files limit from %d to %s: %s", soft, hard, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_tunnel_gateway(settings: ServerSettings, ready: Ready) -> None:
    log.info("open-files limit %d: about two per connected device", raise_open_files_limit())
    gateway, dispose = build_gateway(settings)
    try:
        asyncio.run(_serve(gateway, settings, ready))
    finally:
        dispose()


async def _serve(gateway: TunnelGateway, settings: ServerSettings, ready: Ready) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    port = await gateway.start()
    ready(settings.tunnel.host, port, public_host_key(gateway.host_key))
    try:
        await stop.wait()
    finally:
        await gateway.close()
