"""`edgectl server` (run the control plane) and `edgectl config-help` (every setting and its env var).

Settings are built here, once, from the config file, the `EDGE_CP_*` environment and the flags, then passed to
the server; nothing below reads the environment again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from rich.text import Text

from control_plane.cli import views
from control_plane.cli.client import CliError
from control_plane.cli.state import state_of
from control_plane.settings import ServerSettings

ENV_PREFIX = "EDGE_CP_"


def server(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings file (see `edgectl config-help`).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (EDGE_CP_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (EDGE_CP_PORT).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Database, artifacts, signing key (EDGE_CP_DATA_DIR).")
    ] = None,
) -> None:
    """Run the control plane: REST API + MQTT link, until Ctrl-C.

    Settings come from --config FILE, then environment variables EDGE_CP_* (nested with "__", e.g.
    EDGE_CP_MQTT__HOST, EDGE_CP_MQTT__PORT, EDGE_CP_MQTT__USERNAME, EDGE_CP_MQTT__PASSWORD), then these flags.
    Run `edgectl config-help` for every setting with its env var and description.
    """
    overrides = {k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items() if v is not None}
    settings = load_settings(config, overrides)
    from control_plane.api.server import serve  # imported late: `edgectl` commands must not pay for it

    serve(settings)


def load_settings(config: Path | None, overrides: dict[str, Any]) -> ServerSettings:
    if config is not None and not config.is_file():
        raise CliError(f"{config}: no such settings file")
    try:
        return ServerSettings.load(config, **overrides)
    except ValidationError as exc:
        where = str(config) if config is not None else "settings"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or '(root)'}: {e.get('msg')}" for e in exc.errors()
        )
        raise CliError(f"{where}: {problems}") from exc
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from exc


def setting_rows(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[dict[str, str]]:
    """One row per leaf setting: dotted name, env var, type, default, description."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from setting_rows(annotation, (*path, name))
            continue
        yield _row((*path, name), info)


def _row(path: tuple[str, ...], info: FieldInfo) -> dict[str, str]:
    default = info.get_default(call_default_factory=True)
    annotation = info.annotation
    type_name = getattr(annotation, "__name__", None) or str(annotation).replace("pathlib.", "")
    return {
        "setting": ".".join(path),
        "env": ENV_PREFIX + "__".join(p.upper() for p in path),
        "type": type_name,
        "default": views.cell(getattr(default, "value", default)),
        "description": info.description or "",
    }


def settings_text(rows: list[dict[str, str]]) -> Text:
    """One block per setting: key, env var, type and default on a line, then the description indented."""
    out = Text()
    out.append("Control-plane settings, set in a YAML file (edgectl server --config FILE)\n")
    out.append("or as environment variables; the environment wins over the file.\n\n")
    for row in rows:
        out.append(row["setting"], style="bold")
        out.append(f"  {row['env']}", style="cyan")
        out.append(f"  ({row['type']}, default {row['default']})\n", style="dim")
        if row["description"]:
            out.append(f"    {row['description']}\n")
    return out


def config_help(ctx: typer.Context) -> None:
    """Print every control-plane setting: YAML key, environment variable, type, default and meaning."""
    state_of(ctx).output.emit(list(setting_rows(ServerSettings)), settings_text)


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    app.command("config-help")(config_help)
