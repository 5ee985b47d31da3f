"""`edgectl models ...`: the model registry (list, show, push a version with its external data, versions, delete,
reference samples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.cli import views
from control_plane.cli.client import CliError
from control_plane.cli.state import state_of

models_app = typer.Typer(help="Models and their immutable versions.", no_args_is_help=True)


@models_app.command("list")
def list_models(ctx: typer.Context) -> None:
    """List the registered models with their latest version."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.models(), views.models_view)


@models_app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="Show this version instead.")] = None,
) -> None:
    """Show a model, or one of its versions with inputs, outputs, metrics and lineage."""
    state = state_of(ctx)
    with state.client() as api:
        if version is None:
            state.output.emit(api.model(name), views.model_view)
        else:
            state.output.emit(api.version(name, version), views.version_view)


@models_app.command("versions")
def versions(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """List the versions of a model."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.versions(name), views.versions_view)


def _existing(path: Path | None, what: str) -> Path | None:
    if path is not None and not path.is_file():
        raise CliError(f"{what} {path}: no such file")
    return path


def _metadata_text(path: Path | None) -> str | None:
    if path is None:
        return None
    text = path.read_text()
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise CliError(f'{path}: expected a JSON object like {{"lineage": {{...}}, "metrics": {{...}}}}')
    return text


@models_app.command("push")
def push(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name (created on first push).")],
    model: Annotated[Path, typer.Argument(help="The ONNX file.")],
    samples: Annotated[
        Path | None, typer.Option(help="Sample inputs (.npz with `input:NAME` arrays; may add `output:NAME`).")
    ] = None,
    metadata: Annotated[Path | None, typer.Option(help='JSON file: {"lineage": {...}, "metrics": {...}}.')] = None,
) -> None:
    """Upload an ONNX file as the next version of NAME (the server validates it and computes references).

    A model exported with its weights in external data files (torch.onnx.export's default: `model.onnx` plus
    `model.onnx.data`) is sent with the files it names, found next to it; the server stores it as one file."""
    _existing(model, "model")
    _existing(samples, "samples")
    _existing(metadata, "metadata")
    text = _metadata_text(metadata)
    external = _external_data(model)
    state = state_of(ctx)
    for location, _ in external:
        state.output.note(f"sending external data {location} with {model.name}")
    with state.client() as api:
        created = api.push_version(name, model, samples, text, external)
    state.output.emit(created, views.version_view)


def _external_data(model: Path) -> list[tuple[str, Path]]:
    """The external data files `model` names (relative to its folder), refused before anything is sent when a
    location leaves that folder or a file is missing. A file that is not ONNX at all is sent as it is: the server's
    validation says what is wrong with it."""
    # Imported here: onnx is needed only by a push, not by every other `edgectl` command.
    from model_builds.external_data import referenced_locations
    from model_builds.onnx_model import InvalidModel

    try:
        locations = referenced_locations(model)
    except InvalidModel as exc:
        raise CliError(f"{model}: {exc}") from exc
    found: list[tuple[str, Path]] = []
    for location in locations or []:
        path = model.parent / location
        if not path.is_file():
            raise CliError(
                f"{model} keeps tensors in the external data file {location!r}, but {path} does not exist; "
                "put it next to the model (as the exporter wrote it) and push again"
            )
        found.append((location, path))
    return found


@models_app.command("delete")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="Delete only this version.")] = None,
) -> None:
    """Delete a model version, or the whole model, with its builds and their artifacts.

    Refused (exit 1, naming what holds it) while an unfinished rollout uses it or a device's desired or reported
    state names it: finish or abort the rollout, or move the devices to another version first."""
    state = state_of(ctx)
    with state.client() as api:
        deleted = api.delete_model(name, version)
    state.output.emit(deleted, _deleted_line)


def _deleted_line(d: dict[str, Any]) -> str:
    what = f"{d['model']} v{d['version']}" if d.get("version") is not None else f"model {d['model']}"
    return f"deleted {what}: {d['versions']} version(s), {d['builds']} build(s), {d['artifacts']} artifact(s) removed"


@models_app.command("samples")
def samples(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version number.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .npz.")],
) -> None:
    """Download a version's sample inputs and reference outputs (.npz)."""
    state = state_of(ctx)
    with state.client() as api:
        data = api.samples(name, version)
    output.write_bytes(data)
    state.output.emit({"path": str(output), "bytes": len(data)}, lambda d: f"wrote {d['bytes']} bytes to {d['path']}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
