"""Persistence of staged rollouts: their state, per-device tracks, events, and the desired states they issue.

`save` writes a rollout's new state, the desired states it decided and its events in ONE transaction: after a
crash the database holds either the decision with everything it implies or none of it. It writes only the tracks
it is given (the ones a pass changed), in bulk, and the rollout's per-step counts with the rollout row, so a
rollout is shown (`summary`, `page_devices`) without reading all its tracks. Never a query per device in a loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, Row, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from control_plane.adapters.db.convert import from_row, issued_from_json, issued_to_json, to_values, utc, utc_or_none
from control_plane.adapters.db.tables import DeviceRow, RolloutDeviceRow, RolloutEventRow, RolloutRow
from control_plane.domain.reports import remember_issued
from control_plane.domain.rollout_events import NewEvent, RolloutEventRecord
from control_plane.domain.rollout_progress import (
    FINAL_PHASES,
    DeviceStatus,
    DeviceTrack,
    GateVerdict,
    PreviousModel,
    RolloutPhase,
    RolloutState,
    Verdict,
    with_counts,
)
from control_plane.domain.rollout_spec import RolloutRequest
from control_plane.domain.rollouts import DesiredUpdate

OPEN_PHASES = [p.value for p in RolloutPhase if p not in FINAL_PHASES]


class RolloutRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def save(
        self,
        state: RolloutState,
        desired: Sequence[DesiredUpdate] = (),
        events: Sequence[NewEvent] = (),
        tracks: Sequence[DeviceTrack] | None = None,
    ) -> None:
        """Insert or update the rollout and the given tracks (None: all of them), store each device's new desired
        state, append the events."""
        with self._sessions.begin() as session:
            _store_desired(session, desired)
            row = session.get(RolloutRow, state.id)
            new = row is None
            if row is None:
                row = RolloutRow(id=state.id, created_at=state.created_at)
                session.add(row)
            _fill_rollout_row(row, state)
            session.flush()
            values = [_track_values(t, state) for t in (state.devices if tracks is None else tracks)]
            if values and new:  # plain statements, executemany: no ORM objects per track
                session.connection().execute(insert(_tracks), values)
            elif values:
                keyed = [{"b_rollout": v["rollout_id"], "b_device": v["device_id"], **v} for v in values]
                session.connection().execute(_UPDATE_TRACK, keyed)
            if events:  # a note per device that moved: plain executemany, no ORM object per event
                rows = [to_values(RolloutEventRow, event, rollout_id=state.id) for event in events]
                session.connection().execute(insert(_rollout_events), rows)

    def get(self, rollout_id: str) -> RolloutState | None:
        with self._sessions() as session:
            row = session.get(RolloutRow, rollout_id)
            if row is None:
                return None
            return _state_of(row, _device_rows(session, [rollout_id]).get(rollout_id, []))

    def list_rollouts(self, only_open: bool = False, only_device: str | None = None) -> list[RolloutState]:
        with self._sessions() as session:
            rows = list(session.scalars(_rollouts_stmt(only_open, only_device)))
            devices = _device_rows(session, [r.id for r in rows])
            return [_state_of(r, devices.get(r.id, [])) for r in rows]

    def summary(self, rollout_id: str) -> RolloutState | None:
        """The rollout without its tracks (`devices` is empty), with its per-step counts."""
        with self._sessions() as session:
            row = session.get(RolloutRow, rollout_id)
            return None if row is None else _summary_of(session, row)

    def page_summaries(self, after: tuple[datetime, str] | None, limit: int) -> list[RolloutState]:
        """Up to `limit` rollouts without their tracks, newest first, after the (created_at, id) `after`."""
        stmt = select(RolloutRow).order_by(RolloutRow.created_at.desc(), RolloutRow.id.desc())
        if after is not None:
            at, key = after
            stmt = stmt.where(or_(RolloutRow.created_at < at, and_(RolloutRow.created_at == at, RolloutRow.id < key)))
        with self._sessions() as session:
            return [_summary_of(session, r) for r in session.scalars(stmt.limit(limit))]

    def moved_since(self, rollout_id: str, created_at: datetime, limit: int = 20) -> tuple[str, list[str]] | None:
        """The first rollout created after `created_at` that holds devices of `rollout_id`, with up to `limit` of
        them (None: none did): one query joining the tracks on their device."""
        mine, other = aliased(RolloutDeviceRow), aliased(RolloutDeviceRow)
        stmt = (
            select(other.rollout_id, other.device_id)
            .join(mine, and_(mine.device_id == other.device_id, mine.rollout_id == rollout_id))
            .join(RolloutRow, RolloutRow.id == other.rollout_id)
            .where(other.rollout_id != rollout_id, RolloutRow.created_at > created_at)
            .order_by(RolloutRow.created_at, other.rollout_id, other.device_id)
            .limit(limit)
        )
        with self._sessions() as session:
            rows = list(session.execute(stmt))
        if not rows:
            return None
        first = rows[0].rollout_id
        return first, [r.device_id for r in rows if r.rollout_id == first]

    def list_summaries(self, only_open: bool = False) -> list[RolloutState]:
        with self._sessions() as session:
            return [_summary_of(session, r) for r in session.scalars(_rollouts_stmt(only_open, None))]

    def page_devices(self, rollout_id: str, after: str | None, limit: int) -> list[DeviceTrack]:
        """Up to `limit` tracks of the rollout, by device id, after device `after` (plain rows, no ORM object per
        track: this is what every `GET /v1/rollouts/{id}` reads)."""
        stmt = select(*_tracks.columns).where(_tracks.c.rollout_id == rollout_id)
        if after is not None:
            stmt = stmt.where(_tracks.c.device_id > after)
        with self._sessions() as session:
            rows = session.connection().execute(stmt.order_by(_tracks.c.device_id).limit(limit))
            return [_track_of(r) for r in rows]

    def phase(self, rollout_id: str) -> RolloutPhase | None:
        with self._sessions() as session:
            found = session.scalar(select(RolloutRow.phase).where(RolloutRow.id == rollout_id))
            return None if found is None else RolloutPhase(found)

    def events_since(self, rollout_id: str, after_id: int, limit: int = 1000) -> list[RolloutEventRecord]:
        stmt = (
            select(RolloutEventRow)
            .where(RolloutEventRow.rollout_id == rollout_id, RolloutEventRow.id > after_id)
            .order_by(RolloutEventRow.id)
            .limit(limit)
        )
        with self._sessions() as session:
            return [from_row(RolloutEventRecord, r, data=dict(r.data or {})) for r in session.scalars(stmt)]

    def count_by_phase(self) -> dict[str, int]:
        """How many rollouts are in each phase: one grouped COUNT over `ix_rollouts_phase` (for `/metrics`)."""
        stmt = select(RolloutRow.phase, func.count()).group_by(RolloutRow.phase)
        with self._sessions() as session:
            return {str(phase): int(count) for phase, count in session.execute(stmt)}


def _rollouts_stmt(only_open: bool, only_device: str | None) -> Any:
    stmt = select(RolloutRow).order_by(RolloutRow.created_at.desc())
    if only_open:
        stmt = stmt.where(RolloutRow.phase.in_(OPEN_PHASES))
    if only_device is not None:
        stmt = stmt.where(
            RolloutRow.id.in_(select(RolloutDeviceRow.rollout_id).where(RolloutDeviceRow.device_id == only_device))
        )
    return stmt


def _store_desired(session: Session, desired: Sequence[DesiredUpdate]) -> None:
    """Each device's new desired state and the builds it names: the devices' issued builds are read in one query
    per chunk (no other column), the rows updated in one executemany."""
    if not desired:
        return
    connection = session.connection()
    issued: dict[str, dict[str, tuple[str, int]]] = {}
    ids = [u.device_id for u in desired]
    for chunk in range(0, len(ids), _CHUNK):
        part = ids[chunk : chunk + _CHUNK]
        rows = connection.execute(select(_devices.c.id, _devices.c.issued_builds).where(_devices.c.id.in_(part)))
        issued.update((r.id, issued_from_json(r.issued_builds)) for r in rows)
    values = []
    for update_ in desired:
        if update_.device_id not in issued:
            raise LookupError(f"device {update_.device_id} vanished")
        sent = issued[update_.device_id] = remember_issued(issued[update_.device_id], update_.builds)
        values.append(
            {
                "device": update_.device_id,
                "desired_generation": update_.generation,
                "desired": update_.signed.model_dump(mode="json"),
                "issued_builds": issued_to_json(sent),
            }
        )
    connection.execute(_UPDATE_DESIRED, values)


_CHUNK = 500  # ids per IN (...): well under every database's limit on bound parameters
_tracks = cast(Table, RolloutDeviceRow.__table__)
_devices = cast(Table, DeviceRow.__table__)
_rollout_events = cast(Table, RolloutEventRow.__table__)
_TRACK_KEY = ("rollout_id", "device_id")
_UPDATE_TRACK = (
    update(_tracks)
    .where(_tracks.c.rollout_id == bindparam("b_rollout"), _tracks.c.device_id == bindparam("b_device"))
    .values({c.name: bindparam(c.name) for c in _tracks.columns if c.name not in _TRACK_KEY})
)
_UPDATE_DESIRED = (
    update(_devices)
    .where(_devices.c.id == bindparam("device"))
    .values({c: bindparam(c) for c in ("desired_generation", "desired", "issued_builds")})
)


def _summary_of(session: Session, row: RolloutRow) -> RolloutState:
    counts = row.counts
    if counts is None:  # stored before 0010: count the tracks once
        stmt = (
            select(RolloutDeviceRow.step, RolloutDeviceRow.status, func.count())
            .where(RolloutDeviceRow.rollout_id == row.id)
            .group_by(RolloutDeviceRow.step, RolloutDeviceRow.status)
        )
        counts = {}
        for step, status, n in session.execute(stmt):
            counts.setdefault(step, {})[status] = n
    per_step = {step: {DeviceStatus(s): int(n) for s, n in per.items()} for step, per in counts.items()}
    return with_counts(_state_of(row, []), per_step)


def _device_rows(session: Session, rollout_ids: list[str]) -> dict[str, list[RolloutDeviceRow]]:
    out: dict[str, list[RolloutDeviceRow]] = {}
    if not rollout_ids:
        return out
    for row in session.scalars(select(RolloutDeviceRow).where(RolloutDeviceRow.rollout_id.in_(rollout_ids))):
        out.setdefault(row.rollout_id, []).append(row)
    return out


def _fill_rollout_row(row: RolloutRow, state: RolloutState) -> None:
    row.model_name = state.model
    row.version = state.version
    row.selector = state.spec.selector.model_dump(mode="json")
    row.strategy = state.spec.strategy.type.value
    row.phase = state.phase.value
    row.updated_at = state.updated_at
    row.spec = state.spec.model_dump(mode="json")
    row.step_index = state.step_index
    row.steps = list(state.steps)
    row.step_started_at = state.step_started_at
    row.baked_since = state.baked_since
    row.reason = state.reason
    row.verdicts = [
        {"step": v.step, "verdict": v.verdict.value, "reason": v.reason, "at": v.at.isoformat()} for v in state.verdicts
    ]
    row.counts = {step: {s.value: n for s, n in state.step_counts(step).items() if n} for step in state.steps}


def _track_values(track: DeviceTrack, state: RolloutState) -> dict[str, Any]:
    return {
        "rollout_id": state.id,
        "device_id": track.device_id,
        "target": track.target,
        "build_id": track.build_id,
        "fallback_build_id": track.fallback_build_id,
        "generation": track.generation or 0,
        "status": track.status.value,
        "reason": track.reason,
        "updated_at": track.updated_at or state.updated_at,
        "step": track.step,
        "published_at": track.published_at,
        "previous_version": track.previous.version if track.previous else None,
        "previous_build_id": track.previous.build_id if track.previous else None,
    }


def _state_of(row: RolloutRow, devices: list[RolloutDeviceRow]) -> RolloutState:
    return RolloutState(
        id=row.id,
        model=row.model_name,
        version=row.version,
        spec=RolloutRequest.model_validate(row.spec),
        phase=RolloutPhase(row.phase),
        step_index=row.step_index,
        steps=tuple(row.steps),
        step_started_at=utc_or_none(row.step_started_at),
        baked_since=utc_or_none(row.baked_since),
        devices=tuple(_track_of(d) for d in sorted(devices, key=lambda d: d.device_id)),
        reason=row.reason,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
        verdicts=tuple(_verdict_of(v) for v in row.verdicts or []),
    )


def _track_of(row: RolloutDeviceRow | Row[Any]) -> DeviceTrack:
    previous = None
    if row.previous_version is not None and row.previous_build_id is not None:
        previous = PreviousModel(row.previous_version, row.previous_build_id)
    return from_row(DeviceTrack, row, generation=row.generation or None, previous=previous)


def _verdict_of(data: dict[str, Any]) -> GateVerdict:
    return GateVerdict(
        str(data["step"]), Verdict(data["verdict"]), str(data["reason"]), utc(datetime.fromisoformat(data["at"]))
    )
