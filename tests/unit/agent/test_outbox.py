"""What an agent sends as it applies leaves in batches (edge_agent/outbox.py, docs/decisions/0016): fewer messages
per apply, none lost, none reordered, a report never ahead of the events that led to it, and nothing held back
longer than the linger."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest

from edge_agent.outbox import Later, Outbox
from edge_agent.protocol import DeviceEvent, EventBatch, EventStep, MessageKind, open_events, seal
from edge_agent.protocol.messages import MAX_EVENTS_PER_MESSAGE

T0 = datetime(2030, 1, 1, tzinfo=UTC)
INSTALL = [
    EventStep.RECEIVED,
    EventStep.DOWNLOADING,
    EventStep.DOWNLOADED,
    EventStep.VERIFIED,
    EventStep.LOADED,
    EventStep.SELF_TEST_PASSED,
    EventStep.ACTIVATED,
]


def event(step: EventStep, n: int = 0) -> DeviceEvent:
    return DeviceEvent(generation=1, step=step, reason=f"r{n}", at=T0)


class Harness:
    """An outbox whose sends are kept and whose deadlines fire when the test says."""

    def __init__(self, send: Callable[[Sequence[DeviceEvent]], None] | None = None) -> None:
        self.sent: list[list[DeviceEvent]] = []
        self.wire: list[str] = []  # what left, in order: "events" or "report"
        self.deadlines: list[Callable[[], None]] = []
        self.outbox = Outbox(send or self._events, lambda: self.wire.append("report"), self.deadlines.append)

    def _events(self, batch: Sequence[DeviceEvent]) -> None:
        self.sent.append(list(batch))
        self.wire.append("events")

    def fire(self) -> None:
        due = list(self.deadlines)
        self.deadlines.clear()
        for deadline in due:
            deadline()

    def steps(self) -> list[list[EventStep]]:
        return [[e.step for e in batch] for batch in self.sent]


def test_an_install_leaves_as_one_message_when_its_deadline_falls() -> None:
    h = Harness()
    for step in INSTALL:
        h.outbox.event(event(step))
    assert h.sent == []  # nothing leaves before the linger ...
    assert len(h.deadlines) == 1  # ... which was armed once, by the first event
    h.fire()
    assert h.steps() == [INSTALL]


def test_an_install_and_its_two_state_changes_leave_as_one_batch_then_one_report() -> None:
    h = Harness()
    h.outbox.event(event(INSTALL[0]))
    h.outbox.changed()  # applying
    for step in INSTALL[1:]:
        h.outbox.event(event(step))
    h.outbox.changed()  # applied
    assert h.wire == []
    h.fire()
    assert h.wire == ["events", "report"]  # the events first: a report never overtakes what led to it
    assert h.steps() == [INSTALL]


def test_a_connect_sends_what_waits_and_the_report_at_once_and_the_deadline_then_sends_nothing() -> None:
    h = Harness()
    h.outbox.event(event(EventStep.RECEIVED))
    h.outbox.flush(report=True)  # the link (re)connected
    assert h.wire == ["events", "report"]
    h.fire()
    assert h.wire == ["events", "report"]  # no second, empty message
    h.outbox.flush(report=True)  # a connect always reports, changed or not
    assert h.wire == ["events", "report", "report"]


def test_an_event_after_a_flush_still_leaves_by_the_armed_deadline() -> None:
    h = Harness()
    h.outbox.event(event(EventStep.RECEIVED))
    h.outbox.flush()
    h.outbox.event(event(EventStep.DOWNLOADING))  # a long download starts: it must be seen before it ends
    h.fire()
    assert h.steps() == [[EventStep.RECEIVED], [EventStep.DOWNLOADING]]
    assert "report" not in h.wire  # the state did not change
    h.outbox.event(event(EventStep.DOWNLOADED))
    assert len(h.deadlines) == 1  # the fired deadline disarmed; the next event armed a new one
    h.fire()
    assert h.steps()[-1] == [EventStep.DOWNLOADED]


def test_a_full_batch_leaves_at_once_within_the_wire_limit() -> None:
    h = Harness()
    for n in range(MAX_EVENTS_PER_MESSAGE * 2 + 1):
        h.outbox.event(event(EventStep.ERROR, n))
    assert [len(b) for b in h.sent] == [MAX_EVENTS_PER_MESSAGE, MAX_EVENTS_PER_MESSAGE]
    h.fire()
    reasons = [e.reason for batch in h.sent for e in batch]
    assert reasons == [f"r{n}" for n in range(MAX_EVENTS_PER_MESSAGE * 2 + 1)]  # all, in order
    for batch in h.sent:  # each batch is a valid message of the wire contract
        _, opened = open_events(seal(MessageKind.EVENTS, "dev-1", EventBatch(events=batch), T0))
        assert opened == batch


def test_a_failing_send_neither_raises_into_the_apply_nor_stops_later_batches() -> None:
    calls: list[int] = []

    def send(batch: Sequence[DeviceEvent]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise ConnectionError("link down")

    h = Harness(send)
    h.outbox.event(event(EventStep.RECEIVED))
    h.outbox.flush()  # raises inside: logged, not raised
    h.outbox.event(event(EventStep.ACTIVATED))
    h.fire()
    assert calls == [1, 1]


def test_a_failing_report_is_logged_and_the_next_change_reports_again() -> None:
    reports: list[int] = []

    def report() -> None:
        reports.append(1)
        if len(reports) == 1:
            raise ConnectionError("link down")

    deadlines: list[Callable[[], None]] = []
    outbox = Outbox(lambda batch: None, report, deadlines.append)
    outbox.changed()
    deadlines.pop()()
    outbox.changed()
    deadlines.pop()()
    assert reports == [1, 1]


def test_single_event_messages_of_older_agents_still_open() -> None:
    _, events = open_events(seal(MessageKind.EVENT, "dev-1", event(EventStep.ACTIVATED), T0))
    assert [e.step for e in events] == [EventStep.ACTIVATED]


def test_later_runs_actions_after_the_delay_in_the_order_handed_over() -> None:
    now = [0.0]
    later = Later(delay_s=0.25, clock=lambda: now[0])
    ran: list[str] = []
    done = threading.Event()
    try:
        later(lambda: ran.append("a"))
        now[0] = 0.1
        later(lambda: (ran.append("b"), done.set()))
        assert ran == []  # neither is due on the clock yet
        now[0] = 0.4  # both are due now
        assert done.wait(5)
        assert ran == ["a", "b"]
    finally:
        later.close()


def test_later_drops_what_is_not_due_when_closed() -> None:
    later = Later(delay_s=3600)
    ran: list[str] = []
    later(lambda: ran.append("never"))
    later.close()
    later(lambda: ran.append("after close"))
    assert ran == []


@pytest.mark.parametrize("count", [0, MAX_EVENTS_PER_MESSAGE + 1])
def test_the_wire_refuses_an_empty_or_oversized_batch(count: int) -> None:
    events = [event(EventStep.ERROR, n) for n in range(count)]
    with pytest.raises(ValueError):
        EventBatch(events=events)
