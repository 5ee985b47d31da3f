"""The tunnel gateway's composition: its own process (`edgectl tunnel-gateway`), on the control plane's settings
and database, with the SSH server adapter and the access service between them.

It migrates the database like the server does (the same, idempotent upgrade), then serves until SIGINT/SIGTERM.
It starts nothing of the control plane's (no MQTT link, no API, no builders) and decides nothing itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.tunnel_repository import TunnelAdmissionRepository
from control_plane.adapters.tunnel_gateway import GatewayOptions, TunnelGateway, public_host_key
from control_plane.domain.tunnels import parse_address
from control_plane.services.tunnels import TunnelAccessService, TunnelPolicy
from control_plane.settings import ServerSettings

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


def host_key_line(settings: ServerSettings) -> str:
    """The public half of the gateway's host key (created if absent), for agents to pin."""
    from control_plane.adapters.tunnel_gateway import load_or_create_host_key

    return public_host_key(load_or_create_host_key(settings.tunnel_host_key_file))


def run_tunnel_gateway(settings: ServerSettings, ready: Ready) -> None:
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
