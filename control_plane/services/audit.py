"""Writing and reading the audit log (docs/api.md, "Audit log").

`record` is called once per audited request by the API's audit middleware (control_plane/api/audit_trail.py), in
a worker thread. It must never raise: a request whose audit record cannot be written still gets its answer, and
the failure is logged at ERROR and counted (`write_failures`) so that an operator sees the log has a hole.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Protocol

from control_plane.domain.audit import MAX_PAGE, AuditEntry, AuditRecord
from control_plane.domain.errors import InvalidInput
from control_plane.services.ports import Clock

log = logging.getLogger(__name__)


class AuditStore(Protocol):
    def append(self, entry: AuditEntry, at: datetime) -> AuditRecord: ...
    def page(self, after: int, limit: int) -> list[AuditRecord]: ...


class AuditService:
    def __init__(self, store: AuditStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._write_failures = 0

    @property
    def write_failures(self) -> int:
        """Audit records lost since start (each one logged at ERROR)."""
        return self._write_failures

    def record(self, entry: AuditEntry) -> AuditRecord | None:
        """Append `entry`; None (logged, counted) when it could not be written."""
        try:
            # One writer at a time in this process; writers in other processes are serialised by the store.
            with self._lock:
                return self._store.append(entry, self._clock())
        except Exception:  # whatever broke, the request it describes must still be answered
            with self._lock:
                self._write_failures += 1
            log.exception(
                "AUDIT RECORD LOST (%d so far): %s %s -> %d by %s, request id %s",
                self._write_failures,
                entry.method,
                entry.path,
                entry.status,
                entry.subject,
                entry.request_id,
            )
            return None

    def page(self, after: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Up to `limit` (1..MAX_PAGE) records after seq `after`, oldest first."""
        if after < 0:
            raise InvalidInput("after: must be 0 or more")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit: between 1 and {MAX_PAGE}")
        return self._store.page(after, limit)
