"""`edgectl`: the operator's command line over the control plane's REST API (docs/api.md).

Every REST route has a command here. This module only wires the global options (`--url`, `--json`) and the
command groups together, gives every command that prints a result its `-o json|yaml|wide` (control_plane/cli/
output.py decides the format), and turns `CliError`s into one-line messages and exit codes (2: server unreachable,
1: request refused or bad input), a refusal naming an unknown name with the closest known ones. It must never hold
settings in module globals or talk to MQTT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from control_plane.cli import suggestions, views
from control_plane.cli.client import DEFAULT_URL, CliError, RequestRejected
from control_plane.cli.commands import (
    audit,
    auth,
    broker,
    builders,
    builds,
    certs,
    completion,
    devices,
    enrollment,
    info,
    models,
    playbooks,
    rollouts,
    server,
    training,
    tunnel,
    tunnel_sessions,
)
from control_plane.cli.demo.command import demo_app
from control_plane.cli.output import OUTPUT_HELP, Output, OutputFormat, add_output_option
from control_plane.cli.state import CliState

# Commands that print no result of their own, so `-o` would mean nothing there.
NO_RESULT = frozenset(
    {
        "server",
        "login",
        "logout",
        "build-worker",
        "completion",
        "demo",
        "devices forget",
        "tunnel-gateway",
        "tunnel open",
    }
)


class _ReportingGroup(TyperGroup):
    """Root group: every result-printing command gets `-o`; a CliError from any command becomes `error: ...` on
    stderr (with "did you mean" when it names an unknown thing) and its exit code."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        add_output_option(self, NO_RESULT)

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context
        try:
            return super().invoke(ctx)
        except CliError as exc:
            state = ctx.obj
            output = state.output if isinstance(state, CliState) else Output()
            message = str(exc)
            if isinstance(exc, RequestRejected) and isinstance(state, CliState):
                message = suggestions.explain(exc, state.client)
            output.error(message)
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
    as_json: Annotated[bool, typer.Option("--json", help="Same as -o json (kept for scripts that use it).")] = False,
    output_format: Annotated[
        OutputFormat | None, typer.Option("--output", "-o", help=OUTPUT_HELP + " Also after any command.")
    ] = None,
) -> None:
    chosen = output_format or (OutputFormat.JSON if as_json else OutputFormat.TABLE)
    output = Output(format=chosen, wide_views=views.WIDE_VIEWS)
    ctx.obj = CliState(url_option=url, output=output, token_option=token, ca_file_option=ca_file)


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
completion.register(app)
tunnel.register(app)
tunnel_sessions.register(app)
app.add_typer(demo_app, name="demo")


if __name__ == "__main__":
    app()
