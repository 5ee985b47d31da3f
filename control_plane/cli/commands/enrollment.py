"""`edgectl enrollment-tokens create|list|revoke` and `edgectl devices approve|deny|labels|enrollments`:
how devices join the fleet (docs/security.md, Devices)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from control_plane.cli import views
from control_plane.cli.commands.devices import devices_app
from control_plane.cli.parsing import parse_duration
from control_plane.cli.state import state_of
from edge_agent.protocol.vocabulary import Channel

tokens_app = typer.Typer(
    help="Enrollment tokens: what `edge-agent enroll` presents to join the fleet (operators).", no_args_is_help=True
)

LabelOption = Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE (repeatable).")]


def parse_labels(items: list[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


@tokens_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. site-a-line-2.")],
    expires_in: Annotated[str, typer.Option("--expires-in", help="Lifetime: 7d, 12h, 30m, or never.")] = "7d",
    max_uses: Annotated[int | None, typer.Option(min=1, help="How many devices it may enroll; default: any.")] = None,
    label: LabelOption = None,
    channel: Annotated[Channel | None, typer.Option(help="Preset channel (default mqtt).")] = None,
    gpu_class: Annotated[str | None, typer.Option(help="GPU class; default: what each device detects.")] = None,
    auto_approve: Annotated[
        bool, typer.Option(help="Enroll new devices at once; without it an operator approves each one.")
    ] = False,
) -> None:
    """Create an enrollment token; its secret is printed once (with --json: the `token` field)."""
    try:
        seconds = parse_duration(expires_in)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires-in") from exc
    body: dict[str, Any] = {
        "name": name,
        "expires_in_s": seconds,
        "max_uses": max_uses,
        "labels": parse_labels(label),
        "channel": channel.value if channel is not None else None,
        "gpu_class": gpu_class,
        "auto_approve": auto_approve,
    }
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.create_enrollment_token(body), views.enrollment_token_created_view)


@tokens_app.command("list")
def list_tokens(ctx: typer.Context) -> None:
    """List enrollment tokens (never their secrets): presets, uses, expiry, revocation."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.enrollment_tokens(), views.enrollment_tokens_view)


@tokens_app.command("revoke")
def revoke(
    ctx: typer.Context, token_id: Annotated[str, typer.Argument(help="Token id (edgectl enrollment-tokens list).")]
) -> None:
    """Revoke an enrollment token: no device enrolls with it any more, and its pending requests are refused."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.revoke_enrollment_token(token_id), views.enrollment_token_view)


@devices_app.command("enrollments")
def enrollments(
    ctx: typer.Context,
    pending: Annotated[bool, typer.Option("--pending", help="Only requests waiting for a decision.")] = False,
) -> None:
    """Devices' enrolled keys and their latest requests (pending ones wait for `edgectl devices approve`)."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.enrollments("pending" if pending else None), views.enrollments_view)


@devices_app.command("approve")
def approve(ctx: typer.Context, device_id: Annotated[str, typer.Argument(help="Device id.")]) -> None:
    """Approve a device's pending enrollment: its key becomes its identity; the agent picks it up when it asks."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.approve_device(device_id), views.enrollment_view)


@devices_app.command("deny")
def deny(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    reason: Annotated[str | None, typer.Option(help="Told to the device and kept.")] = None,
) -> None:
    """Deny a device's pending enrollment: the agent is told and stops asking."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.deny_device(device_id, reason), views.enrollment_view)


@devices_app.command("labels")
def labels(
    ctx: typer.Context, device_id: Annotated[str, typer.Argument(help="Device id.")], label: LabelOption = None
) -> None:
    """Set all of a device's labels (none given: remove them). Labels decide which selectors match a device; what
    the device reports about itself never does."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.set_labels(device_id, parse_labels(label)), views.device_view)


def register(app: typer.Typer) -> None:
    app.add_typer(tokens_app, name="enrollment-tokens")
