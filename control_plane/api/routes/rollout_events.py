"""`GET /v1/rollouts/{id}/events`: a rollout's event records as Server-Sent Events, replayed then followed.

One `id:` (the record id) + `event:` (its kind) + `data:` (the record as JSON) block per record, in id order.
A client resumes with `Last-Event-ID` (or `?after=N`) and gets only what it has not seen. The stream ends once
the rollout is in a final phase and every record up to then was sent; while nothing happens a comment line is
sent every 15 s so proxies keep the connection open. The route only reads through RolloutService (polling its
`events_since`): it never changes a rollout and holds no database handle across polls.
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

from control_plane.api.deps import RolloutsDep
from control_plane.domain.errors import InvalidInput
from control_plane.domain.rollout_events import RolloutEventRecord
from control_plane.domain.rollout_plan import FINAL_PHASES
from control_plane.services.rollouts import RolloutService

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])

POLL_INTERVAL_S = 0.5
HEARTBEAT_INTERVAL_S = 15.0
_FINAL = frozenset(phase.value for phase in FINAL_PHASES)


@router.get("/{rollout_id}/events", response_class=StreamingResponse)
async def rollout_events(
    rollout_id: str,
    rollouts: RolloutsDep,
    after: Annotated[int | None, Query(ge=0, description="Send only records with a larger id.")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """The rollout's events as `text/event-stream`; 404 for an unknown rollout."""
    start = _resume_point(last_event_id, after)
    await run_in_threadpool(rollouts.get_rollout, rollout_id)  # NotFound -> 404 before the stream starts
    return StreamingResponse(
        _stream(rollouts, rollout_id, start),
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


async def _stream(rollouts: RolloutService, rollout_id: str, after: int) -> AsyncIterator[str]:
    last_write = time.monotonic()
    while True:
        # The phase is read before the records: records are stored in the same transaction as the state they
        # describe, so when the phase read is final, the records read next include the last one.
        final = await run_in_threadpool(_is_final, rollouts, rollout_id)
        records = await run_in_threadpool(rollouts.events_since, rollout_id, after)
        for record in records:
            yield format_event(record)
            after = record.id
        if records:
            last_write = time.monotonic()
        if final:
            if not records:
                return
            continue  # drain what is left (events_since pages) before ending
        if time.monotonic() - last_write >= HEARTBEAT_INTERVAL_S:
            yield ": heartbeat\n\n"
            last_write = time.monotonic()
        await asyncio.sleep(POLL_INTERVAL_S)


def _is_final(rollouts: RolloutService, rollout_id: str) -> bool:
    phase = rollouts.get_rollout(rollout_id).phase
    return str(phase.value) in _FINAL


def format_event(record: RolloutEventRecord) -> str:
    """One SSE block. JSON has no raw newlines, so `data:` is always one line."""
    return f"id: {record.id}\nevent: {record.kind}\ndata: {json.dumps(event_json(record), default=str)}\n\n"


def event_json(record: RolloutEventRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "rollout_id": record.rollout_id,
        "at": record.at.isoformat(),
        "kind": record.kind,
        "device_id": record.device_id,
        "step": record.step,
        "message": record.message,
        "data": dict(record.data),
    }
