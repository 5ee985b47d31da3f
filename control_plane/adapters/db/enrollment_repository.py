"""Persistence of enrollment tokens (digests only) and of each device's key and latest enrollment request."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import sessionmaker

from control_plane.adapters.db.convert import from_row, to_row, utc, utc_or_none
from control_plane.adapters.db.tables import DeviceEnrollmentRow, EnrollmentTokenRow
from control_plane.domain.enrollment import DeviceEnrollment, EnrollmentRequest, EnrollmentToken
from edge_agent.protocol import HardwareFacts
from edge_agent.protocol.enrollment import EnrollmentStatus


class EnrollmentRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # -- tokens -------------------------------------------------------------------------------------------------
    def add_token(self, token: EnrollmentToken) -> EnrollmentToken:
        with self._sessions.begin() as session:
            session.add(to_row(EnrollmentTokenRow, token))
        return token

    def token_by_digest(self, digest: str) -> EnrollmentToken | None:
        with self._sessions() as session:
            row = session.scalars(select(EnrollmentTokenRow).where(EnrollmentTokenRow.digest == digest)).first()
            return _token(row) if row is not None else None

    def get_token(self, token_id: str) -> EnrollmentToken | None:
        with self._sessions() as session:
            row = session.get(EnrollmentTokenRow, token_id)
            return _token(row) if row is not None else None

    def list_tokens(self) -> list[EnrollmentToken]:
        with self._sessions() as session:
            rows = session.scalars(select(EnrollmentTokenRow).order_by(EnrollmentTokenRow.created_at))
            return [_token(r) for r in rows]

    def revoke_token(self, token_id: str, at: datetime) -> None:
        with self._sessions.begin() as session:
            row = session.get(EnrollmentTokenRow, token_id)
            if row is not None and row.revoked_at is None:
                row.revoked_at = at

    def use_token(self, token_id: str) -> bool:
        """Count one use, atomically; False when the token has none left (another request took the last)."""
        row = EnrollmentTokenRow
        stmt = (
            update(row)
            .where(row.id == token_id, (row.max_uses.is_(None)) | (row.uses < row.max_uses))
            .values(uses=row.uses + 1)
        )
        with self._sessions.begin() as session:
            return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]

    # -- device keys and requests -------------------------------------------------------------------------------
    def get(self, device_id: str) -> DeviceEnrollment | None:
        with self._sessions() as session:
            row = session.get(DeviceEnrollmentRow, device_id)
            return _enrollment(row) if row is not None else None

    def save(self, enrollment: DeviceEnrollment) -> DeviceEnrollment:
        with self._sessions.begin() as session:
            row = session.get(DeviceEnrollmentRow, enrollment.device_id)
            if row is None:
                row = DeviceEnrollmentRow(device_id=enrollment.device_id)
                session.add(row)
            row.public_key = enrollment.public_key
            row.approved_at = enrollment.approved_at
            row.artifact_token_id = enrollment.artifact_token_id
            request = enrollment.request
            row.request_key = request.public_key if request else None
            row.request_token_id = request.token_id if request else None
            row.request_hardware = request.hardware.model_dump(mode="json") if request else None
            row.request_status = request.status.value if request else None
            row.requested_at = request.requested_at if request else None
            row.decided_at = request.decided_at if request else None
            row.decided_by = request.decided_by if request else None
            row.reason = request.reason if request else None
        return enrollment

    def list(self, status: EnrollmentStatus | None = None) -> list[DeviceEnrollment]:
        stmt = select(DeviceEnrollmentRow).order_by(DeviceEnrollmentRow.device_id)
        with self._sessions() as session:
            found = [_enrollment(r) for r in session.scalars(stmt)]
        return [e for e in found if status is None or e.status is status]

    def remove(self, device_id: str) -> None:
        with self._sessions.begin() as session:
            row = session.get(DeviceEnrollmentRow, device_id)
            if row is not None:
                session.delete(row)


def _token(row: EnrollmentTokenRow) -> EnrollmentToken:
    return from_row(EnrollmentToken, row, labels={str(k): str(v) for k, v in (row.labels or {}).items()})


def _enrollment(row: DeviceEnrollmentRow) -> DeviceEnrollment:
    request = None
    if row.request_key is not None and row.request_status is not None and row.requested_at is not None:
        request = EnrollmentRequest(
            public_key=row.request_key,
            token_id=row.request_token_id,
            hardware=HardwareFacts.model_validate(row.request_hardware or {}),
            status=EnrollmentStatus(row.request_status),
            requested_at=utc(row.requested_at),
            decided_at=utc_or_none(row.decided_at),
            decided_by=row.decided_by,
            reason=row.reason,
        )
    return DeviceEnrollment(
        device_id=row.device_id,
        public_key=row.public_key,
        request=request,
        approved_at=utc_or_none(row.approved_at),
        artifact_token_id=row.artifact_token_id,
    )
