"""`edgectl rollout watch ID`: follow a rollout's event stream (SSE) live until it ends.

Reconnects with `Last-Event-ID` when the connection drops, so no event is shown twice or missed. On each event it
re-reads `GET /v1/rollouts/{id}` for the full picture. Exit codes: 0 succeeded, 1 aborted or rolled back,
3 when `--timeout` passes first. With `--json` it prints each event as one JSON line on stdout and nothing else.
Never changes a rollout.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer
from rich.live import Live

from control_plane.cli.client import ApiClient, RequestRejected, format_detail
from control_plane.cli.state import CliState, state_of
from control_plane.cli.watch_view import WatchExit, WatchModel, apply_event, apply_rollout, final_line, render

RECONNECT_DELAY_S = 0.5
MAX_READ_WAIT_S = 30.0  # the server sends a heartbeat every 15 s


@dataclass(frozen=True)
class SseEvent:
    id: int | None
    event: str
    data: str


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """SSE blocks from a line stream: `id:`/`event:`/`data:` fields, a blank line ends a block, `:` is a comment."""
    fields: dict[str, list[str]] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                raw_id = "".join(fields.get("id", []))
                yield SseEvent(
                    int(raw_id) if raw_id.isdigit() else None,
                    "".join(fields.get("event", [])) or "message",
                    "\n".join(fields["data"]),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key, []).append(value.removeprefix(" "))


class EventFollower:
    """Yields the rollout's event records (dicts) across reconnects until the server ends the stream cleanly."""

    def __init__(
        self,
        base_url: str,
        rollout_id: str,
        deadline: float,
        done: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        collection: str = "rollouts",
        token: str | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        # `collection`: the resource whose /{id}/events stream to follow (rollouts, playbook-runs).
        self._url = f"{base_url.rstrip('/')}/v1/{collection}/{rollout_id}/events"
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._verify = verify
        self._deadline = deadline
        self._done = done
        self._clock = clock
        self._sleep = sleep
        self.last_id = 0
        self.connections = 0

    def events(self) -> Iterator[dict[str, Any]]:
        """Records until `done()` holds after the server ended a stream, or the deadline passes."""
        while self._clock() < self._deadline:
            with contextlib.suppress(httpx.TransportError):  # dropped or refused: reconnect after the last id
                yield from self._one_connection()
            if self._done():
                return
            self._sleep(min(RECONNECT_DELAY_S, max(0.0, self._deadline - self._clock())))

    def _one_connection(self) -> Iterator[dict[str, Any]]:
        wait = max(0.1, min(MAX_READ_WAIT_S, self._deadline - self._clock()))
        headers = self._auth | ({"Last-Event-ID": str(self.last_id)} if self.last_id else {})
        self.connections += 1
        timeout = httpx.Timeout(10.0, read=wait)
        with httpx.stream("GET", self._url, headers=headers, timeout=timeout, verify=self._verify) as response:
            if response.is_error:
                response.read()
                raise RequestRejected("GET", self._url, response.status_code, _detail(response))
            for sse in parse_sse(response.iter_lines()):
                record = json.loads(sse.data)
                if sse.id is not None:
                    self.last_id = sse.id
                yield record
                if self._clock() >= self._deadline:
                    return


def _detail(response: httpx.Response) -> str:
    try:
        return format_detail(response.json())
    except ValueError:
        return response.text


def watch(
    ctx: typer.Context,
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    timeout: Annotated[float, typer.Option(help="Give up (exit 3) after this many seconds.")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the events as JSON lines instead.")] = False,
) -> None:
    """Follow a rollout live: its steps (devices by status, bake time left, gate values against their thresholds,
    verdicts), the devices it waits for and why, and every device's progress, refreshed on each server event;
    exit 1 if it is aborted or rolled back, 3 on timeout."""
    state = state_of(ctx)
    json_lines = as_json or state.output.as_json
    model = WatchModel(rollout_id)
    with state.client() as api:
        apply_rollout(model, api.rollout(rollout_id))  # 404 for an unknown rollout, before anything is shown
        code = _follow(state, api, model, timeout, json_lines)
    if code is WatchExit.TIMED_OUT:
        state.output.error(f"timed out after {timeout:g}s watching rollout {rollout_id} (phase {model.phase})")
    elif not json_lines:
        state.output.console.print(render(model))
        state.output.note(final_line(model))
    raise typer.Exit(int(code))


def _follow(state: CliState, api: ApiClient, model: WatchModel, timeout: float, json_lines: bool) -> WatchExit:
    follower = EventFollower(
        api.base_url,
        model.rollout_id,
        time.monotonic() + timeout,
        lambda: model.final,
        token=api.token,
        verify=api.verify,
    )
    with Live(render(model), console=state.output.err, transient=True, auto_refresh=False) as live:
        for event in follower.events():
            apply_event(model, event)
            if json_lines:
                print(json.dumps(event, sort_keys=True), flush=True)
                continue
            apply_rollout(model, api.rollout(model.rollout_id))
            live.update(render(model), refresh=True)
    if not model.final:
        apply_rollout(model, api.rollout(model.rollout_id))
    return model.exit_code() if model.final else WatchExit.TIMED_OUT


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
