"""What differs between SQLite and PostgreSQL does not show: times read back as the same instant in UTC, sizes past
2 GiB and the schema the migrations build are the same on both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, text

from control_plane.adapters.db.audit_repository import AuditRepository
from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.db.tables import Base
from control_plane.domain.audit import AuditEntry

pytestmark = pytest.mark.integration
FIVE_GIB = 5 * 1024**3


def test_a_time_reads_back_as_the_same_instant_in_utc(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    repository = AuditRepository(engine)
    at = datetime(2026, 7, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-7)))
    entry = AuditEntry.of(
        request_id="r", subject="token:x", name="x", role="admin", method="POST", route=None, path="/", status=200,
        detail=None,
    )  # fmt: skip
    repository.append(entry, at)
    (record,) = repository.page(0, 10)
    assert record.at == at and record.at.tzinfo == UTC and record.at.hour == 19
    engine.dispose()


def test_sizes_past_2_gib_are_kept(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (name, created_at) VALUES ('big', :t)"), {"t": now})
        conn.execute(
            text(
                "INSERT INTO model_versions (model_name, version, created_at, source_sha256, source_size, inputs,"
                " outputs, samples_sha256, sample_count, samples_synthesised, reference_outputs_computed, lineage,"
                " metrics, tolerances) VALUES ('big', 1, :t, :sha, :size, '[]', '[]', :sha, 1, false, false, '{}',"
                " '{}', '{}')"
            ),
            {"t": now, "sha": "a" * 64, "size": FIVE_GIB},
        )
        conn.execute(
            text(
                "INSERT INTO builds (id, version_id, model_name, version, target, precision, artifact_kind, status,"
                " artifact_sha256, artifact_size, created_at, manifest, key, options) VALUES ('b-big', 1, 'big', 1,"
                " 'cpu-x86_64', 'fp32', 'onnx', 'succeeded', :sha, :size, :t, '{}', 'k', '{}')"
            ),
            {"t": now, "sha": "b" * 64, "size": FIVE_GIB},
        )
    version = RegistryRepository(engine).get_version("big", 1)
    build = BuildRepository(engine).get_build("b-big")
    assert version is not None and version.source_size == FIVE_GIB
    assert build is not None and build.artifact_size == FIVE_GIB
    engine.dispose()


def test_the_migrations_build_the_tables_the_code_maps(database_url: str) -> None:
    """Every mapped table and column exists after the migrations, with the same nullability."""
    engine = make_engine(database_url)
    migrate(engine)
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        for column in table.columns:
            assert column.name in columns, f"{table.name}.{column.name} is mapped but not migrated"
            assert columns[column.name]["nullable"] == column.nullable, f"{table.name}.{column.name} nullability"
    engine.dispose()


def test_text_with_a_nul_character_is_stored_not_refused(database_url: str) -> None:
    """PostgreSQL refuses NUL in text; a device's message carrying one must not fail the transaction that stores it
    (with other devices' messages): it is kept as U+FFFD there, as it is on SQLite."""
    engine = make_engine(database_url)
    migrate(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO devices (id, created_at, labels, channel, desired_generation)"
                " VALUES ('dev-nul', :t, '{}', 'mqtt', 0)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO device_events (device_id, generation, step, reason, at)"
                " VALUES ('dev-nul', 1, 'failed', :r, :t)"
            ),
            {"r": "self-test\x00failed", "t": now},
        )
    with engine.connect() as conn:
        (reason,) = conn.execute(text("SELECT reason FROM device_events WHERE device_id = 'dev-nul'")).scalars()
    kept = "self-test\ufffdfailed" if engine.dialect.name == "postgresql" else "self-test\x00failed"
    assert reason == kept
    engine.dispose()
