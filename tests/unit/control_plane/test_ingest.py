"""The ingest path between the broker link and the database (issue 11, item 2): what a batch keeps, when the queue
drops and says so, and how the fleet's state converges by itself after a drop.

Pure decisions (domain/ingest.py) are table-driven; the queue and the fleet service run over a real SQLite store
with an injected clock. The broker is the one stand-in: `RetainedBroker` keeps the latest retained payload per
topic, as Mosquitto does, and redelivers it when the service asks for a device's retained topics again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.domain.fleet import DeviceEventRecord, EventSource
from control_plane.domain.ingest import (
    DropNotice,
    Incoming,
    Leaf,
    WritesBuilder,
    note_drop,
    resync_chunk,
)
from control_plane.domain.rates import RatePolicy
from control_plane.services.fleet import FleetService, MessageLimits
from control_plane.services.ingest import IngestLimits, IngestQueue
from edge_agent.protocol import (
    DeviceEvent,
    EventBatch,
    EventStep,
    HardwareFacts,
    MessageKind,
    Presence,
    PresenceStatus,
    ReportedState,
    Telemetry,
    Topics,
    seal,
)
from edge_agent.protocol.messages import MAX_EVENTS_PER_MESSAGE

T0 = datetime(2030, 1, 1, tzinfo=UTC)
HW = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")


def report(device_id: str, agent_version: str = "1.0", applied: int = 0) -> ReportedState:
    return ReportedState(device_id=device_id, agent_version=agent_version, applied_generation=applied, hardware=HW)


def event(device_id: str, n: int, source: EventSource = EventSource.DEVICE) -> DeviceEventRecord:
    return DeviceEventRecord(device_id, 0, "error", None, None, f"e{n}", T0, source)


# -- what a batch keeps -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "reports", "highest", "events", "seen"),
    [
        pytest.param(
            [("report", "d1", "v1", 1, 0), ("report", "d1", "v2", 0, 1)],
            {"d1": "v2"},
            {"d1": 1},
            [],
            {"d1": 1},
            id="latest-report-wins-highest-generation-kept",
        ),
        pytest.param(
            [("event", "d1", "", 0, 0), ("report", "d2", "v1", 0, 2), ("event", "d1", "", 1, 1)],
            {"d2": "v1"},
            {"d2": 0},
            ["e0", "e1"],
            {"d1": 1, "d2": 2},
            id="every-event-kept-in-order",
        ),
        pytest.param(
            [("cp-event", "d1", "", 0, 5)],
            {},
            {},
            ["e0"],
            {},
            id="control-plane-event-is-not-the-device-seen",
        ),
    ],
)
def test_a_batch_keeps_the_latest_report_and_every_event(
    steps: list[tuple[str, str, str, int, int]],
    reports: dict[str, str],
    highest: dict[str, int],
    events: list[str],
    seen: dict[str, int],
) -> None:
    builder = WritesBuilder()
    for kind, device_id, version, n, at in steps:
        when = T0 + timedelta(seconds=at)
        if kind == "report":
            builder.report(report(device_id, version, applied=n), when, adopt_hardware=False)
        else:
            source = EventSource.DEVICE if kind == "event" else EventSource.CONTROL_PLANE
            builder.event(event(device_id, n, source), when)
    writes = builder.build()
    assert {d: w.reported.agent_version for d, w in writes.reports.items()} == reports
    assert {d: w.highest_applied for d, w in writes.reports.items()} == highest
    assert [e.reason for e in writes.events] == events
    assert {d: int((t - T0).total_seconds()) for d, t in writes.seen.items()} == seen


def test_every_telemetry_window_is_kept_and_wakes_its_device() -> None:
    builder = WritesBuilder()
    for n in range(3):
        builder.telemetry("d1", Telemetry(window_s=10 + n), T0 + timedelta(seconds=n))
    builder.status("d2", PresenceStatus.ONLINE, T0)
    writes = builder.build()
    assert [t.telemetry.window_s for t in writes.telemetry] == [10, 11, 12]
    assert writes.wakes == {"d1"}  # presence alone moves no rollout


@pytest.mark.parametrize(
    ("warned_s_ago", "since", "expect_warn", "expect_since"),
    [
        pytest.param(None, 0, 1, 0, id="first-drop-warns"),
        pytest.param(3, 41, None, 42, id="within-the-window-counted"),
        pytest.param(10, 41, 42, 0, id="window-over-warns-with-the-count"),
    ],
)
def test_drops_warn_once_per_window_with_their_count(
    warned_s_ago: int | None, since: int, expect_warn: int | None, expect_since: int
) -> None:
    warned = None if warned_s_ago is None else T0 - timedelta(seconds=warned_s_ago)
    state, warn = note_drop(DropNotice(since, warned), T0, timedelta(seconds=10))
    assert (warn, state.since_warning) == (expect_warn, expect_since)


@pytest.mark.parametrize(
    ("room", "limit", "expect"),
    [
        pytest.param(10, 100, ["a", "b", "c"], id="all-fit"),
        pytest.param(4, 100, ["a", "b"], id="two-messages-per-device"),
        pytest.param(100, 1, ["a"], id="at-most-limit"),
        pytest.param(1, 100, [], id="no-room"),
    ],
)
def test_a_resync_takes_what_the_queue_has_room_for(room: int, limit: int, expect: list[str]) -> None:
    assert resync_chunk(["a", "b", "c"], room, limit) == expect


# -- the queue ----------------------------------------------------------------------------------------------------


def incoming(device_id: str, leaf: Leaf, size: int = 10) -> Incoming:
    return Incoming(device_id, leaf, b"x" * size, T0)


def test_a_full_queue_drops_counts_and_remembers_only_retained_losses() -> None:
    queue = IngestQueue(IngestLimits(capacity=2, batch=10, linger_s=0), lambda: T0)
    offered = [
        queue.offer(incoming(d, leaf))
        for d, leaf in [("a", Leaf.REPORTED), ("b", Leaf.EVENTS), ("c", Leaf.STATUS), ("d", Leaf.TELEMETRY)]
    ]
    assert offered == [True, True, False, False]
    counters = queue.counters()
    assert (counters.received, counters.queued, counters.dropped, counters.high_water) == (2, 2, 2, 2)
    assert counters.last_drop_at == T0 and counters.resync_pending == 1  # c's presence; d's telemetry is gone
    assert queue.resync_due() == []  # not caught up yet
    assert [m.device_id for m in queue.take(wait_s=0)] == ["a", "b"]
    queue.applied(2)
    assert queue.resync_due() == ["c"]
    counters = queue.counters()
    assert (counters.batches, counters.mean_batch, counters.resyncs, counters.resync_pending) == (1, 2.0, 1, 0)


def test_the_queue_is_bounded_in_bytes_too() -> None:
    queue = IngestQueue(IngestLimits(capacity=100, max_bytes=1024), lambda: T0)
    assert queue.offer(incoming("a", Leaf.REPORTED, 1000))
    assert not queue.offer(incoming("b", Leaf.REPORTED, 100))
    assert queue.counters().queued_bytes == 1000


# -- the fleet service over a real store --------------------------------------------------------------------------


@dataclass
class RetainedBroker:
    """Keeps the latest retained payload per topic and redelivers a device's on request, as Mosquitto does."""

    fleet: FleetService | None = None
    retained: dict[str, bytes] = field(default_factory=dict)
    asked: list[list[str]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        if retain:
            self.retained[topic] = payload
        assert self.fleet is not None
        self.fleet.handle_message(topic, payload)

    def refetch(self, device_ids: Sequence[str]) -> bool:
        self.asked.append(list(device_ids))
        assert self.fleet is not None
        for device_id in device_ids:
            for leaf in ("reported", "status"):
                topic = f"edge/devices/{device_id}/{leaf}"
                if topic in self.retained:
                    self.fleet.handle_message(topic, self.retained[topic])
        return True


@dataclass
class World:
    store: FleetRepository
    fleet: FleetService
    broker: RetainedBroker
    woken: list[Collection[str]]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    store = FleetRepository(engine, events_kept=50)
    world = make_world(store, IngestLimits(capacity=10, batch=4, linger_s=0))
    yield world
    engine.dispose()


def make_world(store: FleetRepository, ingest: IngestLimits) -> World:
    limits = MessageLimits(RatePolicy(per_s=1000.0, burst=10_000))
    fleet = FleetService(store, Topics(), lambda: T0, timedelta(seconds=90), limits=limits, ingest=ingest)
    broker = RetainedBroker(fleet)
    fleet.set_resync(broker.refetch)
    woken: list[Collection[str]] = []
    fleet.on_report(woken.append)
    return World(store, fleet, broker, woken)


def sealed_report(device_id: str, version: str) -> bytes:
    return seal(MessageKind.REPORTED, device_id, report(device_id, version), T0)


def sealed_event(device_id: str, n: int) -> bytes:
    return seal(
        MessageKind.EVENT, device_id, DeviceEvent(generation=0, step=EventStep.ERROR, reason=f"e{n}", at=T0), T0
    )


def test_one_batch_stores_the_latest_report_every_event_and_wakes_once(world: World) -> None:
    for device_id in ("dev-1", "dev-2"):
        world.store.enroll(device_id, "mqtt", {}, None, HW, None, T0)
    for n in range(3):
        world.fleet.handle_message("edge/devices/dev-1/reported", sealed_report("dev-1", f"v{n}"))
        world.fleet.handle_message("edge/devices/dev-2/events", sealed_event("dev-2", n))
    world.fleet.handle_message(
        "edge/devices/dev-2/status", seal(MessageKind.STATUS, "dev-2", Presence(state=PresenceStatus.ONLINE), T0)
    )

    assert world.fleet.drain() == 7
    one, two = world.store.get_device("dev-1"), world.store.get_device("dev-2")
    assert one is not None and one.reported is not None and one.reported.agent_version == "v2"
    assert two is not None and two.status is PresenceStatus.ONLINE and two.reported is None
    assert [e.reason for e in world.store.list_events("dev-2", 10)] == ["e2", "e1", "e0"]
    assert [set(w) for w in world.woken] == [
        {"dev-1"},
        {"dev-1"},
    ]  # two batches of at most 4; dev-2 only reported status


def batch_of(device_id: str, reasons: Sequence[str], sealed_as: str | None = None) -> bytes:
    events = [DeviceEvent(generation=0, step=EventStep.ERROR, reason=r, at=T0) for r in reasons]
    return seal(MessageKind.EVENTS, sealed_as or device_id, EventBatch.model_construct(events=events), T0)


def test_an_event_batch_stores_every_event_in_order_beside_single_events(world: World) -> None:
    world.store.enroll("dev-1", "mqtt", {}, None, HW, None, T0)
    world.fleet.handle_message("edge/devices/dev-1/events", sealed_event("dev-1", 0))  # an agent before 0016
    world.fleet.handle_message("edge/devices/dev-1/events", batch_of("dev-1", ["b1", "b2", "b3"]))
    world.fleet.drain()
    assert [e.reason for e in world.store.list_events("dev-1", 10)] == ["b3", "b2", "b1", "e0"]


@pytest.mark.parametrize(
    ("reasons", "sealed_as"),
    [
        ([], None),  # an empty batch
        ([f"x{n}" for n in range(MAX_EVENTS_PER_MESSAGE + 1)], None),  # over the batch limit
        (["forged"], "dev-2"),  # another device's batch on this device's topic
    ],
)
def test_a_malformed_event_batch_stores_none_of_its_events(
    world: World, reasons: list[str], sealed_as: str | None
) -> None:
    for device_id in ("dev-1", "dev-2"):
        world.store.enroll(device_id, "mqtt", {}, None, HW, None, T0)
    world.fleet.handle_message("edge/devices/dev-1/events", batch_of("dev-1", reasons, sealed_as))
    world.fleet.handle_message("edge/devices/dev-1/events", sealed_event("dev-1", 1))
    world.fleet.drain()
    assert [e.reason for e in world.store.list_events("dev-1", 50)] == ["e1"]
    assert world.store.list_events("dev-2", 50) == []


def test_a_refused_report_in_a_batch_is_recorded_and_the_next_one_still_counts(world: World) -> None:
    world.store.enroll("dev-1", "mqtt", {}, None, HW, None, T0)
    never_issued = report("dev-1", "v9", applied=7)
    world.fleet.handle_message("edge/devices/dev-1/reported", seal(MessageKind.REPORTED, "dev-1", never_issued, T0))
    world.fleet.handle_message("edge/devices/dev-1/reported", sealed_report("dev-1", "v1"))
    world.fleet.drain()
    device = world.store.get_device("dev-1")
    assert device is not None and device.reported is not None and device.reported.agent_version == "v1"
    refusals = [e.reason for e in world.store.list_events("dev-1", 10) if e.step == "report_refused"]
    assert refusals == ["report refused: reports applied generation 7, but generation 0 is the newest issued"]


def test_a_report_clears_the_delivery_failure_it_answers_and_adopts_first_hardware(world: World) -> None:
    world.store.enroll("dev-1", "mqtt", {}, None, None, None, T0)
    world.store.record_delivery_failure("dev-1", 0, "unreachable", T0)
    world.fleet.accept_report(report("dev-1"))
    device = world.store.get_device("dev-1")
    assert device is not None and device.delivery_failure is None
    assert (device.gpu_class, device.hardware) == ("cpu-x86_64", HW)
    assert [set(w) for w in world.woken] == [{"dev-1"}]


def test_after_a_burst_over_the_queue_the_stored_state_converges_to_the_retained_one(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    store = FleetRepository(engine)
    world = make_world(store, IngestLimits(capacity=8, batch=4, linger_s=0))
    devices = [f"dev-{n}" for n in range(30)]
    for device_id in devices:
        store.enroll(device_id, "mqtt", {}, None, HW, None, T0)
    for version in ("v1", "v2", "v3"):  # the burst: 90 reports into a queue of 8, nothing drained meanwhile
        for device_id in devices:
            world.broker.publish(f"edge/devices/{device_id}/reported", sealed_report(device_id, version), retain=True)
    dropped = world.fleet.ingest_counters().dropped
    assert dropped == 90 - 8

    rounds = 0
    while world.fleet.drain() or world.fleet.resync_now():  # the writer's loop, on this thread
        rounds += 1
        assert rounds < 100, "the resyncs never converge"

    stored = {d: store.get_device(d) for d in devices}
    assert {d: v.reported.agent_version for d, v in stored.items() if v and v.reported} == dict.fromkeys(devices, "v3")
    counters = world.fleet.ingest_counters()
    assert counters.resyncs >= 1 and counters.resync_pending == 0 and counters.dropped >= dropped
    assert all(len(chunk) <= 8 // 2 // 2 for chunk in world.broker.asked)  # a chunk fits half the queue's room
    engine.dispose()
