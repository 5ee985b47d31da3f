"""`edgectl status`, `keys`, `targets`: read-only facts about the control plane."""

from __future__ import annotations

from typing import Annotated

import typer

from control_plane.cli import views
from control_plane.cli.state import state_of


def status(
    ctx: typer.Context,
    ingest: Annotated[
        bool,
        typer.Option("--ingest", help="Also what the ingest queue did (GET /v1/status)."),
    ] = False,
) -> None:
    """Show whether the control plane answers and whether it is connected to the MQTT broker (GET /healthz)."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.status() if ingest else api.health(), views.health_view)


def keys(ctx: typer.Context) -> None:
    """Show the public key that signs desired states and manifests (pin it in each agent.yaml)."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.signing_key(), views.key_view)


def targets(ctx: typer.Context) -> None:
    """List the GPU classes models can be built for (model_builds/targets/*.yaml)."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.targets(), views.targets_view)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("keys")(keys)
    app.command("targets")(targets)
