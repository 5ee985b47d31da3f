"""Server-Sent Events over a stored, id-ordered event log: the one way the API streams progress (rollout events,
playbook-run events).

One `id:` (the stored id) + `event:` (its kind) + `data:` (JSON on one line) block per event, in id order. A client
resumes with `Last-Event-ID` (or `?after=N`) and gets only what it has not seen. The stream ends once its subject is
final and every event up to then was sent; while nothing happens a comment line goes out every 15 s so proxies keep
the connection open. It only reads, through the callables it is given, and holds no database handle across polls.
Each event costs O(1) to send (its own record, never the subject's whole state), and a client that went away stops
the writer before its next poll: nothing is written to a closed connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from control_plane.domain.bounds import INT64_MAX
from control_plane.domain.errors import InvalidInput

POLL_INTERVAL_S = 0.5
HEARTBEAT_INTERVAL_S = 15.0


class StoredEvent(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> str: ...


E = TypeVar("E", bound=StoredEvent)


def resume_point(last_event_id: str | None, after: int | None) -> int:
    """The header wins over the query (a browser's EventSource sends the header on its own reconnects)."""
    if last_event_id is None or not last_event_id.strip():
        return after or 0
    try:
        value = int(last_event_id)
    except ValueError:
        raise InvalidInput(f"Last-Event-ID must be an event id (an integer), not {last_event_id!r}") from None
    if not 0 <= value <= INT64_MAX:
        raise InvalidInput(f"Last-Event-ID must be an event id from 0 to {INT64_MAX}, got {value}")
    return value


def event_block(event: StoredEvent, data: Mapping[str, object]) -> str:
    """One SSE block. JSON has no raw newlines, so `data:` is always one line."""
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data, default=str)}\n\n"


Disconnected = Callable[[], Awaitable[bool]]


async def _never() -> bool:
    return False


def event_stream(
    is_final: Callable[[], bool],
    events_since: Callable[[int], Sequence[E]],
    to_json: Callable[[E], Mapping[str, object]],
    after: int,
    disconnected: Disconnected = _never,
) -> StreamingResponse:
    """`disconnected`: the request's `is_disconnected` (the stream ends as soon as the client is gone)."""
    return StreamingResponse(
        _follow(is_final, events_since, to_json, after, disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _follow(
    is_final: Callable[[], bool],
    events_since: Callable[[int], Sequence[E]],
    to_json: Callable[[E], Mapping[str, object]],
    after: int,
    disconnected: Disconnected = _never,
) -> AsyncIterator[str]:
    last_write = time.monotonic()
    while not await disconnected():
        # Finality is read before the events: events are stored no later than the state they describe, so when the
        # subject reads final, the events read next include the last one.
        final = await run_in_threadpool(is_final)
        events = await run_in_threadpool(events_since, after)
        for event in events:
            yield event_block(event, to_json(event))
            after = event.id
        if events:
            last_write = time.monotonic()
        if final:
            if not events:
                return
            continue  # drain what is left (events_since pages) before ending
        if time.monotonic() - last_write >= HEARTBEAT_INTERVAL_S:
            yield ": heartbeat\n\n"
            last_write = time.monotonic()
        await asyncio.sleep(POLL_INTERVAL_S)
