"""Playbook runs: start one (202: it is queued), list, read, cancel, and follow its events as Server-Sent Events.

The event stream is control_plane/api/sse.py's, like the rollout events stream: resumable with `Last-Event-ID`
(or `?after=N`), ending once the run is final and every event was sent. Routes only call PlaybookRunService.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import PlaybookRunsDep
from control_plane.api.params import AfterId
from control_plane.api.schemas.playbook_runs import PlaybookRunIn, PlaybookRunOut, event_json
from control_plane.api.sse import event_stream, resume_point

router = APIRouter(prefix="/v1/playbook-runs", tags=["playbook-runs"])


@router.post("", status_code=202)
def submit(body: PlaybookRunIn, runs: PlaybookRunsDep) -> PlaybookRunOut:
    """Queue a run of a playbook on the hosts (or the Ansible devices a selector matches)."""
    return PlaybookRunOut.model_validate(runs.submit(body.to_domain()))


@router.get("")
def list_runs(runs: PlaybookRunsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[PlaybookRunOut]:
    """Newest first."""
    return [PlaybookRunOut.model_validate(r) for r in runs.list_runs(limit)]


@router.get("/{run_id}")
def get_run(run_id: str, runs: PlaybookRunsDep) -> PlaybookRunOut:
    return PlaybookRunOut.model_validate(runs.get(run_id))


@router.post("/{run_id}/cancel", status_code=202)
def cancel(run_id: str, runs: PlaybookRunsDep) -> PlaybookRunOut:
    """A queued run is cancelled at once, a running one shortly after; 409 for a finished run."""
    return PlaybookRunOut.model_validate(runs.cancel(run_id))


@router.get("/{run_id}/events", response_class=StreamingResponse)
async def run_events(
    run_id: str,
    runs: PlaybookRunsDep,
    after: AfterId = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """The run's events as `text/event-stream` (control_plane/api/sse.py); 404 for an unknown run."""
    start = resume_point(last_event_id, after)
    await run_in_threadpool(runs.get, run_id)  # NotFound -> 404 before the stream starts
    return event_stream(
        lambda: runs.get(run_id).status.final,
        lambda after_id: runs.events_since(run_id, after_id),
        event_json,
        start,
    )
