"""Persistence of tunnel sessions (migration 0012): one insert when a session opens, one update when it closes, and
pages of them newest first. Byte counts arrive only with the close: nothing here is called per chunk of bytes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, and_, or_, select, update
from sqlalchemy.orm import sessionmaker

from control_plane.adapters.db.convert import from_row, to_row
from control_plane.adapters.db.tables import TunnelSessionRow
from control_plane.domain.tunnel_sessions import SessionEnd, TunnelSession


class TunnelSessionRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def insert(self, session: TunnelSession) -> None:
        with self._sessions.begin() as db:
            db.add(to_row(TunnelSessionRow, session))

    def finish(self, session: TunnelSession) -> bool:
        """Record how an open session ended; False when it was closed already (the first ending stays)."""
        stmt = (
            update(TunnelSessionRow)
            .where(TunnelSessionRow.id == session.id, TunnelSessionRow.closed_at.is_(None))
            .values(
                closed_at=session.closed_at,
                bytes_to_device=session.bytes_to_device,
                bytes_from_device=session.bytes_from_device,
                ended=session.ended.value if session.ended is not None else None,
                error=session.error,
            )
        )
        with self._sessions.begin() as db:
            return bool(cast(CursorResult[Any], db.execute(stmt)).rowcount)

    def get(self, session_id: str) -> TunnelSession | None:
        with self._sessions() as db:
            row = db.get(TunnelSessionRow, session_id)
            return None if row is None else from_row(TunnelSession, row)

    def page(self, open_only: bool, after: tuple[datetime, str] | None, limit: int) -> list[TunnelSession]:
        """Up to `limit` sessions, newest first, after the (opened_at, id) `after`; only open ones with `open_only`."""
        stmt = select(TunnelSessionRow).order_by(TunnelSessionRow.opened_at.desc(), TunnelSessionRow.id.desc())
        if open_only:
            stmt = stmt.where(TunnelSessionRow.closed_at.is_(None))
        if after is not None:
            at, key = after
            stmt = stmt.where(
                or_(
                    TunnelSessionRow.opened_at < at,
                    and_(TunnelSessionRow.opened_at == at, TunnelSessionRow.id < key),
                )
            )
        with self._sessions() as db:
            return [from_row(TunnelSession, r) for r in db.scalars(stmt.limit(limit))]

    def close_all_open(self, at: datetime, error: str) -> int:
        """End every session still recorded open (a control plane stopped while holding it); how many there were."""
        stmt = (
            update(TunnelSessionRow)
            .where(TunnelSessionRow.closed_at.is_(None))
            .values(closed_at=at, ended=SessionEnd.ERROR.value, error=error)
        )
        with self._sessions.begin() as db:
            return int(cast(CursorResult[Any], db.execute(stmt)).rowcount)
