"""Tunnel sessions as audited objects (control_plane/services/tunnel_sessions.py) on a real database, SQLite and
PostgreSQL (migration 0012), with an injected clock for the timeouts.

What an operator relies on: a session is recorded when it opens (with an audit record) and when it ends (with its
byte counts), never per chunk; idle and absolute timeouts end it; an operator's close ends it once; sessions a
stopped control plane left open are closed when it starts again; lists page newest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from control_plane.adapters.db.audit_repository import AuditRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.tunnel_session_repository import TunnelSessionRepository
from control_plane.domain.audit import AuditEntry
from control_plane.domain.errors import BadGateway, Conflict, NotFound, Unavailable
from control_plane.domain.identity import Principal, Role
from control_plane.domain.tunnel_sessions import SessionEnd, SessionKind, SessionLimits, TunnelSession
from control_plane.domain.tunnels import Admission, service_socket
from control_plane.services.audit import AuditService
from control_plane.services.session_recorder import SessionRecorder
from control_plane.services.tunnel_sessions import STOPPED, SessionPolicy, SessionRequest, TunnelSessionService

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IDLE = timedelta(minutes=15)
ABSOLUTE = timedelta(hours=8)
OPERATOR = Principal("token:op1", "ops", Role.OPERATOR)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Devices:
    """The admissions the service reads (the gateway's own port): who is known, who is revoked."""

    def __init__(self) -> None:
        self.rows = {
            "dev-a": Admission("dev-a", "k" * 44, revoked=False),
            "dev-r": Admission("dev-r", "k" * 44, revoked=True),
        }

    def admissions(self, device_ids: Iterable[str]) -> dict[str, Admission]:
        return {d: self.rows[d] for d in device_ids if d in self.rows}


@dataclass
class Setup:
    service: TunnelSessionService
    store: TunnelSessionRepository
    audit: AuditRepository
    clock: Clock
    run_dir: Path


@pytest.fixture
def setup(database_url: str, tmp_path: Path) -> Iterator[Setup]:
    engine = make_engine(database_url)
    migrate(engine)
    clock = Clock()
    store, audit = TunnelSessionRepository(engine), AuditRepository(engine)
    policy = SessionPolicy(tmp_path / "tunnels", frozenset({"kserve", "ssh"}), SessionLimits(IDLE, ABSOLUTE))
    ids = (f"s{i:03d}" for i in range(1000))
    service = TunnelSessionService(store, Devices(), AuditService(audit, clock), policy, clock, lambda: next(ids))
    try:
        yield Setup(service, store, audit, clock, tmp_path / "tunnels")
    finally:
        service.shutdown()
        engine.dispose()


def stored(setup: Setup, session_id: str) -> TunnelSession | None:
    """The session's row as written (the records are written behind the relays: wait for them first)."""
    setup.service.flush()
    return setup.store.get(session_id)


def ask(device: str = "dev-a", service: str = "kserve", kind: SessionKind = SessionKind.TCP) -> SessionRequest:
    return SessionRequest(device, service, kind, "req-1", "WEBSOCKET", "/v1/devices/{device_id}/tunnel/{service}", "/p")


class Stops:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_a_session_is_written_when_it_opens_and_when_it_ends_never_per_chunk(setup: Setup) -> None:
    live = setup.service.open(OPERATOR, ask())
    assert live.socket == service_socket(setup.run_dir, "dev-a", "kserve")
    for _ in range(1000):
        live.to_device(100)
        live.from_device(50)
    row = stored(setup, live.id)
    assert row is not None and row.open and (row.bytes_to_device, row.bytes_from_device) == (0, 0)
    shown = setup.service.get(live.id)  # the API shows what the relay counted so far
    assert (shown.bytes_to_device, shown.bytes_from_device) == (100_000, 50_000)

    setup.clock.advance(timedelta(seconds=90))
    ended = setup.service.finish(live, SessionEnd.CLIENT_CLOSED)
    assert ended is not None
    assert stored(setup, live.id) == TunnelSession(
        id=live.id,
        subject="token:op1",
        who="ops",
        device_id="dev-a",
        service="kserve",
        kind=SessionKind.TCP,
        opened_at=T0,
        closed_at=T0 + timedelta(seconds=90),
        bytes_to_device=100_000,
        bytes_from_device=50_000,
        ended=SessionEnd.CLIENT_CLOSED,
    )
    (opened,) = [r for r in setup.audit.page(0, 100) if live.id in (r.detail or "")]  # flushed above
    assert (opened.subject, opened.name, opened.method, opened.outcome.value) == ("token:op1", "ops", "WEBSOCKET", "ok")
    assert "tcp to dev-a/kserve" in (opened.detail or "")


def test_an_idle_session_and_one_open_too_long_are_closed_and_their_relays_stopped(setup: Setup) -> None:
    idle, busy = setup.service.open(OPERATOR, ask()), setup.service.open(OPERATOR, ask(service="ssh"))
    stops = {live.id: Stops() for live in (idle, busy)}
    for live in (idle, busy):
        live.on_stop(stops[live.id])

    setup.clock.advance(IDLE - timedelta(seconds=1))
    busy.to_device(10)
    assert setup.service.sweep() == []
    setup.clock.advance(timedelta(seconds=1))
    (closed,) = setup.service.sweep()
    assert (closed.id, closed.ended) == (idle.id, SessionEnd.IDLE_TIMEOUT)
    assert stops[idle.id].count == 1 and stops[busy.id].count == 0

    while setup.clock.now - T0 < ABSOLUTE:  # busy all along: only the absolute limit ends it
        setup.clock.advance(timedelta(minutes=10))
        busy.from_device(1)
        closed_now = setup.service.sweep()
        assert closed_now == [] or setup.clock.now - T0 >= ABSOLUTE
    row = stored(setup, busy.id)
    assert row is not None and row.ended is SessionEnd.ABSOLUTE_TIMEOUT and stops[busy.id].count == 1
    assert setup.service.finish(busy, SessionEnd.CLIENT_CLOSED) is None  # the relay's own end comes second: no-op
    assert stored(setup, busy.id) == row


def test_an_operator_closes_a_session_once(setup: Setup) -> None:
    live = setup.service.open(OPERATOR, ask())
    stops = Stops()
    live.on_stop(stops)
    live.from_device(7)
    closed = setup.service.close(live.id)
    assert (closed.ended, closed.bytes_from_device, stops.count) == (SessionEnd.OPERATOR_CLOSED, 7, 1)
    with pytest.raises(Conflict, match="closed already \\(closed by operator\\)"):
        setup.service.close(live.id)
    with pytest.raises(NotFound):
        setup.service.close("nonexistent")
    assert setup.service.finish(live, SessionEnd.SERVICE_CLOSED) is None
    row = stored(setup, live.id)
    assert row is not None and row.ended is SessionEnd.OPERATOR_CLOSED


def test_sessions_a_stopped_control_plane_left_open_are_closed_at_start(setup: Setup) -> None:
    setup.store.insert(TunnelSession("left", "token:x", "x", "dev-a", "ssh", SessionKind.TCP, T0 - timedelta(hours=1)))
    assert setup.service.recover() == 1
    row = stored(setup, "left")
    assert row is not None and (row.ended, row.error, row.closed_at) == (SessionEnd.ERROR, STOPPED, T0)
    assert setup.service.page(True, 10).items == ()


@pytest.mark.parametrize(
    ("device", "service", "error", "text"),
    [
        pytest.param("dev-unknown", "kserve", NotFound, "is not known", id="unknown-device"),
        pytest.param("../dev-a", "kserve", NotFound, "is not known", id="path-in-device"),
        pytest.param("dev-a", "../ssh", NotFound, "not one devices expose", id="path-in-service"),
        pytest.param("dev-a", "postgres", NotFound, "not one devices expose", id="unallocated-service"),
        pytest.param("dev-r", "ssh", BadGateway, "access is revoked", id="revoked-device"),
    ],
)
def test_what_is_refused_is_not_recorded(
    setup: Setup, device: str, service: str, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        setup.service.open(OPERATOR, ask(device, service))
    assert setup.service.page(False, 10).items == ()
    assert setup.audit.page(0, 10) == []


def test_sessions_page_newest_first_open_ones_or_all(setup: Setup) -> None:
    opened = []
    for _ in range(5):
        opened.append(setup.service.open(OPERATOR, ask()))
        setup.clock.advance(timedelta(seconds=1))
    setup.service.finish(opened[1], SessionEnd.COMPLETED)
    setup.service.finish(opened[3], SessionEnd.SERVICE_CLOSED)

    first = setup.service.page(True, 2)
    assert [s.id for s in first.items] == [opened[4].id, opened[2].id] and first.next_cursor is not None
    second = setup.service.page(True, 2, first.next_cursor)
    assert [s.id for s in second.items] == [opened[0].id] and second.next_cursor is None
    everything = setup.service.page(False, 10)
    assert [s.id for s in everything.items] == [live.id for live in reversed(opened)]
    assert [s.ended for s in everything.items][1::2] == [SessionEnd.SERVICE_CLOSED, SessionEnd.COMPLETED]


def test_a_database_that_falls_behind_refuses_new_sessions_and_loses_none(database_url: str, setup: Setup) -> None:
    """Records are written behind the relays; while the table is locked by another writer they wait, past the
    recorder's capacity a new session is refused with 503, and once the lock goes every accepted one is written."""
    recorder = SessionRecorder(setup.store, AuditService(setup.audit, setup.clock), capacity=4)
    locker = make_engine(database_url)
    accepted: list[str] = []
    try:
        with locker.connect() as conn:
            transaction = conn.begin()
            lock = "LOCK TABLE tunnel_sessions IN EXCLUSIVE MODE" if "postgresql" in database_url else None
            conn.exec_driver_sql(lock or "DELETE FROM tunnel_sessions WHERE id = ''")  # holds the write lock
            with pytest.raises(Unavailable, match="try again"):
                for i in range(10):
                    session = TunnelSession(f"q{i}", "token:x", "x", "dev-a", "ssh", SessionKind.TCP, T0)
                    recorder.opened(session, AuditEntry.of(**ENTRY))
                    accepted.append(session.id)
            assert 1 <= len(accepted) <= 4
            assert setup.store.get(accepted[0]) is None  # still waiting for the lock: nothing written yet
            transaction.rollback()
        recorder.flush()
        assert all(setup.store.get(i) is not None for i in accepted)
    finally:
        recorder.stop()
        locker.dispose()


ENTRY = {
    "request_id": "r",
    "subject": "token:x",
    "name": "x",
    "role": "operator",
    "method": "WEBSOCKET",
    "route": None,
    "path": "/p",
    "status": 200,
    "detail": None,
}
