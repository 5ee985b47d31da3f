"""Migrations on databases written by older versions: nothing an operator had is lost.

0002: existing builds keep their status and artifact, gain a legacy key and their parity report, and the old
one-build-per-(version, target, precision) rule is gone. 0003: existing rollouts become one-step all-at-once
rollouts (a `failed` one reads `aborted`), with their devices' statuses and generations kept. 0008: devices remember
the builds they were sent, so their reports of them are still accepted."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, text

from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.db.rollout_repository import RolloutRepository
from control_plane.domain.fleet import EventSource
from control_plane.domain.registry import BuildStatus

pytestmark = pytest.mark.integration
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _version_written_by_0001(conn: Connection) -> None:
    """Model `old` with version 1, as schema 0001 stored them."""
    conn.execute(text("INSERT INTO models (name, created_at) VALUES ('old', :t)"), {"t": NOW})
    conn.execute(
        text(
            "INSERT INTO model_versions (model_name, version, created_at, source_sha256, source_size, inputs,"
            " outputs, samples_sha256, sample_count, samples_synthesised, reference_outputs_computed, lineage,"
            " metrics) VALUES ('old', 1, :t, :sha, 10, '[]', '[]', :sha, 1, false, false, '{}', '{}')"
        ),
        {"t": NOW, "sha": "a" * 64},
    )


def test_0002_migrates_existing_builds(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        _version_written_by_0001(conn)
        conn.execute(
            text(
                "INSERT INTO builds (id, version_id, model_name, version, target, precision, artifact_kind, status,"
                " artifact_sha256, artifact_size, error, created_at, manifest, manifest_signature) VALUES"
                " ('b-old', 1, 'old', 1, 'cpu-x86_64', 'fp32', 'onnx', 'succeeded', :sha, 10, NULL, :t,"
                " '{\"parity\": {\"passed\": true}}', 'sig')"
            ),
            {"t": NOW, "sha": "b" * 64},
        )
    migrate(engine)

    (build,) = BuildRepository(engine).list_builds("old", 1)
    assert (build.id, build.status, build.key, build.artifact_sha256) == (
        "b-old",
        BuildStatus.SUCCEEDED,
        "legacy-b-old",
        "b" * 64,
    )
    assert build.parity == {"passed": True} and build.finished_at == NOW and build.options == {}
    version = RegistryRepository(engine).get_version("old", 1)
    assert version is not None and version.tolerances == {}
    BuildRepository(engine).insert_build(replace(build, id="b-new", key="k2", status=BuildStatus.QUEUED))
    assert [b.id for b in BuildRepository(engine).list_builds("old", 1)] == ["b-old", "b-new"]
    engine.dispose()


def _rollout_written_by_0001(engine: object, phase: str, device_status: str) -> None:
    with engine.begin() as conn:  # type: ignore[attr-defined]
        _version_written_by_0001(conn)
        conn.execute(
            text(
                "INSERT INTO builds (id, version_id, model_name, version, target, precision, artifact_kind, status,"
                " artifact_sha256, artifact_size, error, created_at, manifest, manifest_signature) VALUES"
                " ('b-old', 1, 'old', 1, 'cpu-x86_64', 'fp32', 'onnx', 'succeeded', :sha, 10, NULL, :t, '{}', 'sig')"
            ),
            {"t": NOW, "sha": "b" * 64},
        )
        conn.execute(
            text(
                "INSERT INTO devices (id, created_at, gpu_class, labels, channel, desired_generation)"
                " VALUES ('dev-1', :t, 'cpu-x86_64', '{}', 'mqtt', 3)"
            ),
            {"t": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO rollouts (id, model_name, version, selector, strategy, phase, created_at, updated_at)"
                " VALUES ('r-old', 'old', 1, '{\"labels\": {}, \"gpu_class\": null}', 'all-at-once', :phase, :t, :t)"
            ),
            {"t": NOW, "phase": phase},
        )
        conn.execute(
            text(
                "INSERT INTO rollout_devices (rollout_id, device_id, target, build_id, generation, status, reason,"
                " updated_at) VALUES ('r-old', 'dev-1', 'cpu-x86_64', 'b-old', 3, :status, 'self-test failed', :t)"
            ),
            {"t": NOW, "status": device_status},
        )


@pytest.mark.parametrize(
    ("old_phase", "old_device", "new_phase"),
    [
        pytest.param("failed", "failed", "aborted", id="failed-becomes-aborted"),
        pytest.param("succeeded", "activated", "succeeded", id="succeeded-stays"),
    ],
)
def test_0003_turns_old_rollouts_into_one_step_all_at_once_rollouts(
    database_url: str, old_phase: str, old_device: str, new_phase: str
) -> None:
    engine = make_engine(database_url)
    migrate(engine, "0001")
    _rollout_written_by_0001(engine, old_phase, old_device)
    migrate(engine)

    state = RolloutRepository(engine).get("r-old")
    assert state is not None
    assert state.phase.value == new_phase
    assert state.steps == ("all",)
    assert state.spec.model == "old" and state.spec.strategy.type.value == "all-at-once"
    (device,) = state.devices
    assert (device.device_id, device.status.value, device.generation) == ("dev-1", old_device, 3)
    assert RolloutRepository(engine).events_since("r-old", 0) == []
    engine.dispose()


def test_0006_requeues_builds_claimed_before_builders_authenticated(database_url: str) -> None:
    """A lease taken by an unauthenticated builder names nobody who could hold it now: back to the queue. A finished
    build keeps everything; the old builders table (unauthenticated labels) is not carried over."""
    engine = make_engine(database_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        _version_written_by_0001(conn)
    migrate(engine, "0005")
    with engine.begin() as conn:
        for build_id, status in (("b-run", "running"), ("b-done", "succeeded")):
            conn.execute(
                text(
                    "INSERT INTO builds (id, version_id, model_name, version, target, precision, artifact_kind,"
                    " status, artifact_sha256, artifact_size, error, created_at, manifest, manifest_signature, key,"
                    " options, builder_id, lease_expires_at, started_at) VALUES (:id, 1, 'old', 1, 'cpu-x86_64',"
                    " 'fp32', 'onnx', :status, NULL, NULL, NULL, :t, '{}', NULL, :id, '{}', 'b1', :t, :t)"
                ),
                {"id": build_id, "status": status, "t": NOW},
            )
        conn.execute(
            text("INSERT INTO builders (id, hostname, info, last_seen) VALUES ('b1', 'h', '{}', :t)"), {"t": NOW}
        )
    migrate(engine)

    repository = BuildRepository(engine)
    running = repository.get_build("b-run")
    assert running is not None
    assert (running.status, running.builder_id, running.builder_subject, running.lease_expires_at) == (
        BuildStatus.QUEUED, None, None, None
    )  # fmt: skip
    assert running.message is not None and "builders now authenticate" in running.message
    done = repository.get_build("b-done")
    assert done is not None and (done.status, done.builder_id) == (BuildStatus.SUCCEEDED, "b1")
    assert repository.list_builders() == [] and repository.list_registrations() == []
    engine.dispose()


def test_0008_remembers_what_existing_devices_were_sent_so_their_reports_stay_accepted(database_url: str) -> None:
    """Devices that exist already keep working: the builds a rollout sent (and the ones they replaced) and the
    builds in their current desired state become what their reports may name; their events are the device's."""
    engine = make_engine(database_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        _version_written_by_0001(conn)
    migrate(engine, "0007")
    document = {"device_id": "dev-old", "generation": 2, "issued_at": NOW.isoformat(), "models": [
        {"name": "old", "version": 1, "build_id": "b-now", "target": "cpu-x86_64"}]}  # fmt: skip
    desired = {"document": json.dumps(document), "signature": "s", "key_id": "k"}
    with engine.begin() as conn:
        for build_id in ("b-before", "b-sent", "b-now"):
            conn.execute(
                text(
                    "INSERT INTO builds (id, version_id, model_name, version, target, precision, artifact_kind,"
                    " status, created_at, manifest, key, options) VALUES (:id, 1, 'old', 1, 'cpu-x86_64', 'fp32',"
                    " 'onnx', 'succeeded', :t, '{}', :id, '{}')"
                ),
                {"id": build_id, "t": NOW},
            )
        conn.execute(
            text(
                "INSERT INTO devices (id, created_at, labels, channel, desired_generation, desired)"
                " VALUES ('dev-old', :t, '{}', 'mqtt', 2, :desired)"
            ),
            {"t": NOW, "desired": json.dumps(desired)},
        )
        conn.execute(
            text(
                "INSERT INTO rollouts (id, model_name, version, selector, strategy, phase, created_at, updated_at,"
                " spec, step_index, steps, verdicts) VALUES ('r1', 'old', 1, '{}', 'all', 'succeeded', :t, :t, '{}',"
                " 0, '[]', '[]')"
            ),
            {"t": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO rollout_devices (rollout_id, device_id, target, build_id, generation, status, updated_at,"
                " step, previous_version, previous_build_id) VALUES ('r1', 'dev-old', 'cpu-x86_64', 'b-sent', 1,"
                " 'activated', :t, 'all', 1, 'b-before')"
            ),
            {"t": NOW},
        )
        conn.execute(
            text("INSERT INTO device_events (device_id, generation, step, at) VALUES ('dev-old', 1, 'activated', :t)"),
            {"t": NOW},
        )
    migrate(engine)

    fleet = FleetRepository(engine)
    device = fleet.get_device("dev-old")
    assert device is not None
    assert device.issued_builds == {b: ("old", 1) for b in ("b-before", "b-sent", "b-now")}
    assert [(e.step, e.source) for e in fleet.list_events("dev-old", 10)] == [("activated", EventSource.DEVICE)]
    engine.dispose()
