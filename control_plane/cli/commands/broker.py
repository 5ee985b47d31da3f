"""`edgectl broker show|reconcile`: the broker's per-device accounts (docs/security.md, "Broker identity")."""

from __future__ import annotations

import typer

from control_plane.cli import views
from control_plane.cli.state import state_of

broker_app = typer.Typer(help="The broker's per-device accounts (mqtt.admin: dynsec).", no_args_is_help=True)


@broker_app.command("show")
def show(ctx: typer.Context) -> None:
    """Who administers the broker's accounts, and what the latest reconcile changed."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.get("/v1/broker"), views.broker_view)


@broker_app.command("reconcile")
def reconcile(ctx: typer.Context) -> None:
    """Make the broker's clients equal the control plane's own and the active devices' (any other is deleted)."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.post("/v1/broker/reconcile", {}), views.reconcile_view)


def register(app: typer.Typer) -> None:
    app.add_typer(broker_app, name="broker")
