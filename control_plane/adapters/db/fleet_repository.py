"""Persistence of devices, their events and telemetry. Returns domain values only.

Devices are created only by enrollment (an operator's, or an approved key's); what a device publishes is stored
only for a device that exists, and never changes its labels, channel or GPU class.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.adapters.db.convert import (
    ansible_to_json,
    delivery_from_json,
    delivery_to_json,
    device_from_row,
    from_row,
    to_row,
)
from control_plane.adapters.db.tables import DeviceRow, EventRow, TelemetryRow
from control_plane.domain.fleet import DeliveryFailure, Device, DeviceEventRecord, EventSource
from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.telemetry import HISTORY_PER_VERSION, ModelWindow
from edge_agent.protocol import HardwareFacts, PresenceStatus, ReportedState, SignedDesiredState, Telemetry
from edge_agent.protocol.vocabulary import Channel

MAX_EVENTS_PER_DEVICE = 1000  # default of settings.device_events_kept


class FleetRepository:
    def __init__(self, engine: Engine, events_kept: int = MAX_EVENTS_PER_DEVICE) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._events_kept = events_kept

    # -- devices ----------------------------------------------------------------------------------------------
    def apply_report(self, reported: ReportedState, now: datetime, adopt_hardware: bool = False) -> Device | None:
        """Store a checked report of a known device (None: unknown). Hardware facts are taken from it only with
        `adopt_hardware` and only while none are held (control_plane/domain/reports.py)."""
        with self._sessions.begin() as session:
            row = session.get(DeviceRow, reported.device_id)
            if row is None:
                return None
            if adopt_hardware and row.hardware is None:
                row.hardware = reported.hardware.model_dump(mode="json")
                row.gpu_class = row.gpu_class or reported.hardware.gpu_class
            row.reported = reported.model_dump(mode="json")
            row.last_seen = now
            failure = delivery_from_json(row.delivery)
            if failure is not None and reported.applied_generation >= failure.generation:
                row.delivery = None  # the agent has answered for that generation since
            return device_from_row(row)

    def enroll(
        self,
        device_id: str,
        channel: Channel,
        labels: Mapping[str, str],
        gpu_class: str | None,
        hardware: HardwareFacts | None,
        ansible: AnsibleConnection | None,
        now: datetime,
    ) -> Device:
        """Create or update an enrolled device. Hardware and GPU class already known stay unless given."""
        with self._sessions.begin() as session:
            row = session.get(DeviceRow, device_id)
            if row is None:
                row = DeviceRow(id=device_id, created_at=now, labels={}, desired_generation=0)
                session.add(row)
            row.channel = str(channel)
            row.labels = dict(labels)
            row.ansible = ansible_to_json(ansible)
            if hardware is not None:
                row.hardware = hardware.model_dump(mode="json")
            if gpu_class is not None:
                row.gpu_class = gpu_class
            elif hardware is not None:
                row.gpu_class = hardware.gpu_class
            session.flush()
            return device_from_row(row)

    def set_labels(self, device_id: str, labels: Mapping[str, str]) -> Device | None:
        with self._sessions.begin() as session:
            row = session.get(DeviceRow, device_id)
            if row is None:
                return None
            row.labels = dict(labels)
            return device_from_row(row)

    def remove_device(self, device_id: str) -> None:
        """Delete the device with its events and telemetry (rollout history keeps naming it)."""
        with self._sessions.begin() as session:
            session.execute(delete(EventRow).where(EventRow.device_id == device_id))
            session.execute(delete(TelemetryRow).where(TelemetryRow.device_id == device_id))
            session.execute(delete(DeviceRow).where(DeviceRow.id == device_id))

    def record_delivery_failure(self, device_id: str, generation: int, reason: str, now: datetime) -> None:
        """Keep the latest push that did not reach the device's agent (unknown devices are ignored)."""
        with self._sessions.begin() as session:
            row = session.get(DeviceRow, device_id)
            if row is not None:
                row.delivery = delivery_to_json(DeliveryFailure(generation, reason[:2000], now))

    def apply_hardware(self, device_id: str, hardware: HardwareFacts, now: datetime) -> Device | None:
        """Facts a playbook gathered: the device's hardware and GPU class; it was reached just now."""
        with self._sessions.begin() as session:
            row = session.get(DeviceRow, device_id)
            if row is None:
                return None
            row.hardware = hardware.model_dump(mode="json")
            row.gpu_class = hardware.gpu_class
            row.last_seen = now
            return device_from_row(row)

    def mark_seen(self, device_id: str, now: datetime) -> None:
        """A playbook reached the device."""
        with self._sessions.begin() as session:
            row = session.get(DeviceRow, device_id)
            if row is not None:
                row.last_seen = now

    def apply_status(self, device_id: str, status: PresenceStatus, now: datetime) -> Device | None:
        with self._sessions.begin() as session:
            row = session.get(DeviceRow, device_id)
            if row is None:
                return None
            row.status = status.value
            row.last_seen = now
            return device_from_row(row)

    def apply_telemetry(self, device_id: str, telemetry: Telemetry, now: datetime) -> bool:
        """Keep the latest message as it came, and each model version's window in a short history (False: the
        device is unknown, nothing was stored)."""
        with self._sessions.begin() as session:
            row = session.get(DeviceRow, device_id)
            if row is None:
                return False
            row.telemetry = telemetry.model_dump(mode="json")
            row.last_seen = now
            for m in telemetry.models:
                session.add(
                    TelemetryRow(
                        device_id=device_id,
                        model=m.name,
                        version=m.version,
                        at=now,
                        window_s=telemetry.window_s,
                        requests=m.requests,
                        errors=m.errors,
                        p50_ms=m.p50_ms,
                        p99_ms=m.p99_ms,
                    )
                )
                session.flush()
                self._trim_telemetry(session, device_id, m.name, m.version)
            return True

    @staticmethod
    def _trim_telemetry(session: Session, device_id: str, model: str, version: int) -> None:
        mine = (TelemetryRow.device_id == device_id, TelemetryRow.model == model, TelemetryRow.version == version)
        keep = select(TelemetryRow.id).where(*mine).order_by(TelemetryRow.id.desc()).limit(HISTORY_PER_VERSION)
        session.execute(delete(TelemetryRow).where(*mine, TelemetryRow.id.not_in(keep)))

    def telemetry_windows(self, device_id: str, model: str | None = None) -> list[ModelWindow]:
        """The device's stored windows (of one model, or all), newest first."""
        stmt = select(TelemetryRow).where(TelemetryRow.device_id == device_id)
        if model is not None:
            stmt = stmt.where(TelemetryRow.model == model)
        with self._sessions() as session:
            return [from_row(ModelWindow, r) for r in session.scalars(stmt.order_by(TelemetryRow.id.desc()))]

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
    def add_event(self, event: DeviceEventRecord, now: datetime) -> bool:
        """Append an event of a known device (False: unknown, nothing stored). The device's own are trimmed to the
        newest `events_kept`; the control plane's are never trimmed, so a device cannot push them out."""
        with self._sessions.begin() as session:
            row = session.get(DeviceRow, event.device_id)
            if row is None:
                return False
            if event.source is EventSource.DEVICE:
                row.last_seen = now
            session.add(to_row(EventRow, event))
            if event.source is EventSource.DEVICE:
                self._trim_events(session, event.device_id)
            return True

    def _trim_events(self, session: Session, device_id: str) -> None:
        mine = (EventRow.device_id == device_id, EventRow.source == EventSource.DEVICE.value)
        count = session.scalar(select(func.count(EventRow.id)).where(*mine)) or 0
        if count > self._events_kept:
            oldest = select(EventRow.id).where(*mine).order_by(EventRow.id)
            ids = list(session.scalars(oldest.limit(count - self._events_kept)))
            session.execute(delete(EventRow).where(EventRow.id.in_(ids)))

    def list_events(self, device_id: str, limit: int) -> list[DeviceEventRecord]:
        stmt = select(EventRow).where(EventRow.device_id == device_id).order_by(EventRow.id.desc()).limit(limit)
        with self._sessions() as session:
            return [
                from_row(DeviceEventRecord, r, source=EventSource(r.source or EventSource.DEVICE.value))
                for r in session.scalars(stmt)
            ]
