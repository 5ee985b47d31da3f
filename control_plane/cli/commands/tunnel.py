"""`edgectl tunnel-gateway`: run the tunnel gateway, the SSH endpoint every device keeps one connection to.

Settings come as for `edgectl server` (--config FILE, EDGE_CP_* variables, these flags), built once here and passed
down. The command prints where it listens and the host key agents must pin, then serves until Ctrl-C. It never
talks to the REST API: it reads the control plane's database (docs/tunnels.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.cli.client import CliError
from control_plane.cli.commands.server import load_settings


def tunnel_gateway(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings file (see `edgectl config-help`).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (EDGE_CP_TUNNEL__HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="SSH port to listen on (EDGE_CP_TUNNEL__PORT).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="The control plane's data dir (EDGE_CP_DATA_DIR).")
    ] = None,
    print_host_key: Annotated[
        bool,
        typer.Option("--print-host-key", help="Print the host key line agents pin (tunnel.host_key) and exit."),
    ] = False,
) -> None:
    """Run the tunnel gateway: enrolled devices connect out to it over SSH, each with its own key, and expose
    their services; revoking a device (`edgectl devices revoke`) closes its tunnel within a second.

    It reads the control plane's database (same --config / data_dir as `edgectl server`). The host key is created
    on first start (data_dir/tunnel_host_key, mode 0600). Agents pin its public half: handed out at enrollment
    when the server sets `tunnel.public_host`, or given by hand as `tunnel.host_key`.
    """
    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
    tunnel = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = load_settings(config, overrides)
    if tunnel:
        settings = settings.model_copy(update={"tunnel": settings.tunnel.model_copy(update=tunnel)})
    from control_plane.runtime.tunnels import host_key_line, run_tunnel_gateway  # late: other commands skip it

    try:
        if print_host_key:
            typer.echo(host_key_line(settings))
            return
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        run_tunnel_gateway(settings, _announce)
    except PermissionError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"the tunnel gateway cannot listen: {exc}") from exc


def _announce(host: str, port: int, host_key: str) -> None:
    typer.echo(f"tunnel gateway listening on {host}:{port}", err=True)
    typer.echo(f"agents pin this host key (tunnel.host_key): {host_key}", err=True)


def register(app: typer.Typer) -> None:
    app.command("tunnel-gateway")(tunnel_gateway)
