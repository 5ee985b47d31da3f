"""What one executor pass costs, seen from the database: after K devices report, the rollout service reads those K
devices (one bulk call each for devices and telemetry), writes K tracks, and never lists the fleet, whether the
rollout holds 200 devices or 2,000. Real repositories on SQLite; the counting wrapper only records the calls."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.db.rollout_repository import RolloutRepository
from control_plane.domain.registry import Build, BuildStatus, NewVersion
from control_plane.domain.rollout_progress import DeviceTrack
from control_plane.services.rollouts import RolloutService
from edge_agent.protocol import Topics
from edge_agent.protocol.vocabulary import ArtifactKind, Channel, Precision
from tests.unit.control_plane.test_rollout_incremental import T0, started

VERSION = NewVersion("m", T0, "a" * 64, 1, (), (), "b" * 64, 1, False, False)
BUILD = Build(
    id="b1", model="m", version=1, target="cpu-x86_64", precision=Precision.FP32, artifact_kind=ArtifactKind.ONNX,
    status=BuildStatus.SUCCEEDED, artifact_sha256="c" * 64, artifact_size=1, error=None, created_at=T0, manifest={},
    manifest_signature=None, key="k", compute_capability=None, tensorrt_version=None,
)  # fmt: skip


@dataclass
class CountingFleet:
    """The real fleet repository, with the rollout executor's reads counted."""

    real: FleetRepository
    reads: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    listed: int = 0

    def get_devices(self, device_ids: Collection[str]) -> Any:
        self.reads.append(("devices", frozenset(device_ids)))
        return self.real.get_devices(device_ids)

    def telemetry_windows_of(self, device_ids: Collection[str], model: str) -> Any:
        self.reads.append(("telemetry", frozenset(device_ids)))
        return self.real.telemetry_windows_of(device_ids, model)

    def list_devices(self) -> Any:
        self.listed += 1
        return self.real.list_devices()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@dataclass
class CountingRollouts:
    real: RolloutRepository
    saved_tracks: list[int] = field(default_factory=list)

    def save(self, state: Any, desired: Any = (), events: Any = (), tracks: list[DeviceTrack] | None = None) -> None:
        self.saved_tracks.append(len(state.devices) if tracks is None else len(tracks))
        self.real.save(state, desired, events, tracks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class Unused:
    """A port this test's passes must never reach (no publish is due: every device was published to already)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the pass used {name}")


@pytest.mark.parametrize("fleet_size", [pytest.param(200, id="200-devices"), pytest.param(2_000, id="2000-devices")])
def test_a_pass_after_k_reports_reads_and_writes_k_devices(tmp_path: Path, fleet_size: int) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    migrate(engine)
    RegistryRepository(engine).add_version(VERSION)  # what the tracks' build belongs to
    BuildRepository(engine).insert_build(BUILD)
    fleet = CountingFleet(FleetRepository(engine))
    state = started(fleet_size)  # every device published to, in progress
    state = replace(state, devices=tuple(replace(t, build_id=BUILD.id) for t in state.devices))
    for track in state.devices:
        fleet.real.enroll(track.device_id, Channel.MQTT, {}, None, None, None, T0)
    rollouts = CountingRollouts(RolloutRepository(engine))
    rollouts.real.save(state)
    service = RolloutService(
        fleet, rollouts, Unused(), Unused(), Unused(), Unused(), Unused(), Unused(), Topics(), lambda: T0, "http://cp"
    )  # type: ignore[arg-type]
    service.tick(T0 + timedelta(seconds=1), changed=None)  # start: every open rollout observed once, in bulk
    fleet.reads.clear()
    rollouts.saved_tracks.clear()

    reported = {f"d{i:05}" for i in range(0, 100, 10)}
    service.tick(T0 + timedelta(seconds=2), changed=reported)

    assert fleet.reads == [("devices", frozenset(reported)), ("telemetry", frozenset(reported))]
    assert fleet.listed == 0
    assert all(n <= len(reported) for n in rollouts.saved_tracks)
