"""`GET /v1/rollouts/{id}/events`: a rollout's event records as Server-Sent Events, replayed then followed
(control_plane/api/sse.py). The route only reads through RolloutService: it never changes a rollout.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import RolloutsDep
from control_plane.api.params import AfterId
from control_plane.api.schemas.rollouts import event_json
from control_plane.api.sse import event_stream, resume_point
from control_plane.domain.rollout_progress import FINAL_PHASES

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])

_FINAL = frozenset(phase.value for phase in FINAL_PHASES)


@router.get("/{rollout_id}/events", response_class=StreamingResponse)
async def rollout_events(
    rollout_id: str,
    rollouts: RolloutsDep,
    request: Request,
    after: AfterId = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """The rollout's events as `text/event-stream`; 404 for an unknown rollout."""
    start = resume_point(last_event_id, after)
    await run_in_threadpool(rollouts.phase_of, rollout_id)  # NotFound -> 404 before the stream starts
    return event_stream(
        lambda: str(rollouts.phase_of(rollout_id).value) in _FINAL,  # the phase only: O(1) per poll
        lambda after_id: rollouts.events_since(rollout_id, after_id),
        event_json,
        start,
        request.is_disconnected,
    )
