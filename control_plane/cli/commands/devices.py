"""`edgectl devices ...`: the fleet as the control plane sees it (presence, hardware, reported state, events)."""

from __future__ import annotations

from itertools import chain
from typing import Annotated, Any

import typer

from control_plane.cli import views
from control_plane.cli.client import CHUNK_SIZE, ApiClient, CliError, RequestRejected
from control_plane.cli.parsing import parse_selectors
from control_plane.cli.state import state_of
from control_plane.cli.suggestions import unknown_label_keys
from edge_agent.protocol.vocabulary import Channel

MAX_LABEL_KEYS = 1000  # one bounded answer of GET /v1/label-keys

devices_app = typer.Typer(help="Enrolled edge devices.", no_args_is_help=True)


@devices_app.command("list")
def list_devices(
    ctx: typer.Context,
    selector: Annotated[
        list[str] | None,
        typer.Option("--selector", "-l", help="Label filter KEY=VALUE[,KEY=VALUE] (repeatable; gpu_class=C too)."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show at most N devices (default: all).")] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, max=1000, help="Devices asked for per request (page size).")
    ] = CHUNK_SIZE,
) -> None:
    """List devices, optionally only those matching a label selector (filtered by the server).

    The list is read in pages of --chunk-size devices, following each answer's next-page link, and shows every
    matching device unless --limit; rows are printed as each page arrives (--json prints one array).
    """
    try:
        chosen = parse_selectors(selector or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--selector") from exc
    state = state_of(ctx)
    with state.client() as api:
        pages = api.device_pages(chosen.as_text(), chunk_size, limit)
        first = next(pages, [])
        if not first and chosen.labels:
            _check_label_keys(api, list(chosen.labels))
        state.output.emit_pages(chain([first], pages), views.devices_view)


def _check_label_keys(api: ApiClient, keys: list[str]) -> None:
    """An empty answer to a selector whose key no device carries is a typo until shown otherwise: say so."""
    known = [str(k.get("key")) for k in api.get("/v1/label-keys", limit=MAX_LABEL_KEYS)]
    problem = unknown_label_keys(keys, known)
    if problem is not None:
        raise CliError(problem + " (`edgectl devices label-keys` lists them)")


@devices_app.command("label-keys")
def label_keys(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Show at most N keys.")] = MAX_LABEL_KEYS,
) -> None:
    """List the label keys devices carry (what a --selector can name), each with how many devices carry it."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.get("/v1/label-keys", limit=limit), views.label_keys_view)


@devices_app.command("show")
def show(ctx: typer.Context, device_id: Annotated[str, typer.Argument(help="Device id.")]) -> None:
    """Show one device: presence, hardware facts, labels, its reported state and its latest telemetry (requests,
    errors, p50/p99 per model version, as its agent reports them)."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.device(device_id), views.device_view)


@devices_app.command("events")
def events(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many events, newest first.")] = 50,
) -> None:
    """Show a device's apply events (received, downloading, verified, activated, rejected, ...), newest first."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.device_events(device_id, limit), views.events_view)


@devices_app.command("enroll")
def enroll(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="Device id (also the Ansible host name unless --host).")],
    channel: Annotated[Channel, typer.Option(help="How the device gets its desired state.")] = Channel.ANSIBLE,
    host: Annotated[str | None, typer.Option(help="Address Ansible connects to (ansible_host).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="SSH port (ansible_port).")] = None,
    user: Annotated[str | None, typer.Option(help="SSH user (ansible_user).")] = None,
    connection: Annotated[str, typer.Option(help="ssh, or local for the control plane's own host.")] = "ssh",
    python: Annotated[str | None, typer.Option(help="Interpreter on the device (ansible_python_interpreter).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE (repeatable).")] = None,
    gpu_class: Annotated[str | None, typer.Option(help="GPU class, until the device reports its own.")] = None,
) -> None:
    """Enroll a device (or update its enrollment), e.g. one reached over SSH for the Ansible channel."""
    if connection not in ("ssh", "local"):
        raise typer.BadParameter("must be ssh or local", param_hint="--connection")
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = value
    body: dict[str, Any] = {"channel": channel.value, "labels": labels}
    if gpu_class:
        body["gpu_class"] = gpu_class
    conn = {"host": host, "port": port, "user": user, "python": python}
    if channel is Channel.ANSIBLE or any(v is not None for v in conn.values()) or connection != "ssh":
        body["ansible"] = {k: v for k, v in conn.items() if v is not None} | {"connection": connection}
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.enroll_device(device_id, body), views.device_view)


@devices_app.command("forget")
def forget(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="Device id.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also while an unfinished rollout holds it: that rollout stops waiting for it and counts it as "
            "failed (or, during an abort, not restored).",
        ),
    ] = False,
) -> None:
    """Forget a device with its events and telemetry, and revoke its credentials (refused while it is in an
    unfinished rollout, unless --force)."""
    state = state_of(ctx)
    with state.client() as api:
        try:
            api.forget_device(device_id, force=force)
        except RequestRejected as exc:
            if exc.status != 409 or force:
                raise
            raise CliError(
                f"{exc}; `edgectl devices forget {device_id} --force` forgets it anyway (that rollout stops waiting "
                "for it and counts it as failed)"
            ) from exc
    state.output.note(f"forgot device {device_id}" + (" (no rollout waits for it any more)" if force else ""))


@devices_app.command("credentials")
def credentials(ctx: typer.Context, device_id: Annotated[str, typer.Argument(help="Device id.")]) -> None:
    """Issue new MQTT credentials for an enrolled device (mqtt.admin: dynsec); the password is printed once and
    replaces any it had (its current session is disconnected)."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.post(f"/v1/devices/{device_id}/broker-credentials", {}), views.broker_credential_view)


@devices_app.command("revoke")
def revoke(ctx: typer.Context, device_id: Annotated[str, typer.Argument(help="Device id.")]) -> None:
    """Revoke a device: its broker client is deleted (it is disconnected at once and cannot log in again) and its
    device tokens are revoked. It stays in the fleet; `devices credentials` admits it again."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.post(f"/v1/devices/{device_id}/revoke", {}), views.revocation_view)


def register(app: typer.Typer) -> None:
    app.add_typer(devices_app, name="devices")
