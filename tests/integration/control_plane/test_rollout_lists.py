"""Rollouts listed and checked by the database, on SQLite and PostgreSQL: a page of rollouts is newest first with
ties broken by id (a cursor between two rollouts created at the same instant loses neither), and the check that
refuses a stale rollback finds the later rollout that moved a device with one query, naming at most 20 devices."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.db.rollout_repository import RolloutRepository
from control_plane.domain.paging import parse_time_cursor, time_cursor
from control_plane.domain.rollout_progress import RolloutState
from tests.unit.control_plane.test_rollout_incremental import T0, started
from tests.unit.control_plane.test_rollout_pass_cost import BUILD, VERSION

pytestmark = pytest.mark.integration


@pytest.fixture
def rollouts(database_url: str) -> Iterator[RolloutRepository]:
    engine: Engine = make_engine(database_url)
    migrate(engine)
    RegistryRepository(engine).add_version(VERSION)
    BuildRepository(engine).insert_build(BUILD)
    yield RolloutRepository(engine)
    engine.dispose()


def rollout(rollout_id: str, at_s: float, devices: range) -> RolloutState:
    """A rollout created `at_s` after T0 holding devices d{n:05} for n in `devices`."""
    state = started(max(devices) + 1)
    tracks = tuple(replace(t, build_id=BUILD.id) for t in state.devices if int(t.device_id[1:]) in devices)
    return replace(state, id=rollout_id, devices=tracks, created_at=T0 + timedelta(seconds=at_s))


def test_a_page_of_rollouts_is_newest_first_and_a_cursor_between_equal_times_loses_none(
    rollouts: RolloutRepository,
) -> None:
    for rollout_id, at_s in [("a", 0), ("b", 0), ("c", 1), ("d", -1)]:
        rollouts.save(rollout(rollout_id, at_s, range(2)))

    first = rollouts.page_summaries(None, 2)
    assert [r.id for r in first] == ["c", "b"]
    assert all(r.devices == () for r in first)  # summaries: counts, no tracks
    after = parse_time_cursor(time_cursor(first[-1].created_at, first[-1].id))
    assert [r.id for r in rollouts.page_summaries(after, 10)] == ["a", "d"]


def test_the_later_rollout_that_moved_a_device_is_found_and_named_with_at_most_20_devices(
    rollouts: RolloutRepository,
) -> None:
    rollouts.save(rollout("older", -1, range(0, 50)))
    rollouts.save(rollout("mine", 0, range(0, 40)))
    rollouts.save(rollout("later", 1, range(10, 60)))

    mine = rollouts.summary("mine")
    assert mine is not None
    moved = rollouts.moved_since("mine", mine.created_at)
    assert moved is not None
    other, devices = moved
    assert other == "later" and devices == [f"d{n:05}" for n in range(10, 30)]
    later = rollouts.summary("later")
    assert later is not None and rollouts.moved_since("later", later.created_at) is None


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("no-bar", id="no-separator"),
        pytest.param("2026-13-01T00:00:00|x", id="no-such-month"),
        pytest.param("2026-01-01T00:00:00|", id="no-key"),
    ],
)
def test_a_cursor_this_server_did_not_give_out_is_refused(cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor is not one this server gave out"):
        parse_time_cursor(cursor)
