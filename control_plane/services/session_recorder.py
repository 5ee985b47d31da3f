"""Writing tunnel sessions' records behind the relays: a session's row and audit record when it opens, its row again
when it ends, in the order they happened, by one writer thread, so that no proxied request waits on the database.

Readers that must see every session opened or ended so far (`TunnelSessionService.page`, `get`, `close`) `flush`
first. Queuing never blocks, so a relay may record its end from the event loop. What waits is bounded: past
`capacity` writes behind, a new session is refused (503, `Unavailable`) rather than memory growing; an ending is
always taken (there is one per session opened). A write that fails is logged and the next one goes on: a row left
open is closed at the next start (`SessionStore.close_all_open`), as after a crash. Never called per chunk.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from control_plane.domain.audit import AuditEntry
from control_plane.domain.errors import Unavailable
from control_plane.domain.tunnel_sessions import TunnelSession
from control_plane.services.audit import AuditService

log = logging.getLogger(__name__)

CAPACITY = 10_000  # writes waiting at most
FLUSH_TIMEOUT_S = 30.0


class SessionStore(Protocol):
    def insert(self, session: TunnelSession) -> None: ...
    def finish(self, session: TunnelSession) -> bool: ...
    def get(self, session_id: str) -> TunnelSession | None: ...
    def page(self, open_only: bool, after: tuple[datetime, str] | None, limit: int) -> list[TunnelSession]: ...
    def close_all_open(self, at: datetime, error: str) -> int: ...


Write = Callable[[], object]


class SessionRecorder:
    def __init__(self, store: SessionStore, audit: AuditService, capacity: int = CAPACITY) -> None:
        self._store = store
        self._audit = audit
        self._capacity = capacity
        self._queue: queue.SimpleQueue[Write | threading.Event | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tunnel-session-writer", daemon=True)
        self._thread.start()

    def opened(self, session: TunnelSession, entry: AuditEntry) -> None:
        """Queue a new session's row and audit record; Unavailable when the writer is `capacity` writes behind."""
        if self._queue.qsize() >= self._capacity:
            raise Unavailable("tunnel sessions cannot be recorded fast enough now: try again in a moment")
        self._queue.put(lambda: self._store.insert(session))
        self._queue.put(lambda: self._audit.record(entry))

    def ended(self, session: TunnelSession) -> None:
        """Queue a session's end (never blocks, never refused)."""
        self._queue.put(lambda: self._store.finish(session))

    def flush(self) -> None:
        """Return once everything queued before this call is written (or after FLUSH_TIMEOUT_S, logged)."""
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(FLUSH_TIMEOUT_S):
            log.error("tunnel session records are %g s behind; reading what is written so far", FLUSH_TIMEOUT_S)

    def stop(self) -> None:
        """Write what is queued, then end the writer."""
        self._queue.put(None)
        self._thread.join(timeout=FLUSH_TIMEOUT_S)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                item()
            except Exception:  # the next write goes on; what stayed open is closed at the next start
                log.exception("a tunnel session record could not be written")
