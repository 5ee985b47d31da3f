"""The fleet gauges of `/metrics` come from one grouped COUNT: on SQLite and PostgreSQL alike, it gives each device
the presence `edgectl devices list` gives it (the domain's rule), and the phase and status counts answer on both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.rollout_repository import RolloutRepository
from control_plane.adapters.db.tables import DeviceRow
from control_plane.services.metrics import devices_by_presence

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)
OFFLINE_AFTER = timedelta(seconds=90)

DEVICES = [
    # id, GPU class, channel, status, last seen -> the presence the domain gives it
    ("a", "jetson-orin", "mqtt", "online", NOW - timedelta(days=1), "online"),  # the status topic wins
    ("b", "jetson-orin", "mqtt", "offline", NOW, "offline"),
    ("c", "jetson-orin", "mqtt", None, NOW - timedelta(seconds=5), "online"),
    ("d", "jetson-orin", "mqtt", None, NOW - timedelta(seconds=300), "offline"),
    ("e", None, "mqtt", None, None, "unknown"),
    ("f", None, "ansible", None, NOW - timedelta(days=2), "unknown"),
    ("g", None, "ansible", None, NOW - timedelta(seconds=5), "online"),
]


def test_one_grouped_count_gives_every_device_its_presence(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    rows = [
        {
            "id": device, "created_at": NOW, "gpu_class": gpu, "labels": {}, "channel": channel, "status": status,
            "last_seen": seen, "desired_generation": 0,
        }
        for device, gpu, channel, status, seen, _ in DEVICES
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(DeviceRow.__table__), rows)
    groups = FleetRepository(engine).presence_groups(NOW - OFFLINE_AFTER)
    counted = {key: n for key, n in devices_by_presence(groups, NOW, OFFLINE_AFTER).items() if n}
    expected: dict[tuple[str, str], int] = {}
    for _, gpu, _, _, _, presence in DEVICES:
        expected[(gpu or "none", presence)] = expected.get((gpu or "none", presence), 0) + 1
    assert counted == expected
    assert RolloutRepository(engine).count_by_phase() == {}
    assert BuildRepository(engine).count_by_status() == {}
    engine.dispose()
