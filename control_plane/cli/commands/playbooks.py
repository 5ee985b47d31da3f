"""`edgectl playbook ...`: run the playbooks of `playbooks/` through the control plane, list, show, follow, cancel.

`run --wait` and `watch` follow the run's event stream (SSE, reconnecting after the last event id) and print one
line per event; they exit 1 when the run did not succeed, 3 on `--timeout`. With `--json`, `watch` prints each
event as one JSON line and nothing else. Never changes a run except `cancel`.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from control_plane.cli import views
from control_plane.cli.commands.rollout_watch import EventFollower
from control_plane.cli.state import CliState, state_of

playbook_app = typer.Typer(help="Ansible playbook runs (the Ansible channel).", no_args_is_help=True)
FINAL = ("succeeded", "failed", "cancelled")


def parse_extra_vars(items: list[str]) -> dict[str, Any]:
    """`-e key=value`: the value as JSON when it parses (numbers, lists, objects, true), else as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--extra-var")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


@playbook_app.command("run")
def run(
    ctx: typer.Context,
    playbook: Annotated[str, typer.Argument(help="provision, deploy_model, facts, upgrade_agent or decommission.")],
    selector: Annotated[
        str | None, typer.Option("--selector", "-l", help="Devices on the Ansible channel: KEY=VALUE[,...].")
    ] = None,
    host: Annotated[list[str] | None, typer.Option("--host", help="A device id (repeatable).")] = None,
    extra_var: Annotated[list[str] | None, typer.Option("--extra-var", "-e", help="KEY=VALUE (repeatable).")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the run and exit 1 unless it succeeds.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up (exit 3) after this many seconds.")] = 3600.0,
) -> None:
    """Start a playbook run on the given hosts or the devices a selector matches."""
    if (selector is None) == (not host):
        raise typer.BadParameter("give either --selector or --host (one or more), not both")
    body: dict[str, Any] = {"playbook": playbook, "extra_vars": parse_extra_vars(extra_var or [])}
    if selector is not None:
        body["selector"] = selector
    else:
        body["hosts"] = list(host or [])
    state = state_of(ctx)
    with state.client() as api:
        created = api.create_playbook_run(body)
    if not wait:
        state.output.emit(created, views.playbook_run_view)
        return
    state.output.note(f"playbook run {created['id']} queued")
    raise typer.Exit(_follow(state, created["id"], timeout, json_lines=False))


@playbook_app.command("runs")
def runs(
    ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50
) -> None:
    """List playbook runs, newest first."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.playbook_runs(limit), views.playbook_runs_view)


@playbook_app.command("show")
def show(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Show a run: status, and each host's status, message and result."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.playbook_run(run_id), views.playbook_run_view)


@playbook_app.command("watch")
def watch(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    timeout: Annotated[float, typer.Option(help="Give up (exit 3) after this many seconds.")] = 3600.0,
) -> None:
    """Follow a run's events live until it ends; exit 1 unless it succeeded, 3 on timeout."""
    state = state_of(ctx)
    raise typer.Exit(_follow(state, run_id, timeout, json_lines=state.output.as_json))


@playbook_app.command("cancel")
def cancel(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Cancel a queued or running run (409 when it already ended)."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.cancel_playbook_run(run_id), views.playbook_run_view)


def _follow(state: CliState, run_id: str, timeout: float, json_lines: bool) -> int:
    with state.client() as api:
        status = [api.playbook_run(run_id)["status"]]  # 404 for an unknown run, before anything is shown

        def done() -> bool:
            status[0] = api.playbook_run(run_id)["status"]
            return status[0] in FINAL

        follower = EventFollower(
            api.base_url,
            run_id,
            time.monotonic() + timeout,
            done,
            collection="playbook-runs",
            token=api.token,
            verify=api.verify,
        )
        for event in follower.events():
            if json_lines:
                print(json.dumps(event, sort_keys=True), flush=True)
            else:
                state.output.note(f"{event.get('at', '')[11:19]} {event.get('message', '')}")
        final = api.playbook_run(run_id)
    if final["status"] not in FINAL:
        state.output.error(f"timed out after {timeout:g}s watching playbook run {run_id} ({final['status']})")
        return 3
    if not json_lines:
        state.output.emit(final, views.playbook_run_view)
        state.output.note(f"playbook run {run_id} {final['status']}")
    return 0 if final["status"] == "succeeded" else 1


def register(app: typer.Typer) -> None:
    app.add_typer(playbook_app, name="playbook")
