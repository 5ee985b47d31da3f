"""Persistence of devices, their events, and rollouts. Returns domain values only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.adapters.db.convert import device_from_row, rollout_from_rows, utc
from control_plane.adapters.db.tables import DeviceRow, EventRow, RolloutDeviceRow, RolloutRow
from control_plane.domain.fleet import Device, DeviceEventRecord
from control_plane.domain.rollouts import DesiredUpdate, Rollout, RolloutDevice
from edge_agent.protocol import PresenceStatus, ReportedState, SignedDesiredState, Telemetry

MAX_EVENTS_PER_DEVICE = 1000


class FleetRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # -- devices ----------------------------------------------------------------------------------------------
    @staticmethod
    def _device_row(session: Session, device_id: str, now: datetime) -> DeviceRow:
        row = session.get(DeviceRow, device_id)
        if row is None:
            row = DeviceRow(
                id=device_id, created_at=now, labels={}, channel="mqtt", desired_generation=0, last_seen=now
            )
            session.add(row)
            session.flush()
        return row

    def apply_report(self, reported: ReportedState, now: datetime) -> Device:
        with self._sessions.begin() as session:
            row = self._device_row(session, reported.device_id, now)
            row.gpu_class = reported.hardware.gpu_class
            row.labels = dict(reported.labels)
            row.hardware = reported.hardware.model_dump(mode="json")
            row.reported = reported.model_dump(mode="json")
            row.channel = reported.channel
            row.last_seen = now
            return device_from_row(row)

    def apply_status(self, device_id: str, status: PresenceStatus, now: datetime) -> Device:
        with self._sessions.begin() as session:
            row = self._device_row(session, device_id, now)
            row.status = status.value
            row.last_seen = now
            return device_from_row(row)

    def apply_telemetry(self, device_id: str, telemetry: Telemetry, now: datetime) -> None:
        with self._sessions.begin() as session:
            row = self._device_row(session, device_id, now)
            row.telemetry = telemetry.model_dump(mode="json")
            row.last_seen = now

    def get_device(self, device_id: str) -> Device | None:
        with self._sessions() as session:
            row = session.get(DeviceRow, device_id)
            return device_from_row(row) if row else None

    def list_devices(self) -> list[Device]:
        with self._sessions() as session:
            return [device_from_row(r) for r in session.scalars(select(DeviceRow).order_by(DeviceRow.id))]

    def list_desired(self) -> list[tuple[str, SignedDesiredState]]:
        """Every device's last issued signed desired state (republished when the broker link comes up)."""
        with self._sessions() as session:
            rows = session.scalars(select(DeviceRow).where(DeviceRow.desired.is_not(None)))
            return [(r.id, SignedDesiredState.model_validate(r.desired)) for r in rows]

    # -- events -----------------------------------------------------------------------------------------------
    def add_event(self, event: DeviceEventRecord, now: datetime) -> None:
        with self._sessions.begin() as session:
            row = self._device_row(session, event.device_id, now)
            row.last_seen = now
            session.add(
                EventRow(
                    device_id=event.device_id,
                    generation=event.generation,
                    step=event.step,
                    model=event.model,
                    version=event.version,
                    reason=event.reason,
                    at=event.at,
                )
            )
            self._trim_events(session, event.device_id)

    @staticmethod
    def _trim_events(session: Session, device_id: str) -> None:
        count = session.scalar(select(func.count(EventRow.id)).where(EventRow.device_id == device_id)) or 0
        if count > MAX_EVENTS_PER_DEVICE:
            oldest = select(EventRow.id).where(EventRow.device_id == device_id).order_by(EventRow.id)
            ids = list(session.scalars(oldest.limit(count - MAX_EVENTS_PER_DEVICE)))
            session.execute(delete(EventRow).where(EventRow.id.in_(ids)))

    def list_events(self, device_id: str, limit: int) -> list[DeviceEventRecord]:
        stmt = select(EventRow).where(EventRow.device_id == device_id).order_by(EventRow.id.desc()).limit(limit)
        with self._sessions() as session:
            return [
                DeviceEventRecord(
                    device_id=r.device_id,
                    generation=r.generation,
                    step=r.step,
                    model=r.model,
                    version=r.version,
                    reason=r.reason,
                    at=utc(r.at),
                )
                for r in session.scalars(stmt)
            ]

    # -- rollouts ---------------------------------------------------------------------------------------------
    def create_rollout(self, rollout: Rollout, desired: Sequence[DesiredUpdate]) -> Rollout:
        """Store the rollout and every device's new desired state in one transaction."""
        with self._sessions.begin() as session:
            for update in desired:
                row = session.get(DeviceRow, update.device_id)
                if row is None:
                    raise LookupError(f"device {update.device_id} vanished")
                row.desired_generation = update.generation
                row.desired = update.signed.model_dump(mode="json")
            session.add(_rollout_row(rollout))
            session.flush()
            for device in rollout.devices:
                session.add(_rollout_device_row(rollout.id, device))
        return rollout

    def save_rollout_state(self, rollout: Rollout) -> None:
        """Write the phase and every device's status of an existing rollout."""
        with self._sessions.begin() as session:
            row = session.get(RolloutRow, rollout.id)
            if row is None:
                raise LookupError(f"rollout {rollout.id} does not exist")
            row.phase = rollout.phase.value
            row.updated_at = rollout.updated_at
            for device in rollout.devices:
                drow = session.get(RolloutDeviceRow, (rollout.id, device.device_id))
                if drow is not None:
                    drow.status = device.status.value
                    drow.reason = device.reason
                    drow.updated_at = device.updated_at

    def get_rollout(self, rollout_id: str) -> Rollout | None:
        with self._sessions() as session:
            row = session.get(RolloutRow, rollout_id)
            if row is None:
                return None
            return rollout_from_rows(row, self._device_rows(session, [rollout_id]).get(rollout_id, []))

    def list_rollouts(self, only_device: str | None = None, only_open: bool = False) -> list[Rollout]:
        stmt = select(RolloutRow).order_by(RolloutRow.created_at.desc())
        if only_device is not None:
            stmt = stmt.where(
                RolloutRow.id.in_(select(RolloutDeviceRow.rollout_id).where(RolloutDeviceRow.device_id == only_device))
            )
        if only_open:
            stmt = stmt.where(RolloutRow.phase == "in_progress")
        with self._sessions() as session:
            rows = list(session.scalars(stmt))
            devices = self._device_rows(session, [r.id for r in rows])
            return [rollout_from_rows(r, devices.get(r.id, [])) for r in rows]

    @staticmethod
    def _device_rows(session: Session, rollout_ids: list[str]) -> dict[str, list[RolloutDeviceRow]]:
        out: dict[str, list[RolloutDeviceRow]] = {}
        if not rollout_ids:
            return out
        stmt = select(RolloutDeviceRow).where(RolloutDeviceRow.rollout_id.in_(rollout_ids))
        for row in session.scalars(stmt):
            out.setdefault(row.rollout_id, []).append(row)
        return out


def _rollout_row(rollout: Rollout) -> RolloutRow:
    return RolloutRow(
        id=rollout.id,
        model_name=rollout.model,
        version=rollout.version,
        selector=rollout.selector.as_dict(),
        strategy=rollout.strategy.value,
        phase=rollout.phase.value,
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
    )


def _rollout_device_row(rollout_id: str, device: RolloutDevice) -> RolloutDeviceRow:
    return RolloutDeviceRow(
        rollout_id=rollout_id,
        device_id=device.device_id,
        target=device.target,
        build_id=device.build_id,
        generation=device.generation,
        status=device.status.value,
        reason=device.reason,
        updated_at=device.updated_at,
    )
