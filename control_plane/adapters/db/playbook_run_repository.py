"""Persistence of playbook runs (with their per-host results) and their events. Returns domain values only."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from control_plane.adapters.db.convert import from_row, to_row
from control_plane.adapters.db.tables import PlaybookRunEventRow, PlaybookRunRow
from control_plane.domain.playbooks import HostResult, HostStatus, PlaybookRun, RunEvent, RunStatus


class PlaybookRunRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def save_run(self, run: PlaybookRun) -> PlaybookRun:
        """Insert or replace the run's row."""
        with self._sessions.begin() as session:
            row = session.get(PlaybookRunRow, run.id)
            if row is None:
                row = PlaybookRunRow(id=run.id)
                session.add(row)
            row.playbook = run.playbook.value
            row.status = run.status.value
            row.purpose = run.purpose
            row.selector = run.selector
            row.hosts = [_host_json(h) for h in run.hosts]
            row.extra_vars = dict(run.extra_vars)
            row.created_at = run.created_at
            row.started_at = run.started_at
            row.finished_at = run.finished_at
            row.rc = run.rc
            row.error = run.error
        return run

    def get_run(self, run_id: str) -> PlaybookRun | None:
        with self._sessions() as session:
            row = session.get(PlaybookRunRow, run_id)
            return _run_of(row) if row is not None else None

    def list_runs(self, limit: int, statuses: Iterable[RunStatus] | None = None) -> list[PlaybookRun]:
        """Newest first."""
        stmt = select(PlaybookRunRow).order_by(PlaybookRunRow.created_at.desc(), PlaybookRunRow.id.desc())
        if statuses is not None:
            stmt = stmt.where(PlaybookRunRow.status.in_([s.value for s in statuses]))
        with self._sessions() as session:
            return [_run_of(r) for r in session.scalars(stmt.limit(limit))]

    def add_events(self, events: Sequence[RunEvent]) -> None:
        with self._sessions.begin() as session:
            # id: the database's (a RunEvent holds 0 until stored)
            session.add_all(to_row(PlaybookRunEventRow, e, id=None) for e in events)

    def events_since(self, run_id: str, after_id: int, limit: int = 1000) -> list[RunEvent]:
        stmt = (
            select(PlaybookRunEventRow)
            .where(PlaybookRunEventRow.run_id == run_id, PlaybookRunEventRow.id > after_id)
            .order_by(PlaybookRunEventRow.id)
            .limit(limit)
        )
        with self._sessions() as session:
            return [from_row(RunEvent, r) for r in session.scalars(stmt)]


def _host_json(h: HostResult) -> dict[str, Any]:
    return {
        "host": h.host,
        "status": h.status.value,
        "result": dict(h.result) if h.result is not None else None,
        "message": h.message,
    }


def _run_of(row: PlaybookRunRow) -> PlaybookRun:
    hosts = tuple(
        HostResult(str(h["host"]), HostStatus(h["status"]), result=h.get("result"), message=h.get("message"))
        for h in row.hosts
    )
    return from_row(PlaybookRun, row, hosts=hosts)
