"""`edgectl build`, `builds`, `builds show|logs|cancel`, `artifacts get`: build a version per GPU class, follow
the builds, cancel one, and fetch artifacts. Builds are asynchronous on the server; `--wait` polls them here (with
a deadline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TransferSpeedColumn
from rich.text import Text
from typer.core import TyperGroup

from control_plane.cli import views
from control_plane.cli.client import ApiClient, CliError
from control_plane.cli.output import Output
from control_plane.cli.state import state_of
from control_plane.cli.waiting import poll_until


class _DefaultListGroup(TyperGroup):
    """`edgectl builds NAME VERSION` is short for `edgectl builds list NAME VERSION`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's vendored click Context
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


builds_app = typer.Typer(
    cls=_DefaultListGroup,
    help="Builds of a model version: `edgectl builds NAME VERSION` lists them, `builds show ID` shows one.",
    no_args_is_help=True,
)
artifacts_app = typer.Typer(help="Build artifacts (content-addressed by sha256).", no_args_is_help=True)


def build(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version number.")],
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            help="GPU class to build for (repeat; see `edgectl targets`). Default: the enrolled devices' classes.",
        ),
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", "-k", help="onnx (default), onnx-fp16, onnx-int8-qdq, tensorrt-plan (repeat)."),
    ] = None,
    precision: Annotated[
        list[str] | None, typer.Option("--precision", "-p", help="fp32, fp16, int8 (repeat; default: the kind's).")
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option("--calibration", help="Calibration inputs (.npz) for int8 builds; uploaded first.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the builds until each has finished.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits at most.")] = 1800.0,
) -> None:
    """Queue builds of a model version for GPU classes (and kinds/precisions); --wait follows them.

    Without --target it builds for the GPU classes the enrolled devices have, and says which."""
    state = state_of(ctx)
    with state.client() as api:
        calibration_sha = None
        if calibration is not None:
            calibration_sha = str(api.upload_calibration(name, version, calibration)["sha256"])
        created = api.create_builds(
            name, version, list(dict.fromkeys(target or [])), list(kind or []), list(precision or []), calibration_sha
        )
        if created.get("targets_from_fleet"):
            chosen = ", ".join(created.get("targets") or [])
            state.output.note(f"no --target given: building for the GPU classes of the enrolled devices: {chosen}")
        for skipped in created.get("skipped") or []:
            state.output.note(
                f"skipped {skipped['target']} {skipped['kind']} {skipped['precision']}: {skipped['reason']}"
            )
        if not wait:
            state.output.emit(created, views.builds_created_view)
            return
        finals = follow_builds(api, [str(b["id"]) for b in created.get("builds") or []], state.output, timeout)
    state.output.emit(finals, views.builds_view)
    bad = [b for b in finals if b.get("status") != "succeeded"]
    if bad:
        raise CliError("; ".join(views.build_line(b) for b in bad))


def follow_builds(api: ApiClient, build_ids: list[str], output: Output, timeout: float) -> list[dict[str, Any]]:
    """Poll the builds until all have finished, one live line each (queued, waiting for builder X, running...)."""
    if not build_ids:
        return []
    with Progress(SpinnerColumn(), "{task.description}", console=output.err, disable=output.as_json) as progress:
        tasks = {b: progress.add_task(b, total=None) for b in build_ids}

        def show(builds: list[dict[str, Any]]) -> None:
            for b in builds:
                progress.update(tasks[str(b["id"])], description=views.build_line(b))

        finals: list[dict[str, Any]] = poll_until(
            lambda: [api.build(b) for b in build_ids],
            lambda bs: all(b.get("status") in views.FINISHED_BUILD for b in bs),
            timeout=timeout,
            what=f"{len(build_ids)} build(s) to finish",
            interval=0.5,
            on_update=show,
            describe=lambda bs: "; ".join(views.build_line(b) for b in bs),
        )
    return finals


@builds_app.command("list")
def list_builds(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version number.")],
) -> None:
    """List the builds of a model version."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.builds(name, version), views.builds_view)


@builds_app.command("show")
def show_build(ctx: typer.Context, build_id: Annotated[str, typer.Argument(help="Build id.")]) -> None:
    """Show one build: status, parity and latency reports, and its signed manifest."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.build(build_id), views.build_view)


@builds_app.command("cancel")
def cancel_build(ctx: typer.Context, build_id: Annotated[str, typer.Argument(help="Build id.")]) -> None:
    """Cancel a queued, waiting or running build; its builder stops at its next heartbeat."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.cancel_build(build_id), views.build_view)


@builds_app.command("logs")
def build_logs(ctx: typer.Context, build_id: Annotated[str, typer.Argument(help="Build id.")]) -> None:
    """Print a build's log (claims, progress messages, verdict)."""
    state = state_of(ctx)
    with state.client() as api:
        text = api.build_logs(build_id)
    state.output.emit({"build_id": build_id, "log": text}, lambda d: Text(d["log"] or "(no log yet)"))


@artifacts_app.command("get")
def get_artifact(
    ctx: typer.Context,
    sha256: Annotated[str, typer.Argument(help="The artifact's sha256 (from `edgectl builds show`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the file.")],
) -> None:
    """Download an artifact, with a progress bar."""
    state = state_of(ctx)
    with state.client() as api, _progress(state.output.as_json) as progress:
        task = progress.add_task(f"{sha256[:12]}", total=None)

        def advance(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        size = api.download(f"/v1/artifacts/{sha256}", output, advance, expected_sha256=sha256)
    result: dict[str, Any] = {"sha256": sha256, "path": str(output), "bytes": size}
    state.output.emit(result, lambda d: f"wrote {d['bytes']} bytes to {d['path']}")


def _progress(quiet: bool) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        disable=quiet,
    )


def register(app: typer.Typer) -> None:
    app.command("build")(build)
    app.add_typer(builds_app, name="builds")
    app.add_typer(artifacts_app, name="artifacts")
