"""`edgectl tunnel ...`: reach a device's service through its tunnel (`open`), and the sessions that opens (`list`,
`show`, `close`). docs/tunnels.md.

`open` forwards raw TCP: a local port on 127.0.0.1 (each connection one session) or stdin/stdout (`--stdio`, one
session: an SSH ProxyCommand). The HTTP proxy needs no command: `curl $URL/v1/devices/ID/services/kserve/...`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from control_plane.cli import views
from control_plane.cli.client import tls_verify
from control_plane.cli.state import state_of
from control_plane.cli.tunnel_forward import Endpoint, serve_port, serve_stdio

tunnel_app = typer.Typer(
    help="Devices' services through their tunnels: `open` forwards TCP, `list` and `close` the sessions.",
    no_args_is_help=True,
)


@tunnel_app.command("open")
def open_tunnel(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    service: Annotated[str, typer.Argument(help="A service the device exposes (tunnel.services: kserve, ssh, ...).")],
    local_port: Annotated[
        int | None,
        typer.Option("--local-port", "-p", min=0, max=65535, help="Listen on 127.0.0.1:N (0: any free port)."),
    ] = None,
    stdio: Annotated[
        bool, typer.Option("--stdio", help="One connection on stdin/stdout, e.g. ssh -o ProxyCommand='edgectl ...'.")
    ] = False,
) -> None:
    """Forward raw TCP to SERVICE on DEVICE through the control plane (your token needs `tunnel:use`: operator or
    admin). Each connection is a session the control plane records (`edgectl tunnel list`) and may end (idle or
    absolute timeout, `edgectl tunnel close`); when either side closes, the other is closed too.

    \b
    edgectl tunnel open dev-17 kserve --local-port 8500      # then: curl localhost:8500/v2/health/ready
    ssh -o ProxyCommand='edgectl tunnel open %n ssh --stdio' root@dev-17
    """
    if (local_port is None) == (not stdio):
        raise typer.BadParameter("give one of --local-port N or --stdio", param_hint="--local-port / --stdio")
    state = state_of(ctx)
    endpoint = Endpoint(state.url, device_id, service, state.token, tls_verify(state.ca_file))
    if stdio:
        if asyncio.run(serve_stdio(endpoint, _say)):
            raise typer.Exit(1)  # the control plane ended the session (timeout, closed by an operator, device gone)
        return
    assert local_port is not None
    asyncio.run(serve_port(endpoint, local_port, _say))


def _say(line: str) -> None:
    typer.echo(line, err=True)


@tunnel_app.command("list")
def list_sessions(
    ctx: typer.Context,
    include_closed: Annotated[bool, typer.Option("--all", "-a", help="Closed sessions too (the history).")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show at most N sessions (default: all).")] = None,
) -> None:
    """List tunnel sessions, newest first: the open ones (who, device, service, bytes each way so far), or with
    --all every one recorded, with how it ended."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit_pages(api.tunnel_session_pages(include_closed, limit), views.tunnel_sessions_view)


@tunnel_app.command("show")
def show(ctx: typer.Context, session_id: Annotated[str, typer.Argument(help="Session id.")]) -> None:
    """Show one session: who, what, when, bytes each way, duration, how it ended."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.tunnel_session(session_id), views.tunnel_session_view)


@tunnel_app.command("close")
def close(ctx: typer.Context, session_id: Annotated[str, typer.Argument(help="Session id.")]) -> None:
    """Close an open session: its connection is cut at once and its record says `closed by operator`."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.close_tunnel_session(session_id), views.tunnel_session_view)


def register(app: typer.Typer) -> None:
    app.add_typer(tunnel_app, name="tunnel")
