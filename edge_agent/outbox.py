"""What an agent sends as it applies leaves in batches: its step events, and its reported state (decision 0016).

An install emits seven events within milliseconds (received, downloading, downloaded, verified, loaded,
self_test_passed, activated) and changes its reported state twice (applying, then applied). Sent as they happened,
they were most of what a device sent per rollout and most of what the control plane received at fleet size.
`Outbox` gathers them: the events leave as one `EventBatch` and the reported state once, as it is then, at the
latest `linger` after the first thing waiting (so a long step - a download - is still seen as it starts), the
events always before the report (a report never overtakes the events that led to it), and the events at once when
a batch is full. `Later` runs those deadlines for any number of outboxes on one thread: the delay is the same for
all, so the order they are handed over is the order they fall due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from edge_agent.protocol import DeviceEvent
from edge_agent.protocol.messages import MAX_EVENTS_PER_MESSAGE

log = logging.getLogger(__name__)

LINGER_S = 0.25  # the longest an event or a change of the reported state waits for others to leave with it

SendEvents = Callable[[Sequence[DeviceEvent]], None]
SendReport = Callable[[], None]
"""Publishes the reported state as it is when called."""
Schedule = Callable[[Callable[[], None]], None]
"""Runs the callable once, a fixed delay from now (`Later`), never on the caller's thread."""


class Outbox:
    def __init__(
        self,
        send_events: SendEvents,
        send_report: SendReport,
        schedule: Schedule,
        max_events: int = MAX_EVENTS_PER_MESSAGE,
    ) -> None:
        self._send_events = send_events
        self._send_report = send_report
        self._schedule = schedule
        self._max = max_events
        self._events: list[DeviceEvent] = []
        self._report_due = False
        self._armed = False  # a deadline is scheduled; it sends whatever waits then (perhaps nothing)
        self._lock = threading.Lock()  # held while sending too: messages leave in the order they were made

    def event(self, event: DeviceEvent) -> None:
        with self._lock:
            self._events.append(event)
            if len(self._events) >= self._max:
                self._flush_events()
            arm = self._arm()
        if arm:
            self._schedule(self._deadline)

    def changed(self) -> None:
        """The reported state changed: it leaves by the deadline, as it is then (one report for many changes)."""
        with self._lock:
            self._report_due = True
            arm = self._arm()
        if arm:
            self._schedule(self._deadline)

    def flush(self, report: bool = False) -> None:
        """Send what waits now, events first; with `report`, the reported state even if it did not change (what a
        (re)connected link sends first)."""
        with self._lock:
            self._report_due = self._report_due or report
            self._flush()

    def _arm(self) -> bool:
        if self._armed or not (self._events or self._report_due):
            return False
        self._armed = True
        return True

    def _deadline(self) -> None:
        with self._lock:
            self._armed = False
            self._flush()

    def _flush(self) -> None:
        self._flush_events()
        if self._report_due:
            self._report_due = False
            try:
                self._send_report()
            except Exception:  # as for events: the apply that changed the state never fails for its report
                log.exception("sending the reported state failed")

    def _flush_events(self) -> None:
        if not self._events:
            return
        batch, self._events = self._events, []
        try:
            self._send_events(batch)
        except Exception:  # a failing sink never fails the apply that emitted the events (core/events.py)
            log.exception("sending %d event(s) failed", len(batch))


class Later:
    """Runs each callable `delay_s` after it was handed over, in order, on one daemon thread started on first use."""

    def __init__(self, delay_s: float = LINGER_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._delay = delay_s
        self._clock = clock
        self._due: deque[tuple[float, Callable[[], None]]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def __call__(self, action: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            self._due.append((self._clock() + self._delay, action))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="event-outbox", daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Stop; what has not fallen due is dropped (the caller flushes its outboxes itself)."""
        with self._cond:
            self._closed = True
            self._due.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._due or self._due[0][0] > self._clock()):
                    self._cond.wait(None if not self._due else self._due[0][0] - self._clock())
                if self._closed:
                    return
                _, action = self._due.popleft()
            try:
                action()
            except Exception:
                log.exception("a scheduled action failed")
