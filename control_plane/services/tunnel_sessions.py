"""Tunnel sessions: opening one (who may reach which device's service, and where it listens), counting its bytes,
ending it once (by its relay, an operator, or a timeout), and listing them.

A session is recorded twice: a row and an audit record when it opens, the row again when it ends, written behind
the relay by `SessionRecorder` (no proxied request waits on a database write). Between the two its byte counts live
in memory (`LiveSession`), so relaying a chunk costs nothing but a counter. The relays
(control_plane/api/tunnel_relay.py) run on the server's event loop: they call `open` (it reads the device's
admission) in a worker thread and `finish` (it only queues) directly; an operator's close and the reaper's timeouts
stop a relay from any thread through `LiveSession.stop`.

Sessions are held by the process that relays them: one that stopped without closing its sessions has them closed
as errors when it starts again (`recover`). This module never touches a socket; where a service listens is
`control_plane.domain.tunnels.service_socket`, the gateway's own rule.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from control_plane.domain.audit import AuditEntry
from control_plane.domain.errors import BadGateway, Conflict, InvalidInput, NotFound
from control_plane.domain.identity import Principal
from control_plane.domain.paging import Page, check_limit, page_of, parse_time_cursor, time_cursor
from control_plane.domain.tunnel_sessions import SessionEnd, SessionKind, SessionLimits, TunnelSession, overdue
from control_plane.domain.tunnels import Admission, service_socket, validate_service_name
from control_plane.services.audit import AuditService
from control_plane.services.ports import Clock
from control_plane.services.session_recorder import SessionRecorder, SessionStore
from edge_agent.protocol.topics import validate_device_id

log = logging.getLogger(__name__)

STOPPED = "the control plane stopped while the session was open"
SHOWN_NAME = 64  # characters of a refused device or service name repeated in an error


class AdmissionStore(Protocol):
    def admissions(self, device_ids: Iterable[str]) -> dict[str, Admission]: ...


class UpstreamAnswer(Protocol):
    """A device's service's answer to a proxied request: its head, then its body as it arrives."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Sequence[tuple[str, str]]: ...
    def body(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class ServiceUpstream(Protocol):
    """Reaching a service at its gateway socket (control_plane/adapters/service_sockets.py). Failures are
    `NotConnected` (nothing listens), `BadGateway` (the service answered nothing) or `GatewayTimeout`."""

    async def request(
        self,
        socket: Path,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterator[bytes] | None,
    ) -> UpstreamAnswer: ...

    async def connect(self, socket: Path) -> ByteStream: ...


class ByteStream(Protocol):
    async def read(self) -> bytes: ...  # b"": the other end closed
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class SessionPolicy:
    run_dir: Path  # the gateway's tunnel.run_dir: where devices' services listen
    services: frozenset[str]  # the gateway's tunnel.services: the names devices may expose
    limits: SessionLimits


@dataclass(frozen=True)
class SessionRequest:
    """What a relay asks to open, and what the audit record of the opening names."""

    device_id: str
    service: str
    kind: SessionKind
    request_id: str
    method: str  # the API's method (WEBSOCKET for a tcp session)
    route: str
    path: str
    request: str | None = None  # http: `METHOD /path` on the device


Stop = Callable[[], None]  # ends a relay; thread-safe (it schedules onto the relay's event loop)


class LiveSession:
    """An open session as its relay sees it: where to connect, and its counts (updated only by the relay)."""

    def __init__(self, record: TunnelSession, socket: Path, clock: Clock) -> None:
        self.record = record
        self.socket = socket
        self._clock = clock
        self.bytes_to_device = 0
        self.bytes_from_device = 0
        self.last_active = record.opened_at
        self.ended: SessionEnd | None = None  # set once, under the service's lock: the first ending wins
        self._stop: Stop | None = None

    @property
    def id(self) -> str:
        return self.record.id

    def to_device(self, count: int) -> None:
        self.bytes_to_device += count
        self.last_active = self._clock()

    def from_device(self, count: int) -> None:
        self.bytes_from_device += count
        self.last_active = self._clock()

    def on_stop(self, stop: Stop) -> None:
        """What ends this session's relay when an operator or a timeout closes it."""
        self._stop = stop

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()

    def snapshot(self) -> TunnelSession:
        return replace(self.record, bytes_to_device=self.bytes_to_device, bytes_from_device=self.bytes_from_device)


class TunnelSessionService:
    def __init__(
        self,
        store: SessionStore,
        admissions: AdmissionStore,
        audit: AuditService,
        policy: SessionPolicy,
        clock: Clock,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._store = store
        self._recorder = SessionRecorder(store, audit)
        self._admissions = admissions
        self._policy = policy
        self._clock = clock
        self._new_id = new_id
        self._lock = threading.Lock()
        self._live: dict[str, LiveSession] = {}
        self._reaper: _Reaper | None = None

    # -- opening and ending ---------------------------------------------------------------------------------------
    def open(self, principal: Principal, asked: SessionRequest) -> LiveSession:
        """Record a new session of `principal` to a device's service, or refuse: 404 for a device or service that
        is not there to reach (a name that is not a device id or a service name included), 502 for a device whose
        access is revoked. Never a path from the caller: the socket is derived from the validated names."""
        socket = self._socket(asked.device_id, asked.service)
        now = self._clock()
        record = TunnelSession(
            id=self._new_id(),
            subject=principal.subject,
            who=principal.name,
            device_id=asked.device_id,
            service=asked.service,
            kind=asked.kind,
            opened_at=now,
            request=asked.request,
        )
        live = LiveSession(record, socket, self._clock)
        with self._lock:
            self._live[record.id] = live
        self._recorder.opened(record, _opened_entry(principal, asked, record))
        return live

    def finish(self, live: LiveSession, end: SessionEnd, error: str | None = None) -> TunnelSession | None:
        """End `live` as its relay saw it; None when it was ended already (by an operator or a timeout)."""
        if not self._claim(live, end):
            return None
        return self._write_end(live, end, error)

    def close(self, session_id: str) -> TunnelSession:
        """An operator closes a session: its relay is stopped, its record says so. 404 unknown, 409 closed already."""
        with self._lock:
            live = self._live.get(session_id)
        if live is not None and self._claim(live, SessionEnd.OPERATOR_CLOSED):
            ended = self._write_end(live, SessionEnd.OPERATOR_CLOSED, None)
            live.stop()
            return ended
        self._recorder.flush()
        stored = self._store.get(session_id)
        if stored is None:
            raise NotFound(f"tunnel session {session_id[:SHOWN_NAME]!r} does not exist")
        if stored.open and live is None:  # left open by a process that stopped (or another replica's)
            ended = replace(stored, closed_at=self._clock(), ended=SessionEnd.OPERATOR_CLOSED)
            if self._store.finish(ended):
                return ended
        now_stored = self._store.get(session_id) or stored
        raise Conflict(f"tunnel session {session_id} is closed already ({_ending(now_stored)})")

    def sweep(self) -> list[TunnelSession]:
        """Close the sessions past their idle or absolute limit at this moment; what was closed."""
        now = self._clock()
        with self._lock:
            live = list(self._live.values())
        closed = []
        for session in live:
            end = overdue(session.record.opened_at, session.last_active, now, self._policy.limits)
            if end is not None and self._claim(session, end):
                closed.append(self._write_end(session, end, None))
                session.stop()
        return closed

    def _claim(self, live: LiveSession, end: SessionEnd) -> bool:
        with self._lock:
            if live.ended is not None:
                return False
            live.ended = end
            self._live.pop(live.id, None)
            return True

    def _write_end(self, live: LiveSession, end: SessionEnd, error: str | None) -> TunnelSession:
        ended = replace(live.snapshot(), closed_at=self._clock(), ended=end, error=error)
        self._recorder.ended(ended)
        log.info(
            "tunnel session %s to %s/%s ended: %s%s (%d bytes to the device, %d from it)",
            live.id,
            live.record.device_id,
            live.record.service,
            end.value,
            f": {error}" if error else "",
            ended.bytes_to_device,
            ended.bytes_from_device,
        )
        return ended

    def _socket(self, device_id: str, service: str) -> Path:
        try:
            validate_device_id(device_id)
        except ValueError as exc:
            raise NotFound(f"device {device_id[:SHOWN_NAME]!r} is not known") from exc
        try:
            validate_service_name(service)
            if service not in self._policy.services:
                raise ValueError(service)
        except ValueError as exc:
            offered = ", ".join(sorted(self._policy.services)) or "none"
            raise NotFound(
                f"service {service[:SHOWN_NAME]!r} is not one devices expose (tunnel.services: {offered})"
            ) from exc
        admission = self._admissions.admissions([device_id]).get(device_id)
        if admission is None:
            raise NotFound(f"device {device_id!r} is not known")
        if admission.revoked:
            raise BadGateway(f"device {device_id!r} has no tunnel: its access is revoked (`edgectl devices revoke`)")
        return service_socket(self._policy.run_dir, device_id, service)

    # -- reading ---------------------------------------------------------------------------------------------------
    def page(self, open_only: bool, limit: int, cursor: str | None = None) -> Page[TunnelSession]:
        """Up to `limit` sessions newest first (only open ones with `open_only`), after `cursor`; the open sessions
        this process relays show their byte counts so far."""
        try:
            check_limit(limit)
            after = None if cursor is None else parse_time_cursor(cursor)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        self._recorder.flush()
        found = [self._current(s) for s in self._store.page(open_only, after, limit + 1)]
        return page_of(found, limit, lambda s: time_cursor(s.opened_at, s.id))

    def get(self, session_id: str) -> TunnelSession:
        self._recorder.flush()
        stored = self._store.get(session_id)
        if stored is None:
            raise NotFound(f"tunnel session {session_id[:SHOWN_NAME]!r} does not exist")
        return self._current(stored)

    def _current(self, stored: TunnelSession) -> TunnelSession:
        with self._lock:
            live = self._live.get(stored.id)
        return live.snapshot() if live is not None and stored.open else stored

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._live)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self, sweep_interval_s: float = 1.0) -> None:
        """Close what a previous run left open, then check the timeouts every `sweep_interval_s`."""
        self.recover()
        self._reaper = _Reaper(self, sweep_interval_s)
        self._reaper.start()

    def recover(self) -> int:
        """End the sessions a previous run of the control plane left recorded open (their relays died with it)."""
        left = self._store.close_all_open(self._clock(), STOPPED)
        if left:
            log.warning("closed %d tunnel session(s) a previous run left open", left)
        return left

    def shutdown(self) -> None:
        """Stop the reaper and end every session still open (their relays are stopped too)."""
        if self._reaper is not None:
            self._reaper.stop()
        with self._lock:
            live = list(self._live.values())
        for session in live:
            if self._claim(session, SessionEnd.ERROR):
                self._write_end(session, SessionEnd.ERROR, STOPPED)
                session.stop()
        self._recorder.stop()

    def flush(self) -> None:
        """Wait until every session opened or ended so far is written (readers of the store do this first)."""
        self._recorder.flush()


class _Reaper:
    """The thread that applies the timeouts (`TunnelSessionService.sweep`) every interval until stopped."""

    def __init__(self, service: TunnelSessionService, interval_s: float) -> None:
        self._service = service
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunnel-session-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self._service.sweep()
            except Exception:  # a database hiccup must not end the timeouts; the next sweep tries again
                log.exception("tunnel session sweep failed")


def _ending(session: TunnelSession) -> str:
    return session.ended.value if session.ended is not None else "ended"


def _opened_entry(principal: Principal, asked: SessionRequest, record: TunnelSession) -> AuditEntry:
    return AuditEntry.of(
        request_id=asked.request_id,
        subject=principal.subject,
        name=principal.name,
        role=principal.role.value,
        method=asked.method,
        route=asked.route,
        path=asked.path,
        status=200,  # admitted; how the session went is its own record (GET /v1/tunnel-sessions/{id})
        detail=f"tunnel session {record.id} opened: {asked.kind.value} to {asked.device_id}/{asked.service}"
        + (f" ({asked.request})" if asked.request else ""),
    )
