"""Persistence of bearer tokens. Lookups are by the secret's digest (a unique index): one indexed read a request."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import sessionmaker

from control_plane.adapters.db.convert import from_row, to_row
from control_plane.adapters.db.tables import ApiTokenRow
from control_plane.domain.identity import ApiToken


class TokenRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def add(self, token: ApiToken) -> ApiToken:
        with self._sessions.begin() as session:
            session.add(to_row(ApiTokenRow, token))
        return token

    def by_digest(self, digest: str) -> ApiToken | None:
        with self._sessions() as session:
            row = session.scalars(select(ApiTokenRow).where(ApiTokenRow.digest == digest)).one_or_none()
            return from_row(ApiToken, row) if row is not None else None

    def get(self, token_id: str) -> ApiToken | None:
        with self._sessions() as session:
            row = session.get(ApiTokenRow, token_id)
            return from_row(ApiToken, row) if row is not None else None

    def list(self) -> list[ApiToken]:
        with self._sessions() as session:
            rows = session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.created_at, ApiTokenRow.id))
            return [from_row(ApiToken, r) for r in rows]

    def count(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(ApiTokenRow)) or 0)

    def revoke(self, token_id: str, at: datetime) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(ApiTokenRow)
                .where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None))
                .values(revoked_at=at)
            )

    def touch(self, token_id: str, at: datetime) -> None:
        with self._sessions.begin() as session:
            session.execute(update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(last_used_at=at))
