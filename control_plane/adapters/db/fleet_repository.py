"""Persistence of devices, their events and telemetry. Returns domain values only.

Devices are created only by enrollment (an operator's, or an approved key's); what a device publishes is stored
only for a device that exists, and never changes its labels, channel or GPU class.

The ingest writer's batches (`get_devices`, `apply_writes`) and the rollout executor's reads (`get_devices`,
`telemetry_windows_of`) cost a fixed number of statements per batch, never a
round trip per device: one SELECT ... IN for the batch's devices, UPDATEs by primary key executed as one
executemany per set of changed columns, bulk INSERTs of events and telemetry windows, and one executemany DELETE
each that trims the histories the batch grew.

Selectors are evaluated in SQL (`page_devices`, `select_devices`: decision 0013) over `device_labels`, which every
writer of a device's labels (`enroll`, `set_labels`, `remove_device`) keeps equal to `devices.labels` in the same
transaction; nothing else may write either.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Engine,
    Select,
    Table,
    Text,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session, aliased, sessionmaker

from control_plane.adapters.db.convert import (
    ansible_to_json,
    delivery_from_json,
    delivery_to_json,
    device_from_row,
    facts_from_row,
    from_row,
    to_row,
    to_values,
)
from control_plane.adapters.db.tables import DeviceLabelRow, DeviceRow, EventRow, TelemetryRow
from control_plane.domain.fleet import DeliveryFailure, Device, DeviceEventRecord, DeviceFacts, EventSource
from control_plane.domain.ingest import FleetWrites, ReportWrite, TelemetryWrite
from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.selectors import Selector
from control_plane.domain.telemetry import HISTORY_PER_VERSION, ModelWindow
from edge_agent.protocol import HardwareFacts, PresenceStatus, ReportedState, SignedDesiredState, Telemetry
from edge_agent.protocol.vocabulary import Channel

MAX_EVENTS_PER_DEVICE = 1000  # default of settings.device_events_kept
IN_CHUNK = 500  # ids per SELECT ... IN (SQLite's bound-parameter limit is far above; PostgreSQL has none)

_events = cast(Table, EventRow.__table__)
_telemetry = cast(Table, TelemetryRow.__table__)
_devices = cast(Table, DeviceRow.__table__)
# Everything of one device's own events but the newest `keep` (one statement, executed many times at once).
_TRIM_EVENTS = delete(_events).where(
    _events.c.device_id == bindparam("d"),
    _events.c.source == EventSource.DEVICE.value,
    _events.c.id
    <= select(_events.c.id)
    .where(_events.c.device_id == bindparam("d"), _events.c.source == EventSource.DEVICE.value)
    .order_by(_events.c.id.desc())
    .limit(1)
    .offset(bindparam("keep"))
    .scalar_subquery(),
)
_TELEMETRY_OF = and_(
    _telemetry.c.device_id == bindparam("d"),
    _telemetry.c.model == bindparam("m"),
    _telemetry.c.version == bindparam("v"),
)
_TRIM_TELEMETRY = delete(_telemetry).where(
    _TELEMETRY_OF,
    _telemetry.c.id
    <= select(_telemetry.c.id)
    .where(_TELEMETRY_OF)
    .order_by(_telemetry.c.id.desc())
    .limit(1)
    .offset(bindparam("keep"))
    .scalar_subquery(),
)


class FleetRepository:
    def __init__(self, engine: Engine, events_kept: int = MAX_EVENTS_PER_DEVICE) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._engine = engine  # the hot bulk reads run on a plain connection: rows, no ORM objects
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
            session.flush()  # the device row exists before its label rows name it
            _write_labels(session, device_id, labels)
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
            _write_labels(session, device_id, labels)
            return device_from_row(row)

    def remove_device(self, device_id: str) -> None:
        """Delete the device with its events and telemetry (rollout history keeps naming it)."""
        with self._sessions.begin() as session:
            session.execute(delete(EventRow).where(EventRow.device_id == device_id))
            session.execute(delete(TelemetryRow).where(TelemetryRow.device_id == device_id))
            session.execute(delete(DeviceLabelRow).where(DeviceLabelRow.device_id == device_id))
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

    def telemetry_windows_of(self, device_ids: Collection[str], model: str) -> dict[str, list[ModelWindow]]:
        """Each device's stored windows of `model`, newest first (one SELECT per IN_CHUNK ids; a device without any
        is absent): the rollout executor's read of the devices a pass looks at."""
        found: dict[str, list[ModelWindow]] = {}
        columns = [TelemetryRow.device_id, *(getattr(TelemetryRow, f.name) for f in fields(ModelWindow))]
        with self._engine.connect() as connection:
            for chunk in _chunks(sorted(set(device_ids))):
                stmt = (
                    select(*columns)
                    .where(TelemetryRow.device_id.in_(chunk), TelemetryRow.model == model)
                    .order_by(TelemetryRow.id.desc())
                )
                for row in connection.execute(stmt):
                    found.setdefault(row.device_id, []).append(from_row(ModelWindow, row))
        return found

    def get_device(self, device_id: str) -> Device | None:
        with self._sessions() as session:
            row = session.get(DeviceRow, device_id)
            return device_from_row(row) if row else None

    def list_devices(self) -> list[Device]:
        with self._sessions() as session:
            return [device_from_row(r) for r in session.scalars(select(DeviceRow).order_by(DeviceRow.id))]

    def desired_page(self, after: str | None, limit: int) -> list[tuple[str, SignedDesiredState | None]]:
        """Up to `limit` devices on the MQTT channel, by id after `after`, each with its last issued signed desired
        state (None: none issued). Devices on the Ansible channel are left out: MQTT never carries theirs."""
        stmt = select(DeviceRow.id, DeviceRow.desired).where(DeviceRow.channel == Channel.MQTT.value)
        if after is not None:
            stmt = stmt.where(DeviceRow.id > after)
        with self._sessions() as session:
            rows = session.execute(stmt.order_by(DeviceRow.id).limit(limit))
            return [(r.id, SignedDesiredState.model_validate(r.desired) if r.desired else None) for r in rows]

    # -- batches of the ingest writer --------------------------------------------------------------------------------
    def get_devices(self, device_ids: Collection[str]) -> dict[str, Device]:
        """The known ones of `device_ids` (one SELECT per IN_CHUNK ids)."""
        found: dict[str, Device] = {}
        with self._engine.connect() as connection:
            for chunk in _chunks(sorted(device_ids)):
                for row in connection.execute(select(*_DEVICE_COLUMNS).where(DeviceRow.id.in_(chunk))):
                    found[row.id] = device_from_row(row)
        return found

    def device_facts(self, device_ids: Collection[str]) -> dict[str, DeviceFacts]:
        """The known ones of `device_ids`, from their small columns only (no document is read or decoded)."""
        found: dict[str, DeviceFacts] = {}
        with self._engine.connect() as connection:
            for chunk in _chunks(sorted(device_ids)):
                for row in connection.execute(select(*_FACT_COLUMNS).where(DeviceRow.id.in_(chunk))):
                    found[row.id] = facts_from_row(row)
        return found

    def reports_of(self, device_ids: Collection[str]) -> dict[str, ReportedState]:
        """The latest stored report of those of `device_ids` that have one."""
        found: dict[str, ReportedState] = {}
        with self._engine.connect() as connection:
            for chunk in _chunks(sorted(device_ids)):
                reported = sql_cast(DeviceRow.reported, Text).label("reported")  # parsed by pydantic in one pass
                for row in connection.execute(select(DeviceRow.id, reported).where(DeviceRow.id.in_(chunk))):
                    if row.reported not in (None, "null"):
                        found[row.id] = ReportedState.model_validate_json(row.reported)
        return found

    def apply_writes(self, writes: FleetWrites) -> set[str]:
        """Store a batch in one transaction; returns the devices it was stored for (those that exist: one may have
        been removed since the batch read it). Only the columns a batch changed are written."""
        with self._sessions.begin() as session:
            held = self._held(session, writes.device_ids)
            latest = {t.device_id: t for t in writes.telemetry}  # the last of each device's wins
            changes = {d: _device_changes(writes, latest, d, held[d]) for d in held}
            connection = session.connection()  # plain statements, executemany: no ORM objects per row
            for names, columns in _by_column_set(changes):
                connection.execute(_update_devices(names), columns)
            events = [to_values(EventRow, e) for e in writes.events if e.device_id in held]
            if events:
                connection.execute(insert(_events), events)
            telemetry = _telemetry_rows(writes, held)
            if telemetry:
                connection.execute(insert(_telemetry), telemetry)
            own = EventSource.DEVICE
            grown = sorted({e.device_id for e in writes.events if e.source is own and e.device_id in held})
            if grown:
                session.connection().execute(_TRIM_EVENTS, [{"d": d, "keep": self._events_kept} for d in grown])
            versions = sorted({(t.device_id, m.name, m.version) for t in writes.telemetry for m in t.telemetry.models})
            trims = [{"d": d, "m": m, "v": v, "keep": HISTORY_PER_VERSION} for d, m, v in versions if d in held]
            if trims:
                session.connection().execute(_TRIM_TELEMETRY, trims)
            return set(held)

    @staticmethod
    def _held(session: Session, device_ids: Collection[str]) -> dict[str, _Held]:
        """What a batch's writes depend on, of the devices that exist, read in the batch's transaction."""
        held: dict[str, _Held] = {}
        hardware = sql_cast(DeviceRow.hardware, Text).label("hardware")  # only whether there is any: not decoded
        columns = (DeviceRow.id, hardware, DeviceRow.gpu_class, DeviceRow.delivery)
        for chunk in _chunks(sorted(device_ids)):
            rows = session.connection().execute(select(*columns).where(DeviceRow.id.in_(chunk)))
            held.update({r.id: _Held(r.hardware not in (None, "null"), r.gpu_class, r.delivery) for r in rows})
        return held

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

    # -- selections in SQL (decision 0013) ------------------------------------------------------------------------
    def page_devices(self, selector: Selector, after: str | None, limit: int) -> list[Device]:
        """Up to `limit` devices the selector matches, by id, with an id above `after` (which need not exist any
        more). Only the page's rows are read and turned into devices."""
        stmt = _selected(selector)
        if after is not None:
            stmt = stmt.where(DeviceRow.id > after)
        with self._engine.connect() as connection:
            return [device_from_row(r) for r in connection.execute(stmt.order_by(DeviceRow.id).limit(limit))]

    def select_devices(self, selector: Selector) -> list[Device]:
        """Every device the selector matches, by id: what a new rollout reads (not the whole fleet)."""
        with self._engine.connect() as connection:
            return [device_from_row(r) for r in connection.execute(_selected(selector).order_by(DeviceRow.id))]

    def label_keys(self, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` label keys the fleet's devices carry, by key, each with how many devices carry it (read
        from `device_labels` by its (key, value, device_id) index; never the devices themselves). Added by the
        CLI's did-you-mean for selectors (issue 14)."""
        stmt = (
            select(DeviceLabelRow.key, func.count(DeviceLabelRow.device_id))
            .group_by(DeviceLabelRow.key)
            .order_by(DeviceLabelRow.key)
            .limit(limit)
        )
        with self._sessions() as session:
            return [(str(key), int(count)) for key, count in session.execute(stmt)]

    def presence_groups(self, seen_since: datetime) -> list[PresenceGroup]:
        """How many devices share each (GPU class, channel, presence status, ever heard of, heard of at or after
        `seen_since`): the facts `domain.fleet.presence` decides from, in one grouped COUNT over the small columns
        (never a device per row). Added for the fleet gauges of `/metrics` (issue 13)."""
        inner = select(
            DeviceRow.gpu_class.label("gpu_class"),
            DeviceRow.channel.label("channel"),
            DeviceRow.status.label("status"),
            case((DeviceRow.last_seen.is_(None), 0), else_=1).label("seen"),
            case((DeviceRow.last_seen >= seen_since, 1), else_=0).label("recent"),
        ).subquery()
        # Grouped in an outer query by the inner columns: PostgreSQL would see the CASE's bound parameter twice.
        columns = (inner.c.gpu_class, inner.c.channel, inner.c.status, inner.c.seen, inner.c.recent)
        stmt = select(*columns, func.count()).group_by(*columns)
        with self._sessions() as session:
            return [
                PresenceGroup(gpu, str(channel), status, bool(seen), bool(recent), int(count))
                for gpu, channel, status, seen, recent, count in session.execute(stmt)
            ]


@dataclass(frozen=True)
class PresenceGroup:
    """Devices sharing what their presence is decided from (`FleetRepository.presence_groups`)."""

    gpu_class: str | None
    channel: str
    status: str | None
    seen: bool  # heard of at least once
    recent: bool  # heard of at or after the cut-off asked for
    devices: int


def _selected(selector: Selector) -> Select[Any]:
    """The devices a selector matches (their `_DEVICE_COLUMNS`): one join on `device_labels` per label (its (key,
    value, device_id) index finds them) and the GPU class by its column (indexed with the id)."""
    stmt = select(*_DEVICE_COLUMNS)
    for key, value in sorted(selector.labels.items()):
        label = aliased(DeviceLabelRow)
        stmt = stmt.join(label, and_(label.device_id == DeviceRow.id, label.key == key, label.value == value))
    if selector.gpu_class is not None:
        stmt = stmt.where(DeviceRow.gpu_class == selector.gpu_class)
    return stmt


def _write_labels(session: Session, device_id: str, labels: Mapping[str, str]) -> None:
    """Make the device's `device_labels` rows equal `labels` (in the caller's transaction, as `devices.labels`)."""
    session.execute(delete(DeviceLabelRow).where(DeviceLabelRow.device_id == device_id))
    session.add_all(DeviceLabelRow(device_id=device_id, key=str(k), value=str(v)) for k, v in labels.items())


_DOCUMENTS = ("hardware", "reported", "desired", "telemetry")
# Every column of a device, its documents as their JSON text: read without ORM objects, each document parsed and
# validated by pydantic in one pass (convert.device_from_row) rather than decoded to dicts and validated again.
_DEVICE_COLUMNS = tuple(
    sql_cast(column, Text).label(column.key) if column.key in _DOCUMENTS else column
    for column in cast(Table, DeviceRow.__table__).columns
)
_FACT_COLUMNS = (
    DeviceRow.id,
    DeviceRow.gpu_class,
    DeviceRow.labels,
    sql_cast(DeviceRow.hardware, Text).label("hardware"),  # as stored: decoded once per distinct text (convert.py)
    DeviceRow.channel,
    DeviceRow.status,
    DeviceRow.last_seen,
    DeviceRow.desired_generation,
    DeviceRow.delivery,
    DeviceRow.issued_builds,
)


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), IN_CHUNK):
        yield ids[start : start + IN_CHUNK]


@dataclass(frozen=True)
class _Held:
    has_hardware: bool
    gpu_class: str | None
    delivery: dict[str, Any] | None


def _device_changes(
    writes: FleetWrites, latest: Mapping[str, TelemetryWrite], device_id: str, held: _Held
) -> dict[str, Any]:
    """The device row's columns a batch changes: its latest report, presence and telemetry, when it was seen."""
    changes: dict[str, Any] = {}
    report = writes.reports.get(device_id)
    if report is not None:
        changes.update(_report_changes(report, held))
    status = writes.statuses.get(device_id)
    if status is not None:
        changes["status"] = status.value
    telemetry = latest.get(device_id)
    if telemetry is not None:
        changes["telemetry"] = telemetry.telemetry.model_dump(mode="json")
    seen = writes.seen.get(device_id)
    if seen is not None:
        changes["last_seen"] = seen
    return changes


def _report_changes(report: ReportWrite, held: _Held) -> dict[str, Any]:
    """Hardware facts only with `adopt_hardware` and only while none are held (domain/reports.py)."""
    reported = report.reported
    changes: dict[str, Any] = {"reported": reported.model_dump(mode="json")}
    if report.adopt_hardware and not held.has_hardware:
        changes["hardware"] = reported.hardware.model_dump(mode="json")
        changes["gpu_class"] = held.gpu_class or reported.hardware.gpu_class
    failure = delivery_from_json(held.delivery)
    if failure is not None and report.highest_applied >= failure.generation:
        changes["delivery"] = None  # the agent has answered for that generation since
    return changes


def _by_column_set(changes: Mapping[str, dict[str, Any]]) -> list[tuple[frozenset[str], list[dict[str, Any]]]]:
    """UPDATE parameter sets grouped by the columns they write (one executemany each)."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for device_id, columns in changes.items():
        if columns:
            groups.setdefault(frozenset(columns), []).append({"device": device_id, **columns})
    return list(groups.items())


def _update_devices(names: frozenset[str]) -> Update:
    """UPDATE devices SET <names> WHERE id = :device, for an executemany."""
    table = _devices
    return update(table).where(table.c.id == bindparam("device")).values({n: bindparam(n) for n in sorted(names)})


def _telemetry_rows(writes: FleetWrites, held: Collection[str]) -> list[dict[str, Any]]:
    return [
        {
            "device_id": t.device_id,
            "model": m.name,
            "version": m.version,
            "at": t.at,
            "window_s": t.telemetry.window_s,
            "requests": m.requests,
            "errors": m.errors,
            "p50_ms": m.p50_ms,
            "p99_ms": m.p99_ms,
        }
        for t in writes.telemetry
        if t.device_id in held
        for m in t.telemetry.models
    ]
