"""`edgectl login`, `logout`, `whoami`, and `edgectl tokens create|list|revoke` (docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from control_plane.cli import views
from control_plane.cli.client import ApiClient, CliError
from control_plane.cli.credentials import save_config
from control_plane.cli.parsing import parse_duration
from control_plane.cli.state import state_of
from control_plane.domain.identity import Role

tokens_app = typer.Typer(help="Bearer tokens for people, build workers and devices (admin).", no_args_is_help=True)


def login(
    ctx: typer.Context,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="Read the token from a file (e.g. the server's data_dir/admin-token)."),
    ] = None,
) -> None:
    """Check a token against the control plane and save it with the URL (and --ca-file) for later commands (0600).

    The token comes from --token / EDGECTL_TOKEN, --token-file, or a hidden prompt.
    """
    state = state_of(ctx)
    token = state.token_option
    if token is None and token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise CliError(f"{token_file}: cannot read the token: {exc.strerror or exc}") from exc
    if not token:
        token = str(typer.prompt("token", hide_input=True)).strip()
    url = state.url_option or state.url
    with ApiClient(url, token=token, ca_file=state.ca_file) as api:
        me = api.whoami()
    save_config(state.config, url, token, state.ca_file)
    state.output.note(f"logged in to {url} as {me.get('name')} ({me.get('role')}); saved in {state.config}")


def logout(ctx: typer.Context) -> None:
    """Forget the saved token (the URL stays). The token itself stays valid until revoked."""
    state = state_of(ctx)
    saved = state.credentials
    save_config(state.config, saved.url, None, saved.ca_file)
    state.output.note(f"removed the token from {state.config}")


def whoami(ctx: typer.Context) -> None:
    """Show the identity and role the current token acts as, and its permissions."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.whoami(), views.whoami_view)


@tokens_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. ci-deployer or builder-orin-01.")],
    role: Annotated[Role, typer.Option("--role", "-r", help="viewer, operator, admin, builder, device or metrics.")],
    expires_in: Annotated[str, typer.Option("--expires-in", help="Lifetime: 90d, 12h, 30m, 45s, or never.")] = "90d",
    device: Annotated[str | None, typer.Option("--device", help="The device a `device` token belongs to.")] = None,
) -> None:
    """Create a token; its secret is printed once (with --json: the `token` field)."""
    try:
        seconds = parse_duration(expires_in)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires-in") from exc
    body = {"name": name, "role": role.value, "expires_in_s": seconds, "device_id": device}
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.create_token(body), views.token_created_view)


@tokens_app.command("list")
def list_tokens(ctx: typer.Context) -> None:
    """List tokens (never their secrets): role, who created them, expiry, revocation, last use."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.tokens(), views.tokens_view)


@tokens_app.command("revoke")
def revoke(
    ctx: typer.Context, token_id: Annotated[str, typer.Argument(help="Token id (edgectl tokens list).")]
) -> None:
    """Revoke a token: the next request with it is refused."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.revoke_token(token_id), views.token_view)


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)
    app.add_typer(tokens_app, name="tokens")
