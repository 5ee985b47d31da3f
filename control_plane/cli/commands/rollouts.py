"""`edgectl rollout ...`: start a rollout of a model version to the devices a selector picks, and watch it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.live import Live

from control_plane.cli import views
from control_plane.cli.client import CliError
from control_plane.cli.parsing import parse_selectors
from control_plane.cli.state import CliState, state_of
from control_plane.cli.waiting import poll_until

rollout_app = typer.Typer(help="Rollouts of model versions to devices.", no_args_is_help=True)

FINAL_PHASES = ("succeeded", "aborted", "rolled_back")


def rollout_body(
    model: str, version: int, selectors: list[str], gpu_class: str | None, strategy: str
) -> dict[str, Any]:
    """POST /v1/rollouts body; raises ValueError on a malformed selector or two different GPU classes."""
    chosen = parse_selectors(selectors)
    if gpu_class is not None and chosen.gpu_class not in (None, gpu_class):
        raise ValueError(f"--gpu-class {gpu_class} and gpu_class={chosen.gpu_class} in --selector disagree")
    return {
        "model": model,
        "version": version,
        "selector": {"labels": dict(chosen.labels), "gpu_class": gpu_class or chosen.gpu_class},
        "strategy": strategy,
    }


@rollout_app.command("create")
def create(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")],
    version: Annotated[int, typer.Option("--version", "-v", help="Version to roll out.")],
    selector: Annotated[
        list[str] | None,
        typer.Option("--selector", "-l", help="Only devices with these labels: KEY=VALUE[,KEY=VALUE] (repeatable)."),
    ] = None,
    gpu_class: Annotated[str | None, typer.Option("--gpu-class", help="Only devices of this GPU class.")] = None,
    strategy: Annotated[str, typer.Option(help="Rollout strategy.")] = "all-at-once",
    wait: Annotated[bool, typer.Option("--wait", help="Show live progress until the rollout ends.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds.")] = 600.0,
) -> None:
    """Roll a version out to every device the selector picks (all devices when no selector is given)."""
    try:
        body = rollout_body(model, version, selector or [], gpu_class, strategy)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--selector") from exc
    state = state_of(ctx)
    with state.client() as api:
        created = api.create_rollout(body)
    if wait:
        _watch(state, str(created["id"]), timeout)
    else:
        state.output.emit(created, views.rollout_view)


@rollout_app.command("list")
def list_rollouts(ctx: typer.Context) -> None:
    """List rollouts with their phase and per-status device counts."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.rollouts(), views.rollouts_view)


@rollout_app.command("show")
def show(
    ctx: typer.Context,
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Show live per-device status until the rollout ends; exit 1 if it failed.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds.")] = 600.0,
) -> None:
    """Show a rollout with the status of every device it targets."""
    state = state_of(ctx)
    if wait:
        _watch(state, rollout_id, timeout)
        return
    with state.client() as api:
        state.output.emit(api.rollout(rollout_id), views.rollout_view)


def _watch(state: CliState, rollout_id: str, timeout: float) -> None:
    with state.client() as api, Live(console=state.output.err, transient=True) as live:

        def show_live(rollout: Any) -> None:
            if not state.output.as_json:
                live.update(views.rollout_view(rollout))

        final = poll_until(
            lambda: api.rollout(rollout_id),
            lambda r: r.get("phase") in FINAL_PHASES,
            timeout=timeout,
            what=f"rollout {rollout_id} to finish",
            interval=0.5,
            on_update=show_live,
            describe=lambda r: f"phase {r.get('phase')}, {views.counts_text(r.get('counts') or {})}",
        )
    state.output.emit(final, views.rollout_view)
    if final.get("phase") != "succeeded":
        detail = final.get("reason") or views.counts_text(final.get("counts") or {})
        raise CliError(f"rollout {rollout_id} {final.get('phase')}: {detail}")


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout")


from control_plane.cli.commands import rollout_watch  # noqa: E402  (`rollout watch`, in its own module)

rollout_watch.register(rollout_app)
