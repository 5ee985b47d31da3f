"""Playbook runs: start one (202: it is queued), list, read, cancel, and follow its events as Server-Sent Events.

The event stream has the shape of the rollout events stream: one `id:` + `event:` + `data:` block per event in id
order, resumable with `Last-Event-ID` (or `?after=N`), a heartbeat comment every 15 s, and it ends once the run
is final and every event was sent. Routes only call PlaybookRunService.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import PlaybookRunsDep
from control_plane.api.playbook_schemas import PlaybookRunIn, PlaybookRunOut, event_json
from control_plane.domain.errors import InvalidInput
from control_plane.domain.playbooks import RunEvent
from control_plane.services.playbook_runs import PlaybookRunService

router = APIRouter(prefix="/v1/playbook-runs", tags=["playbook-runs"])

POLL_INTERVAL_S = 0.5
HEARTBEAT_INTERVAL_S = 15.0


@router.post("", status_code=202)
def submit(body: PlaybookRunIn, runs: PlaybookRunsDep) -> PlaybookRunOut:
    """Queue a run of a playbook on the hosts (or the Ansible devices a selector matches)."""
    return PlaybookRunOut.of(runs.submit(body.to_domain()))


@router.get("")
def list_runs(runs: PlaybookRunsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[PlaybookRunOut]:
    """Newest first."""
    return [PlaybookRunOut.of(r) for r in runs.list_runs(limit)]


@router.get("/{run_id}")
def get_run(run_id: str, runs: PlaybookRunsDep) -> PlaybookRunOut:
    return PlaybookRunOut.of(runs.get(run_id))


@router.post("/{run_id}/cancel", status_code=202)
def cancel(run_id: str, runs: PlaybookRunsDep) -> PlaybookRunOut:
    """A queued run is cancelled at once, a running one shortly after; 409 for a finished run."""
    return PlaybookRunOut.of(runs.cancel(run_id))


@router.get("/{run_id}/events", response_class=StreamingResponse)
async def run_events(
    run_id: str,
    runs: PlaybookRunsDep,
    after: Annotated[int | None, Query(ge=0, description="Send only events with a larger id.")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """The run's events as `text/event-stream`; 404 for an unknown run."""
    start = _resume_point(last_event_id, after)
    await run_in_threadpool(runs.get, run_id)  # NotFound -> 404 before the stream starts
    return StreamingResponse(
        _stream(runs, run_id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    """The header wins over the query (a browser's EventSource sends the header on its own reconnects)."""
    if last_event_id is None or not last_event_id.strip():
        return after or 0
    try:
        value = int(last_event_id)
    except ValueError:
        raise InvalidInput(f"Last-Event-ID must be an event id (an integer), not {last_event_id!r}") from None
    if value < 0:
        raise InvalidInput(f"Last-Event-ID must not be negative, got {value}")
    return value


async def _stream(runs: PlaybookRunService, run_id: str, after: int) -> AsyncIterator[str]:
    last_write = time.monotonic()
    while True:
        # The status is read before the events: a run becomes final after its last event was stored.
        final = (await run_in_threadpool(runs.get, run_id)).status.final
        events = await run_in_threadpool(runs.events_since, run_id, after)
        for event in events:
            yield format_event(event)
            after = event.id
        if events:
            last_write = time.monotonic()
        if final:
            if not events:
                return
            continue
        if time.monotonic() - last_write >= HEARTBEAT_INTERVAL_S:
            yield ": heartbeat\n\n"
            last_write = time.monotonic()
        await asyncio.sleep(POLL_INTERVAL_S)


def format_event(event: RunEvent) -> str:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event_json(event))}\n\n"
