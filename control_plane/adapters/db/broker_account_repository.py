"""Persistence of devices' broker accounts: issued or revoked, never a password (the broker keeps only its hash)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from control_plane.adapters.db.convert import from_row
from control_plane.adapters.db.tables import BrokerAccountRow
from control_plane.domain.broker_identity import BrokerAccount


class BrokerAccountRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def get(self, device_id: str) -> BrokerAccount | None:
        with self._sessions() as session:
            row = session.get(BrokerAccountRow, device_id)
            return from_row(BrokerAccount, row) if row is not None else None

    def active_ids(self) -> set[str]:
        with self._sessions() as session:
            return set(session.scalars(select(BrokerAccountRow.device_id).where(BrokerAccountRow.active.is_(True))))

    def issue(self, device_id: str, by: str, now: datetime) -> BrokerAccount:
        with self._sessions.begin() as session:
            row = session.get(BrokerAccountRow, device_id)
            if row is None:
                row = BrokerAccountRow(device_id=device_id, active=True)
                session.add(row)
            row.active, row.issued_at, row.issued_by, row.revoked_at = True, now, by, None
            return from_row(BrokerAccount, row)

    def revoke(self, device_id: str, now: datetime) -> BrokerAccount:
        with self._sessions.begin() as session:
            row = session.get(BrokerAccountRow, device_id)
            if row is None:
                row = BrokerAccountRow(device_id=device_id, active=False)
                session.add(row)
            if row.active or row.revoked_at is None:
                row.active, row.revoked_at = False, now
            return from_row(BrokerAccount, row)
