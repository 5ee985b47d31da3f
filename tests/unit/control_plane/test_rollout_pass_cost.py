"""What one executor pass costs, seen from the database: after K devices report, the rollout service reads those K
devices (one bulk call each for devices and telemetry), writes K tracks, and never lists the fleet, whether the
rollout holds 200 devices or 2,000. Real repositories on SQLite; the counting wrapper only records the calls."""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.db.rollout_repository import RolloutRepository
from control_plane.adapters.db.tables import DeviceRow
from control_plane.domain.ingest import DeviceChange
from control_plane.domain.registry import Build, BuildStatus, NewVersion
from control_plane.domain.rollout_progress import DeviceStatus, DeviceTrack
from control_plane.domain.rollout_spec import RolloutRequest
from control_plane.services.rollouts import RolloutService
from edge_agent.protocol import (
    HardwareFacts,
    ModelHealth,
    ModelStatus,
    ReportedState,
    SignedDesiredState,
    Signer,
    Topics,
)
from edge_agent.protocol.vocabulary import ArtifactKind, Channel, Precision
from model_builds.catalog import load_catalog
from tests.unit.control_plane.test_rollout_incremental import T0, serving, started

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
    pages: int = 0

    def get_devices(self, device_ids: Collection[str]) -> Any:
        self.reads.append(("devices", frozenset(device_ids)))
        return self.real.get_devices(device_ids)

    def device_facts(self, device_ids: Collection[str]) -> Any:
        self.reads.append(("facts", frozenset(device_ids)))
        return self.real.device_facts(device_ids)

    def reports_of(self, device_ids: Collection[str]) -> Any:
        self.reads.append(("reports", frozenset(device_ids)))
        return self.real.reports_of(device_ids)

    def telemetry_windows_of(self, device_ids: Collection[str], model: str) -> Any:
        self.reads.append(("telemetry", frozenset(device_ids)))
        return self.real.telemetry_windows_of(device_ids, model)

    def list_devices(self) -> Any:
        self.listed += 1
        return self.real.list_devices()

    def desired_page(self, after: str | None, limit: int) -> Any:
        self.pages += 1
        return self.real.desired_page(after, limit)

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


def service_over(
    tmp_path: Path, fleet_size: int, **spec: Any
) -> tuple[RolloutService, CountingFleet, CountingRollouts]:
    """A rollout of `fleet_size` devices, every one published to, observed once (the start's full pass)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    migrate(engine)
    RegistryRepository(engine).add_version(VERSION)  # what the tracks' build belongs to
    BuildRepository(engine).insert_build(BUILD)
    fleet = CountingFleet(FleetRepository(engine))
    state = started(fleet_size, **spec)  # every device published to, in progress
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
    return service, fleet, rollouts


REPORTED = {f"d{i:05}" for i in range(0, 100, 10)}
SIZES = [pytest.param(200, id="200-devices"), pytest.param(2_000, id="2000-devices")]


@pytest.mark.parametrize("fleet_size", SIZES)
@pytest.mark.parametrize(
    ("handed_over", "reads"),
    [
        pytest.param(True, ["facts"], id="reports-handed-over-by-the-fleet-service"),
        pytest.param(False, ["facts", "reports"], id="bare-ids-have-their-reports-read"),
    ],
)
def test_a_pass_after_k_reports_reads_and_writes_k_devices(
    tmp_path: Path, fleet_size: int, handed_over: bool, reads: list[str]
) -> None:
    service, fleet, rollouts = service_over(tmp_path, fleet_size)
    reports = {d: serving(d).reported for d in REPORTED}
    for report in reports.values():
        assert report is not None and fleet.real.apply_report(report, T0) is not None  # what the writer stored
    changed = {d: DeviceChange(r) for d, r in reports.items()} if handed_over else set(REPORTED)

    assert service.tick(T0 + timedelta(seconds=2), changed=changed) == 1

    assert fleet.reads == [(kind, frozenset(REPORTED)) for kind in reads]
    assert fleet.listed == 0
    assert rollouts.saved_tracks == [len(REPORTED)]  # the K devices activated, nothing else rewritten
    activated = [t.device_id for t in service.get_rollout("r1").devices if t.status is DeviceStatus.ACTIVATED]
    assert sorted(activated) == sorted(REPORTED)


@pytest.mark.parametrize(
    ("gates", "reads"),
    [
        pytest.param({}, [], id="no-gate-watches-telemetry-no-pass"),
        pytest.param({"max_error_rate": 0.1}, ["facts", "telemetry"], id="a-watching-gate-reads-it"),
    ],
)
def test_telemetry_alone_costs_a_pass_only_when_a_gate_watches_it(
    tmp_path: Path, gates: dict[str, Any], reads: list[str]
) -> None:
    service, fleet, rollouts = service_over(tmp_path, 200, gates=gates)

    service.tick(T0 + timedelta(seconds=2), changed={d: DeviceChange(telemetry=True) for d in REPORTED})

    assert fleet.reads == [(kind, frozenset(REPORTED)) for kind in reads]
    assert rollouts.saved_tracks == []  # telemetry alone moved no device


class Published:
    """A publisher that records the topics it was asked to publish on."""

    def __init__(self) -> None:
        self.topics: list[str] = []

    def publish(self, topic: str, payload: bytes, retain: bool = True, qos: int = 1) -> bool:
        self.topics.append(topic)
        return True


def test_a_reconnect_republishes_every_mqtt_desired_state_a_page_at_a_time(tmp_path: Path) -> None:
    """After the broker link comes up, every device on MQTT with a desired state gets it again, exactly once; the
    Ansible channel's never goes over MQTT; the fleet is read a page at a time, never listed whole."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    migrate(engine)
    fleet = CountingFleet(FleetRepository(engine))
    signed = SignedDesiredState(document="{}", signature="s", key_id="k").model_dump(mode="json")
    with_desired = [f"d{i:05}" for i in range(1_200)]
    for device_id in with_desired:
        fleet.real.enroll(device_id, Channel.MQTT, {}, None, None, None, T0)
    for device_id in ("fresh-1", "fresh-2"):  # enrolled, nothing issued yet
        fleet.real.enroll(device_id, Channel.MQTT, {}, None, None, None, T0)
    fleet.real.enroll("pushed", Channel.ANSIBLE, {}, None, None, None, T0)
    with engine.begin() as connection:
        connection.execute(
            update(DeviceRow).where(DeviceRow.id != "fresh-1", DeviceRow.id != "fresh-2"), {"desired": signed}
        )
    publisher = Published()
    topics = Topics()
    service = RolloutService(
        fleet, Unused(), Unused(), Unused(), Unused(), Unused(), Unused(), publisher, topics, lambda: T0, "http://cp"
    )  # type: ignore[arg-type]

    assert service.republish_all() == 1_200

    assert sorted(publisher.topics) == sorted(topics.desired(d) for d in with_desired)
    assert fleet.listed == 0
    assert fleet.pages == 3  # 1,202 MQTT devices, 500 a page


def test_reading_a_rollout_never_waits_for_a_pass(tmp_path: Path) -> None:
    """While a pass holds the service (at 10,000 devices an abort's pass takes seconds), `GET /v1/rollouts/{id}`
    still answers with what the last decision showed: its waits and the step, not a wait for the lock."""
    service, _, _ = service_over(tmp_path, 50)
    rollout_id = service.rollouts_page(10).items[0].id
    holding, release = threading.Event(), threading.Event()

    def long_pass() -> None:
        with service._lock:  # what the executor's pass holds from its first read to its last publish
            holding.set()
            release.wait(30)

    answers: list[Any] = []
    passing = threading.Thread(target=long_pass)
    passing.start()
    try:
        assert holding.wait(10)
        reader = threading.Thread(target=lambda: answers.append(service.rollout_page(rollout_id, limit=5)))
        reader.start()
        reader.join(10)  # a bound, not a wait for logic: the answer comes at once or the reader is stuck
        assert answers, "reading the rollout waited for the pass"
        page = answers[0]
        assert page.waits, "the devices still installing are shown as waited for"
        assert page.state.id == rollout_id and all(w.device_id.startswith("d0") for w in page.waits)
        assert service.current_gate_readings() is not None  # the /metrics scrape does not wait either
    finally:
        release.set()
        passing.join(10)


class SamplesOnDisk:
    """The artifact store as composing a desired state uses it: the samples file's path (for its size)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.looked_up = 0

    def path_for(self, sha256: str) -> Path | None:
        self.looked_up += 1
        return self._path


def serving_build(device_id: str, build: Build, generation: int) -> ReportedState:
    model = ModelStatus(
        name=build.model, version=build.version, build_id=build.id, active_slot="a", provider="cpu",
        health=ModelHealth.SERVING,
    )  # fmt: skip
    hardware = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")
    return ReportedState(
        device_id=device_id, agent_version="x", applied_generation=generation, models=[model], hardware=hardware
    )


def test_the_first_step_after_create_reads_only_the_devices_that_report(tmp_path: Path) -> None:
    """`create` has just read every selected device, its report included: once the devices start reporting, a pass
    reads the K that reported, not the other devices of the step (before, the first pass after the step started
    read the small columns and the stored report of every device in it: a whole-fleet read per rollout)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    migrate(engine)
    registry = RegistryRepository(engine)
    registry.add_version(VERSION)
    builds = BuildRepository(engine)
    builds.insert_build(BUILD)
    fleet = CountingFleet(FleetRepository(engine))
    ids = [f"d{i:05}" for i in range(300)]
    for device_id in ids:
        fleet.real.enroll(device_id, Channel.MQTT, {"site": "a"}, "cpu-x86_64", None, None, T0)
    samples = tmp_path / "samples.npz"
    samples.write_bytes(b"x")
    publisher = Published()
    store = SamplesOnDisk(samples)
    service = RolloutService(
        fleet, RolloutRepository(engine), registry, builds, store, load_catalog(),  # type: ignore[arg-type]
        Signer.generate(), publisher, Topics(), lambda: T0, "http://cp",
    )  # fmt: skip

    state = service.create(RolloutRequest.model_validate({"model": "m", "version": 1}))
    assert len(publisher.topics) == len(ids)  # every device of the one step published to
    assert store.looked_up == 1  # the version's self-test reference found once for the pass, not once per device
    fleet.reads.clear()
    reports = {d: serving_build(d, BUILD, generation=1) for d in REPORTED}
    for report in reports.values():
        assert fleet.real.apply_report(report, T0) is not None  # what the writer stored

    service.tick(T0 + timedelta(seconds=2), changed={d: DeviceChange(r) for d, r in reports.items()})

    assert fleet.reads == [("facts", frozenset(REPORTED))]
    activated = [t.device_id for t in service.get_rollout(state.id).devices if t.status is DeviceStatus.ACTIVATED]
    assert sorted(activated) == sorted(REPORTED)
