"""Migration 0002 on a database written by 0001: existing builds keep their status and artifact, gain a legacy
key and their parity report, and the old one-build-per-(version, target, precision) rule is gone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.domain.registry import BuildStatus

pytestmark = pytest.mark.integration
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_0002_migrates_existing_builds(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (name, created_at) VALUES ('old', :t)"), {"t": NOW})
        conn.execute(
            text(
                "INSERT INTO model_versions (model_name, version, created_at, source_sha256, source_size, inputs,"
                " outputs, samples_sha256, sample_count, samples_synthesised, reference_outputs_computed, lineage,"
                " metrics) VALUES ('old', 1, :t, :sha, 10, '[]', '[]', :sha, 1, 0, 0, '{}', '{}')"
            ),
            {"t": NOW, "sha": "a" * 64},
        )
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
