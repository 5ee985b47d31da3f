"""Persistence of the audit log: append at the end of the chain, read pages in order. Nothing here changes or
removes a record (the database refuses it too: migration 0007's triggers)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from control_plane.adapters.db.convert import from_row, to_row
from control_plane.adapters.db.tables import AuditRow
from control_plane.domain.audit import GENESIS_HASH, AuditEntry, AuditRecord, seal
from control_plane.domain.errors import Conflict

APPEND_ATTEMPTS = 50  # each lost race means another writer appended: progress, so give up only under a storm


class AuditRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def append(self, entry: AuditEntry, at: datetime) -> AuditRecord:
        """Seal `entry` onto the end of the chain: seq = last + 1, prev_hash = last hash, read and written in one
        transaction. A concurrent writer that took the same seq makes the insert fail on the primary key; then the
        new end is read again. The chain never forks."""
        for _attempt in range(APPEND_ATTEMPTS):
            try:
                with self._sessions.begin() as session:
                    return self._append(session, entry, at)
            except IntegrityError:
                continue
        raise Conflict(f"could not append to the audit log after {APPEND_ATTEMPTS} attempts (writers kept racing)")

    def _append(self, session: Session, entry: AuditEntry, at: datetime) -> AuditRecord:
        last = session.execute(select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)).first()
        seq, prev_hash = (last.seq + 1, last.hash) if last is not None else (1, GENESIS_HASH)
        record = seal(entry, seq, at, prev_hash)
        session.add(to_row(AuditRow, record))
        session.flush()
        return record

    def page(self, after: int, limit: int) -> list[AuditRecord]:
        """Up to `limit` records with seq > `after`, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(select(AuditRow).where(AuditRow.seq > after).order_by(AuditRow.seq).limit(limit))
            return [from_row(AuditRecord, r) for r in rows]
