"""Deleting a version in the database, on SQLite and PostgreSQL: refused while an unfinished rollout holds its
builds (nothing deleted), done with the finished rollouts that installed it once they are over, and never handing
back for removal a file another version still refers to (artifacts are content-addressed and shared)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import Engine

from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.db.rollout_repository import RolloutRepository
from control_plane.domain.registry import Deletion, VersionUsage
from control_plane.domain.rollout_progress import RolloutPhase
from tests.unit.control_plane.test_rollout_incremental import started
from tests.unit.control_plane.test_rollout_pass_cost import BUILD, VERSION

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    RegistryRepository(engine).add_version(VERSION)
    BuildRepository(engine).insert_build(BUILD)
    yield engine
    engine.dispose()


def test_a_version_an_open_rollout_holds_is_kept_and_goes_with_its_finished_rollout(engine: Engine) -> None:
    registry, rollouts = RegistryRepository(engine), RolloutRepository(engine)
    state = started(3)
    state = replace(state, devices=tuple(replace(t, build_id=BUILD.id) for t in state.devices))
    rollouts.save(state)

    held = registry.delete_unused("m", 1)
    assert held == VersionUsage(rollouts=(state.id,))
    assert registry.get_version("m", 1) is not None and BuildRepository(engine).get_build(BUILD.id) is not None

    rollouts.save(replace(state, phase=RolloutPhase.SUCCEEDED))
    done = registry.delete_unused("m", 1)
    assert done == Deletion("m", 1, 1, 1, ("a" * 64, "b" * 64, "c" * 64), 1)
    assert registry.get_version("m", 1) is None and BuildRepository(engine).get_build(BUILD.id) is None
    assert rollouts.summary(state.id) is None


def test_files_another_version_refers_to_are_not_handed_back(engine: Engine) -> None:
    registry = RegistryRepository(engine)
    registry.add_version(VERSION)  # v2: the same source and samples, content-addressed
    done = registry.delete_unused("m", 1)
    assert isinstance(done, Deletion) and done.artifacts == ("c" * 64,)  # only the build's artifact was v1's alone
    assert [v.version for v in registry.list_versions("m")] == [2]
    whole = registry.delete_unused("m", None)
    assert isinstance(whole, Deletion) and whole.artifacts == ("a" * 64, "b" * 64)
    assert registry.get_model("m") is None
