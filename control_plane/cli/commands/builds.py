"""`edgectl build`, `builds`, `builds show`, `artifacts get`: build a version per GPU class and fetch artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from typer.core import TyperGroup

from control_plane.cli import views
from control_plane.cli.state import state_of


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
        list[str], typer.Option("--target", "-t", help="GPU class to build for (repeat; see `edgectl targets`).")
    ],
) -> None:
    """Build a model version for one or more GPU classes."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.create_builds(name, version, list(dict.fromkeys(target))), views.builds_view)


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
    """Show one build with its signed manifest."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.build(build_id), views.build_view)


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
