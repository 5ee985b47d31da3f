"""Selectors evaluated by the database (decision 0013), on SQLite and PostgreSQL: a page of devices is found by
index and costs the page; labels stay in step with what enrollment, relabelling and forgetting wrote; migration
0011 gives the devices of an older database their label rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, text

from control_plane.adapters.db import fleet_repository
from control_plane.adapters.db.engine import MIGRATIONS_DIR, make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.domain.selectors import Selector, parse_selector
from control_plane.services.fleet import FleetService
from edge_agent.protocol import Topics
from edge_agent.protocol.vocabulary import Channel

pytestmark = pytest.mark.integration
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    migrate(made)
    yield made
    made.dispose()


def enroll(fleet: FleetRepository, device_id: str, labels: dict[str, str], gpu_class: str | None = "cpu") -> None:
    fleet.enroll(device_id, Channel.MQTT, labels, gpu_class, None, None, NOW)


def ids(fleet: FleetRepository, selector: str | None, after: str | None = None, limit: int = 100) -> list[str]:
    return [d.id for d in fleet.page_devices(parse_selector(selector), after, limit)]


@pytest.fixture
def fleet(engine: Engine) -> FleetRepository:
    """Six devices over two sites, two lines and two GPU classes."""
    repository = FleetRepository(engine)
    for n in range(6):
        labels = {"site": "a" if n % 2 == 0 else "b", "line": str(n % 3)}
        enroll(repository, f"dev-{n}", labels, "orin" if n < 3 else "cpu")
    return repository


@pytest.mark.parametrize(
    ("selector", "after", "limit", "expected"),
    [
        pytest.param(None, None, 4, ["dev-0", "dev-1", "dev-2", "dev-3"], id="first-page"),
        pytest.param(None, "dev-3", 4, ["dev-4", "dev-5"], id="last-page"),
        pytest.param(None, "dev-1", 2, ["dev-2", "dev-3"], id="page-boundary"),
        pytest.param(None, "dev-5", 4, [], id="cursor-at-the-end"),
        pytest.param(None, "zzz", 4, [], id="cursor-past-the-end"),
        pytest.param(None, "dev-2a", 4, ["dev-3", "dev-4", "dev-5"], id="cursor-of-no-device"),
        pytest.param("site=a", None, 100, ["dev-0", "dev-2", "dev-4"], id="one-label"),
        pytest.param("site=a,line=0", None, 100, ["dev-0"], id="two-labels"),
        pytest.param("site=a,line=1,gpu_class=cpu", None, 100, ["dev-4"], id="two-labels-and-gpu-class"),
        pytest.param("site=a,line=1,gpu_class=orin", None, 100, [], id="gpu-class-excludes"),
        pytest.param("gpu_class=orin", "dev-0", 1, ["dev-1"], id="gpu-class-paged"),
        pytest.param("site=a", "dev-0", 1, ["dev-2"], id="label-paged"),
        pytest.param("rack=1", None, 100, [], id="unknown-key"),
        pytest.param("site=c", None, 100, [], id="unknown-value"),
    ],
)
def test_a_page_holds_the_matching_devices_after_the_cursor(
    fleet: FleetRepository, selector: str | None, after: str | None, limit: int, expected: list[str]
) -> None:
    assert ids(fleet, selector, after, limit) == expected


def test_select_devices_reads_every_match_and_only_those(fleet: FleetRepository) -> None:
    assert [d.id for d in fleet.select_devices(parse_selector("line=0"))] == ["dev-0", "dev-3"]
    assert [d.id for d in fleet.select_devices(Selector())] == [f"dev-{n}" for n in range(6)]


def test_labels_follow_enrollment_relabelling_and_forgetting(fleet: FleetRepository) -> None:
    enroll(fleet, "dev-0", {"site": "b", "rack": "7"})  # enrolled again: its labels are these now
    assert ids(fleet, "site=a") == ["dev-2", "dev-4"]
    assert ids(fleet, "rack=7") == ["dev-0"]
    assert ids(fleet, "line=0") == ["dev-3"]
    fleet.set_labels("dev-2", {"line": "0"})
    assert ids(fleet, "site=a") == ["dev-4"]
    assert ids(fleet, "line=0") == ["dev-2", "dev-3"]
    fleet.remove_device("dev-3")
    assert ids(fleet, "line=0") == ["dev-2"]
    enroll(fleet, "dev-3", {})  # forgotten, then enrolled again without labels: no old label matches
    assert ids(fleet, "line=0") == ["dev-2"]
    assert fleet.set_labels("nobody", {"site": "a"}) is None
    assert ids(fleet, "site=a") == ["dev-4"]


def test_a_page_builds_only_the_devices_it_shows(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 devices, a tenth of them matching: a page of 10 turns 10 rows into devices, and the one more it reads
    to know whether a next page exists - never the fleet."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO devices (id, created_at, labels, channel, desired_generation)"
                " VALUES (:id, :t, :labels, 'mqtt', 0)"
            ),
            [{"id": f"d{n:04}", "t": NOW, "labels": "{}"} for n in range(1000)],
        )
    repository = FleetRepository(engine)
    for n in range(0, 1000, 10):
        repository.set_labels(f"d{n:04}", {"site": "x"})
    built: list[str] = []
    real = fleet_repository.device_from_row

    def counting(row: Any) -> Any:
        built.append(row.id)
        return real(row)

    monkeypatch.setattr(fleet_repository, "device_from_row", counting)
    service = FleetService(repository, Topics(), lambda: NOW, timedelta(minutes=1))
    page = service.page_devices("site=x", "d0500", 10)
    assert [v.device.id for v in page.items] == [f"d{n:04}" for n in range(510, 610, 10)]
    assert page.next_cursor == "d0600"
    assert built == [f"d{n:04}" for n in range(510, 620, 10)]
    built.clear()
    assert service.page_devices(None, "d0989", 10).next_cursor is None
    assert built == [f"d{n:04}" for n in range(990, 1000)]


def alembic_config(engine: Engine, connection: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def test_0011_gives_existing_devices_their_label_rows_and_downgrades(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine, "0010")
    with engine.begin() as conn:
        for device_id, labels, gpu_class in (
            ("old-1", '{"site": "a", "line": "1"}', "orin"),
            ("old-2", '{"site": "a"}', "cpu"),
            ("old-3", "{}", None),
        ):
            conn.execute(
                text(
                    "INSERT INTO devices (id, created_at, gpu_class, labels, channel, desired_generation)"
                    " VALUES (:id, :t, :g, :labels, 'mqtt', 0)"
                ),
                {"id": device_id, "t": NOW, "g": gpu_class, "labels": labels},
            )
    migrate(engine)

    fleet = FleetRepository(engine)
    assert ids(fleet, "site=a") == ["old-1", "old-2"]
    assert ids(fleet, "site=a,line=1,gpu_class=orin") == ["old-1"]
    assert ids(fleet, "gpu_class=cpu") == ["old-2"]
    with engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(engine, conn), "0010")
    assert "device_labels" not in inspect(engine).get_table_names()
    assert "ix_devices_gpu_class" not in {i["name"] for i in inspect(engine).get_indexes("devices")}
    engine.dispose()
