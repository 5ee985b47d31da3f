"""`edgectl rollout ...`: start a rollout of a model version to the devices a selector picks, and watch it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live

from control_plane.cli import views
from control_plane.cli.client import CliError
from control_plane.cli.parsing import load_rollout_spec, parse_amount, parse_selectors, validate_rollout
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
        "strategy": {"type": strategy},
    }


@dataclass(frozen=True)
class StagingFlags:
    """What `rollout create` flags say about steps and gates (None/empty: the server's default)."""

    canary: str | None = None
    canary_labels: tuple[str, ...] = ()
    waves: tuple[str, ...] = ()
    bake_s: float | None = None
    max_unavailable: str | None = None
    device_deadline_s: float | None = None
    kind: str | None = None
    precision: str | None = None
    gate_max_failed: str | None = None
    gate_min_requests: int | None = None
    gate_max_error_rate: float | None = None
    gate_max_p99_ms: float | None = None
    gate_max_p99_ratio: float | None = None
    on_fail: str | None = None


def apply_staging(body: dict[str, Any], flags: StagingFlags) -> dict[str, Any]:
    """The body with the strategy, bake, bounds and gates the flags give; raises ValueError on a bad amount."""
    out = dict(body)
    if flags.canary is not None or flags.waves:
        canary = parse_amount(flags.canary or "1") | {"labels": dict(parse_selectors(list(flags.canary_labels)).labels)}
        out["strategy"] = {"type": "canary", "canary": canary, "waves": [parse_amount(w) for w in flags.waves]}
    simple = {"bake_s": flags.bake_s, "device_deadline_s": flags.device_deadline_s, "kind": flags.kind,
              "precision": flags.precision}  # fmt: skip
    out |= {key: value for key, value in simple.items() if value is not None}
    if flags.max_unavailable is not None:
        out["max_unavailable"] = parse_amount(flags.max_unavailable)
    gates: dict[str, Any] = {
        "min_requests": flags.gate_min_requests,
        "max_error_rate": flags.gate_max_error_rate,
        "max_p99_ms": flags.gate_max_p99_ms,
        "max_p99_ratio": flags.gate_max_p99_ratio,
        "on_fail": flags.on_fail,
        "max_failed": parse_amount(flags.gate_max_failed) if flags.gate_max_failed is not None else None,
    }
    if any(value is not None for value in gates.values()):
        out["gates"] = {key: value for key, value in gates.items() if value is not None}
    return out


@rollout_app.command("create")
def create(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name.")] = None,
    version: Annotated[int | None, typer.Option("--version", "-v", help="Version to roll out.")] = None,
    selector: Annotated[
        list[str] | None,
        typer.Option("--selector", "-l", help="Only devices with these labels: KEY=VALUE[,KEY=VALUE] (repeatable)."),
    ] = None,
    gpu_class: Annotated[str | None, typer.Option("--gpu-class", help="Only devices of this GPU class.")] = None,
    spec: Annotated[
        Path | None, typer.Option("--spec", help="A whole RolloutRequest in YAML (docs/rollouts.md); no other flags.")
    ] = None,
    canary: Annotated[str | None, typer.Option(help="Canary size: a count (1) or a percentage (10%).")] = None,
    canary_label: Annotated[
        list[str] | None, typer.Option("--canary-label", help="Pick the canary among devices with KEY=VALUE.")
    ] = None,
    wave: Annotated[
        list[str] | None, typer.Option("--wave", help="A wave after the canary: count or percentage (repeatable).")
    ] = None,
    bake: Annotated[float | None, typer.Option("--bake", help="Seconds each step bakes before its gate.")] = None,
    max_unavailable: Annotated[
        str | None, typer.Option("--max-unavailable", help="At most this many devices updating at once (3 or 10%).")
    ] = None,
    device_deadline: Annotated[
        float | None, typer.Option("--device-deadline", help="Seconds a device may take before it counts as timed out.")
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this artifact kind (e.g. onnx-int8-qdq).")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="Only this precision.")] = None,
    gate_max_failed: Annotated[
        str | None, typer.Option("--gate-max-failed", help="Failed/timed-out devices a step tolerates (2 or 5%).")
    ] = None,
    gate_min_requests: Annotated[
        int | None, typer.Option("--gate-min-requests", help="Requests a step must serve before telemetry gates pass.")
    ] = None,
    gate_max_error_rate: Annotated[
        float | None, typer.Option("--gate-max-error-rate", help="Largest error rate of the new version (0..1).")
    ] = None,
    gate_max_p99_ms: Annotated[float | None, typer.Option("--gate-max-p99-ms", help="Largest p99 latency.")] = None,
    gate_max_p99_ratio: Annotated[
        float | None, typer.Option("--gate-max-p99-ratio", help="Largest p99 relative to the replaced version.")
    ] = None,
    on_fail: Annotated[str | None, typer.Option("--on-fail", help="When a gate fails: pause or abort.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show live progress until the rollout ends.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds.")] = 600.0,
) -> None:
    """Roll a version out: all at once, or a canary then waves, with bake times and gates.

    Example: edgectl rollout create -m demo -v 2 --canary 1 --wave 50% --wave 50% --bake 60
    --gate-min-requests 100 --gate-max-p99-ratio 1.5 --on-fail abort --wait
    """
    flags = StagingFlags(
        canary, tuple(canary_label or ()), tuple(wave or ()), bake, max_unavailable, device_deadline, kind, precision,
        gate_max_failed, gate_min_requests, gate_max_error_rate, gate_max_p99_ms, gate_max_p99_ratio, on_fail,
    )  # fmt: skip
    body = _body(spec, model, version, selector or [], gpu_class, flags)
    state = state_of(ctx)
    with state.client() as api:
        created = api.create_rollout(body)
    if wait:
        _watch(state, str(created["id"]), timeout)
    else:
        state.output.emit(created, views.rollout_view)


def _body(
    spec: Path | None,
    model: str | None,
    version: int | None,
    selectors: list[str],
    gpu_class: str | None,
    flags: StagingFlags,
) -> dict[str, Any]:
    if spec is not None:
        if model is not None or version is not None or selectors or gpu_class is not None or flags != StagingFlags():
            raise typer.BadParameter("--spec holds the whole rollout; give no other rollout flags", param_hint="--spec")
        return load_rollout_spec(spec)
    if model is None or version is None:
        raise typer.BadParameter("give --model and --version (or --spec FILE)", param_hint="--model/--version")
    try:
        body = rollout_body(model, version, selectors, gpu_class, "all-at-once")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--selector") from exc
    try:
        body = apply_staging(body, flags)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--canary/--wave/--max-unavailable/--gate-max-failed") from exc
    return validate_rollout(body, "rollout flags")


def _command(ctx: typer.Context, rollout_id: str, command: str) -> None:
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.rollout_command(rollout_id, command), views.rollout_view)


@rollout_app.command("pause")
def pause(ctx: typer.Context, rollout_id: Annotated[str, typer.Argument(help="Rollout id.")]) -> None:
    """Pause a rollout: no new device is moved until `resume`."""
    _command(ctx, rollout_id, "pause")


@rollout_app.command("resume")
def resume(ctx: typer.Context, rollout_id: Annotated[str, typer.Argument(help="Rollout id.")]) -> None:
    """Resume a paused rollout (after a gate paused it, this overrides the gate and moves to the next step)."""
    _command(ctx, rollout_id, "resume")


@rollout_app.command("abort")
def abort(ctx: typer.Context, rollout_id: Annotated[str, typer.Argument(help="Rollout id.")]) -> None:
    """Abort a rollout: every device already moved goes back to the build it ran before."""
    _command(ctx, rollout_id, "abort")


@rollout_app.command("rollback")
def rollback(ctx: typer.Context, rollout_id: Annotated[str, typer.Argument(help="Rollout id.")]) -> None:
    """Roll a succeeded rollout back: every device returns to the build it ran before."""
    _command(ctx, rollout_id, "rollback")


@rollout_app.command("list")
def list_rollouts(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Show at most this many, newest first (default: all, read in pages).")
    ] = None,
) -> None:
    """List rollouts, newest first, with their phase and per-status device counts (restored ones included)."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.rollouts(limit), views.rollouts_view)


@rollout_app.command("show")
def show(
    ctx: typer.Context,
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Show live per-device status until the rollout ends; exit 1 if it failed.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds.")] = 600.0,
    cursor: Annotated[
        str | None, typer.Option(help="Show the page of devices after this one (the cursor the previous page printed).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, max=1000, help="Devices per page (default 100).")] = None,
) -> None:
    """Show a rollout: its steps (devices by status, bake time left, gate values against their thresholds,
    verdicts), the devices it waits for and why, and a page of its devices, by device id."""
    state = state_of(ctx)
    if wait:
        _watch(state, rollout_id, timeout)
        return
    with state.client() as api:
        state.output.emit(api.rollout(rollout_id, cursor, limit), views.rollout_view)


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
