"""`edgectl devices ...`: the fleet as the control plane sees it (presence, hardware, reported state, events)."""

from __future__ import annotations

from typing import Annotated

import typer

from control_plane.cli import views
from control_plane.cli.parsing import parse_selectors
from control_plane.cli.state import state_of

devices_app = typer.Typer(help="Enrolled edge devices.", no_args_is_help=True)


@devices_app.command("list")
def list_devices(
    ctx: typer.Context,
    selector: Annotated[
        list[str] | None,
        typer.Option("--selector", "-l", help="Label filter KEY=VALUE[,KEY=VALUE] (repeatable; gpu_class=C too)."),
    ] = None,
) -> None:
    """List devices, optionally only those matching a label selector."""
    try:
        chosen = parse_selectors(selector or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--selector") from exc
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.devices(chosen.as_text()), views.devices_view)


@devices_app.command("show")
def show(ctx: typer.Context, device_id: Annotated[str, typer.Argument(help="Device id.")]) -> None:
    """Show one device: presence, hardware facts, labels and its reported state."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.device(device_id), views.device_view)


@devices_app.command("events")
def events(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many events, newest first.")] = 50,
) -> None:
    """Show a device's apply events (downloading, verified, activated, rolled_back, ...), newest first."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.device_events(device_id, limit), views.events_view)


def register(app: typer.Typer) -> None:
    app.add_typer(devices_app, name="devices")
