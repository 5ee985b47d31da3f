"""What a batch of device messages writes, and when the ingest queue says that it dropped some.

Pure: values and decisions only, no clock reads and no I/O. The fleet service parses and checks each message of a
batch on the ingest writer's thread and adds what it accepts to a `WritesBuilder`; the repository stores the
resulting `FleetWrites` in one transaction. Coalescing keeps what the stored state needs and never loses a record:
- a device's reported state and presence: only the latest in the batch is stored (the retained topics are
  "latest wins" too), but every report still went through its own checks before it got here;
- events and telemetry windows: every one is kept, in the order they arrived;
- `last_seen`: the latest time any of the device's own messages arrived.
It must never decide whether a message is valid (services/fleet.py with domain/reports.py do) or touch a database.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from control_plane.domain.fleet import DeviceEventRecord, EventSource
from edge_agent.protocol import PresenceStatus, ReportedState, Telemetry

RETAINED_PER_DEVICE = 2  # a resync redelivers a device's retained reported state and presence


class Leaf(str, Enum):
    """The device topics the control plane reads (`edge/devices/{id}/{leaf}`)."""

    REPORTED = "reported"
    EVENTS = "events"
    STATUS = "status"
    TELEMETRY = "telemetry"

    @property
    def retained(self) -> bool:
        """What the broker keeps and redelivers on a new subscription: lost ones can be fetched again."""
        return self in (Leaf.REPORTED, Leaf.STATUS)


@dataclass(frozen=True)
class Incoming:
    """One message as the network thread handed it over: topic already parsed, body not yet."""

    device_id: str
    leaf: Leaf
    payload: bytes
    received_at: datetime


@dataclass(frozen=True)
class DeviceChange:
    """What a stored batch changed of a device that rollouts look at (the fleet service hands it over with the
    device's id, so the rollout executor need not read back the report it just stored)."""

    reported: ReportedState | None = None  # the report just stored
    reread: bool = False  # its report may have changed but was not handed over: read it from the database
    telemetry: bool = False  # telemetry windows were stored

    @property
    def telemetry_only(self) -> bool:
        return self.reported is None and not self.reread

    def then(self, later: DeviceChange) -> DeviceChange:
        """This change followed by `later` (of a later batch): the latest report wins."""
        telemetry = self.telemetry or later.telemetry
        if later.reported is not None:
            return DeviceChange(later.reported, False, telemetry)
        if self.reread or later.reread:
            return DeviceChange(None, True, telemetry)
        return DeviceChange(self.reported, False, telemetry)


UNKNOWN_CHANGE = DeviceChange(reread=True)  # said to have changed, without saying how: its report is read again


def as_changes(changed: Collection[str] | Mapping[str, DeviceChange]) -> Mapping[str, DeviceChange]:
    """What changed of each device: as handed over, or, for bare ids, `UNKNOWN_CHANGE` (their reports are read)."""
    return changed if isinstance(changed, Mapping) else dict.fromkeys(changed, UNKNOWN_CHANGE)


@dataclass(frozen=True)
class ReportWrite:
    reported: ReportedState  # the latest accepted report of the batch
    adopt_hardware: bool  # take its hardware facts if the device still has none (domain/reports.py)
    highest_applied: int  # the highest applied generation any of the batch's reports named (clears a delivery failure)


@dataclass(frozen=True)
class TelemetryWrite:
    device_id: str
    telemetry: Telemetry
    at: datetime


@dataclass(frozen=True)
class FleetWrites:
    """Everything one batch stores, as one transaction."""

    reports: Mapping[str, ReportWrite] = field(default_factory=dict)
    statuses: Mapping[str, PresenceStatus] = field(default_factory=dict)
    events: Sequence[DeviceEventRecord] = ()
    telemetry: Sequence[TelemetryWrite] = ()
    seen: Mapping[str, datetime] = field(default_factory=dict)  # device -> when its latest own message arrived

    @property
    def empty(self) -> bool:
        return not (self.reports or self.statuses or self.events or self.telemetry or self.seen)

    @property
    def device_ids(self) -> set[str]:
        return {*self.reports, *self.statuses, *self.seen, *(e.device_id for e in self.events)}

    @property
    def wakes(self) -> set[str]:
        """Devices whose stored report or telemetry changed: what rollouts look at."""
        return {*self.reports, *(t.device_id for t in self.telemetry)}

    def changes(self, stored: Collection[str]) -> dict[str, DeviceChange]:
        """What the batch changed of the devices it was stored for: each one's report and whether telemetry."""
        sent = {t.device_id for t in self.telemetry}
        return {
            d: DeviceChange(r.reported if (r := self.reports.get(d)) is not None else None, d in sent)
            for d in self.wakes
            if d in stored
        }


class WritesBuilder:
    """Collects a batch's accepted messages in arrival order (one builder per batch, one thread)."""

    def __init__(self) -> None:
        self._reports: dict[str, ReportWrite] = {}
        self._statuses: dict[str, PresenceStatus] = {}
        self._events: list[DeviceEventRecord] = []
        self._telemetry: list[TelemetryWrite] = []
        self._seen: dict[str, datetime] = {}

    def report(self, reported: ReportedState, at: datetime, adopt_hardware: bool) -> None:
        device_id = reported.device_id
        before = self._reports.get(device_id)
        highest = reported.applied_generation
        if before is not None:
            highest = max(before.highest_applied, highest)
        self._reports[device_id] = ReportWrite(reported, adopt_hardware, highest)
        self._see(device_id, at)

    def status(self, device_id: str, status: PresenceStatus, at: datetime) -> None:
        self._statuses[device_id] = status
        self._see(device_id, at)

    def event(self, event: DeviceEventRecord, at: datetime) -> None:
        self._events.append(event)
        if event.source is EventSource.DEVICE:
            self._see(event.device_id, at)

    def telemetry(self, device_id: str, telemetry: Telemetry, at: datetime) -> None:
        self._telemetry.append(TelemetryWrite(device_id, telemetry, at))
        self._see(device_id, at)

    def build(self) -> FleetWrites:
        return FleetWrites(
            dict(self._reports), dict(self._statuses), tuple(self._events), tuple(self._telemetry), dict(self._seen)
        )

    def _see(self, device_id: str, at: datetime) -> None:
        last = self._seen.get(device_id)
        self._seen[device_id] = at if last is None else max(last, at)


# -- the queue's word on drops ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropNotice:
    """How many messages were dropped since the last warning, and when that warning was given."""

    since_warning: int = 0
    warned_at: datetime | None = None


def note_drop(state: DropNotice, now: datetime, every: timedelta) -> tuple[DropNotice, int | None]:
    """Count one dropped message; the second value, when set, is the count to warn about now (at most one warning
    per `every`, so a burst of drops is one log line, not thousands)."""
    dropped = state.since_warning + 1
    if state.warned_at is not None and now - state.warned_at < every:
        return replace(state, since_warning=dropped), None
    return DropNotice(0, now), dropped


def resync_chunk(pending: Iterable[str], room: int, limit: int) -> list[str]:
    """The devices whose retained topics to fetch again now: as many as the queue has room for (each device's
    reported state and presence come back), at most `limit`, in the order they were lost."""
    take = min(limit, room // RETAINED_PER_DEVICE)
    chunk: list[str] = []
    for device_id in pending:
        if len(chunk) >= take:
            break
        chunk.append(device_id)
    return chunk


@dataclass(frozen=True)
class IngestCounters:
    """What the ingest queue did since the control plane started (the status route shows it)."""

    received: int = 0  # messages handed over by the network thread and queued
    queued: int = 0  # waiting now
    queued_bytes: int = 0
    high_water: int = 0  # the most that ever waited at once
    capacity: int = 0
    dropped: int = 0  # refused because the queue was full
    batches: int = 0
    applied: int = 0  # messages the writer applied (stored or refused with a reason)
    last_drop_at: datetime | None = None
    resyncs: int = 0  # times the retained topics of devices with dropped messages were fetched again
    resync_pending: int = 0  # devices whose retained state is still to be fetched again

    @property
    def mean_batch(self) -> float:
        return self.applied / self.batches if self.batches else 0.0
