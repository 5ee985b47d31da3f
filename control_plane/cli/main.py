"""`edgectl`: the operator's command line over the control plane's REST API (docs/api.md).

Every REST route has a command here. This module only wires the global options (`--url`, `--json`) and the
command groups together, and turns `CliError`s into one-line messages and exit codes (2: server unreachable,
1: request refused or bad input). It must never hold settings in module globals or talk to MQTT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from control_plane.cli.client import DEFAULT_URL, CliError
from control_plane.cli.commands import (
    audit,
    auth,
    broker,
    builders,
    builds,
    certs,
    devices,
    enrollment,
    info,
    models,
    playbooks,
    rollouts,
    server,
    training,
)
from control_plane.cli.demo.command import demo
from control_plane.cli.output import Output
from control_plane.cli.state import CliState


class _ReportingGroup(TyperGroup):
    """Root group: a CliError from any command becomes `error: ...` on stderr and its exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context
        try:
            return super().invoke(ctx)
        except CliError as exc:
            state = ctx.obj
            output = state.output if isinstance(state, CliState) else Output()
            output.error(str(exc))
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_ReportingGroup,
    name="edgectl",
    help="Operate the edge model deployment control plane: models, builds, devices, rollouts, training.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


@app.callback()
def _global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", envvar="EDGECTL_URL", help=f"Base URL of the control plane's REST API [default: {DEFAULT_URL}]."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="EDGECTL_TOKEN",
            help="Bearer token (else the one `edgectl login` saved).",
            show_default=False,
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            envvar="EDGECTL_CA_FILE",
            help="CA to verify an https:// control plane with (its data_dir/pki/ca.pem); else the system's roots.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the server's answer as JSON (for scripts) instead of tables.")
    ] = False,
) -> None:
    ctx.obj = CliState(url_option=url, output=Output(as_json=as_json), token_option=token, ca_file_option=ca_file)


info.register(app)
auth.register(app)
certs.register(app)
server.register(app)
models.register(app)
builds.register(app)
builders.register(app)
broker.register(app)
devices.register(app)
enrollment.register(app)
rollouts.register(app)
training.register(app)
playbooks.register(app)
audit.register(app)
app.command("demo")(demo)


if __name__ == "__main__":
    app()
