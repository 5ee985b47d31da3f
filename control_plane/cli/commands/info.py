"""`edgectl status`, `keys`, `targets`: read-only facts about the control plane."""

from __future__ import annotations

from typing import Annotated, Any

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
    """Show whether the control plane answers and whether it is connected to the MQTT broker (GET /healthz).

    Exit 0 when healthy; 1 when the control plane answers but is degraded (it cannot reach its broker: devices
    get nothing and report nothing), with the broker and since when; 2 when it cannot be reached at all."""
    state = state_of(ctx)
    with state.client() as api:
        health = api.status() if ingest else api.health()
    state.output.emit(health, views.health_view)
    if isinstance(health, dict) and health.get("status") != "ok":
        state.output.note(f"degraded: {_degraded_reason(health)}")
        raise typer.Exit(DEGRADED_EXIT)


DEGRADED_EXIT = 1  # the CLI's "it answered, and the answer is a failure" (docs: README "Exit codes")


def _degraded_reason(health: dict[str, Any]) -> str:
    if health.get("mqtt_connected") is False:
        since = f" since {health['since']}" if health.get("since") else ""
        broker = f" ({health['broker']})" if health.get("broker") else ""
        return f"broker unreachable{since}{broker}"
    return str(health.get("reason") or health.get("status"))


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
