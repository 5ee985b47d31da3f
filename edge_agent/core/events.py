"""Step events (core -> control plane): stamped with the injected clock, their reasons bounded, and handed to the
event sink. A failing sink is logged and never fails the apply that emitted the event."""

from __future__ import annotations

import logging

from edge_agent.core.ports import Clock, EventSink
from edge_agent.protocol import DeviceEvent, EventStep, ModelAssignment

log = logging.getLogger(__name__)

# The longest reason an event or an apply outcome carries (the wire contract's bound).
MAX_REASON = 2000


class EventEmitter:
    def __init__(self, sink: EventSink, clock: Clock) -> None:
        self._sink = sink
        self._clock = clock

    def emit(
        self, generation: int, step: EventStep, model: ModelAssignment | None = None, reason: str | None = None
    ) -> None:
        event = DeviceEvent(
            generation=generation,
            step=step,
            model=model.name if model else None,
            version=model.version if model else None,
            reason=reason[:MAX_REASON] if reason else None,
            at=self._clock(),
        )
        try:
            self._sink(event)
        except Exception:
            log.exception("event sink failed for %s", step.value)
