"""What the control plane's `/metrics` reports, gathered at scrape time from what the control plane already keeps:
one grouped COUNT per table (devices by GPU class and presence, rollouts by phase, builds by status), the open
rollouts' current gate values from the rollout service's memory, and the ingest queue's own counters.

Why a service: a scrape must cost what the work costs, not the fleet: never a device per row, never a scan of
reports or telemetry. Figures are kept for `min_interval_s` (a scrape storm or two Prometheus servers read the
same figures). Knows nothing of the Prometheus client (control_plane/api/metrics.py renders), and must never add
a device id to a figure: label sets stay bounded by GPU classes, phases, statuses and open rollouts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from control_plane.domain.fleet import DeviceFacts, Presence, presence
from control_plane.domain.ingest import IngestCounters
from control_plane.domain.registry import BuildStatus
from control_plane.domain.rollout_gates import GateReading
from control_plane.domain.rollout_progress import RolloutPhase, RolloutState
from edge_agent.protocol import PresenceStatus
from edge_agent.protocol.vocabulary import Channel

NO_GPU_CLASS = "none"  # the label value of devices whose GPU class is not known (a label cannot be absent)
# Statuses a build is stored with (`waiting_for_builder` is only ever shown, never stored).
STORED_BUILD_STATUSES = tuple(s for s in BuildStatus if s is not BuildStatus.WAITING_FOR_BUILDER)


class PresenceGroup(Protocol):
    @property
    def gpu_class(self) -> str | None: ...
    @property
    def channel(self) -> str: ...
    @property
    def status(self) -> str | None: ...
    @property
    def seen(self) -> bool: ...
    @property
    def recent(self) -> bool: ...
    @property
    def devices(self) -> int: ...


class FleetCounts(Protocol):
    def presence_groups(self, seen_since: datetime) -> Sequence[PresenceGroup]: ...


class PhaseCounts(Protocol):
    def count_by_phase(self) -> dict[str, int]: ...


class StatusCounts(Protocol):
    def count_by_status(self) -> dict[str, int]: ...


GateReadings = Callable[[], list[tuple[RolloutState, str, tuple[GateReading, ...]]]]


@dataclass(frozen=True)
class GateFigure:
    rollout: str
    model: str
    step: str
    gate: str  # failed, requests, error_rate, p99_ms, p99_ratio
    value: float | None  # None: nothing measured yet
    threshold: float
    bound: str  # max or min
    ok: bool | None  # None: not judged yet


@dataclass(frozen=True)
class Figures:
    devices: Mapping[tuple[str, str], int]  # (GPU class, presence) -> devices
    rollouts: Mapping[str, int]  # phase -> rollouts (every phase, zero included)
    builds: Mapping[str, int]  # stored status -> builds (every status, zero included)
    gates: tuple[GateFigure, ...]
    ingest: IngestCounters
    mqtt_connected: bool
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class MetricsSources:
    fleet: FleetCounts
    rollouts: PhaseCounts
    builds: StatusCounts
    gate_readings: GateReadings
    ingest: Callable[[], IngestCounters]
    mqtt_connected: Callable[[], bool]


class MetricsService:
    def __init__(
        self,
        sources: MetricsSources,
        offline_after: timedelta,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
        min_interval_s: float = 5.0,
    ) -> None:
        self._sources = sources
        self._offline_after = offline_after
        self._clock = clock
        self._monotonic = monotonic
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._kept: Figures | None = None

    def figures(self) -> Figures:
        """The figures of at most `min_interval_s` ago; read afresh (three grouped counts) when older."""
        with self._lock:
            now = self._monotonic()
            if self._kept is None or now - self._kept.at >= self._min_interval_s:
                self._kept = self._read(now)
            return self._kept

    def _read(self, at: float) -> Figures:
        sources = self._sources
        now = self._clock()
        groups = sources.fleet.presence_groups(now - self._offline_after)
        phases = sources.rollouts.count_by_phase()
        statuses = sources.builds.count_by_status()
        return Figures(
            devices=devices_by_presence(groups, now, self._offline_after),
            rollouts={p.value: phases.get(p.value, 0) for p in RolloutPhase},
            builds={s.value: statuses.get(s.value, 0) for s in STORED_BUILD_STATUSES},
            gates=tuple(gate_figures(sources.gate_readings())),
            ingest=sources.ingest(),
            mqtt_connected=sources.mqtt_connected(),
            at=at,
        )


def devices_by_presence(
    groups: Sequence[PresenceGroup], now: datetime, offline_after: timedelta
) -> dict[tuple[str, str], int]:
    """Devices per (GPU class, presence), every presence listed for every class seen. Presence is decided by the
    domain's own rule (`domain.fleet.presence`) on a stand-in with the group's facts, never re-written in SQL."""
    out: dict[tuple[str, str], int] = {}
    for group in groups:
        gpu = group.gpu_class or NO_GPU_CLASS
        for state in Presence:
            out.setdefault((gpu, state.value), 0)
        out[(gpu, _presence_of(group, now, offline_after).value)] += group.devices
    return out


def _presence_of(group: PresenceGroup, now: datetime, offline_after: timedelta) -> Presence:
    last_seen = None if not group.seen else now if group.recent else now - offline_after - timedelta(seconds=1)
    stand_in = DeviceFacts(
        id="",
        gpu_class=group.gpu_class,
        labels={},
        hardware=None,
        channel=Channel(group.channel),
        status=PresenceStatus(group.status) if group.status else None,
        last_seen=last_seen,
        desired_generation=0,
        delivery_failure=None,
        issued_builds={},
    )
    return presence(stand_in, now, offline_after)


def gate_figures(found: list[tuple[RolloutState, str, tuple[GateReading, ...]]]) -> list[GateFigure]:
    return [
        GateFigure(
            state.id,
            state.model,
            step,
            r.name,
            None if r.value is None else float(r.value),
            float(r.threshold),
            r.bound,
            r.ok,
        )
        for state, step, readings in sorted(found, key=lambda item: item[0].id)
        for r in readings
    ]
