"""Rows <-> domain values by field name (control_plane/adapters/db/convert.py): types come back as declared."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from control_plane.adapters.db.convert import from_row, to_row
from control_plane.adapters.db.tables import ApiTokenRow, EnrollmentTokenRow
from control_plane.domain.enrollment import EnrollmentToken
from control_plane.domain.identity import ApiToken, Role
from edge_agent.protocol import HardwareFacts
from edge_agent.protocol.vocabulary import Channel

NAIVE = datetime(2024, 1, 1, 12, 0)
AWARE = NAIVE.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Sample:
    channel: Channel
    preset: Channel | None = None
    at: datetime | None = None
    hardware: HardwareFacts | None = None
    labels: Any = None
    note: str = "default"


HW = {"gpu_class": "cpu-x86_64", "arch": "x86_64", "cpu_count": 2}


@pytest.mark.parametrize(
    ("row", "given", "expected"),
    [
        pytest.param({"channel": "mqtt"}, {}, Sample(Channel.MQTT), id="enum-by-value"),
        pytest.param({"channel": "mqtt", "preset": "ansible"}, {}, Sample(Channel.MQTT, Channel.ANSIBLE), id="opt"),
        pytest.param({"channel": "mqtt", "preset": None}, {}, Sample(Channel.MQTT), id="none-stays-none"),
        pytest.param({"channel": "mqtt", "at": NAIVE}, {}, Sample(Channel.MQTT, at=AWARE), id="naive-is-utc"),
        pytest.param(
            {"channel": "mqtt", "at": NAIVE.replace(tzinfo=timezone(timedelta(hours=2)))},
            {},
            Sample(Channel.MQTT, at=AWARE - timedelta(hours=2)),
            id="aware-to-utc",
        ),
        pytest.param(
            {"channel": "mqtt", "hardware": HW},
            {},
            Sample(Channel.MQTT, hardware=HardwareFacts.model_validate(HW)),
            id="json-to-model",
        ),
        pytest.param({"channel": "mqtt", "hardware": {}}, {}, Sample(Channel.MQTT), id="empty-json-is-none"),
        pytest.param({"channel": "mqtt", "other": 1}, {}, Sample(Channel.MQTT), id="extra-column-ignored"),
        pytest.param({"channel": "mqtt", "note": "x"}, {"note": "y"}, Sample(Channel.MQTT, note="y"), id="given"),
        pytest.param({"channel": "mqtt", "labels": {"a": "b"}}, {}, Sample(Channel.MQTT, labels={"a": "b"}), id="dict"),
    ],
)
def test_from_row(row: dict[str, Any], given: dict[str, Any], expected: Sample) -> None:
    assert from_row(Sample, SimpleNamespace(**row), **given) == expected


def test_from_row_copies_json_objects() -> None:
    labels = {"a": "b"}
    read = from_row(Sample, SimpleNamespace(channel="mqtt", labels=labels))
    labels["a"] = "changed"
    assert read.labels == {"a": "b"}


def test_api_token_round_trip() -> None:
    token = ApiToken("t1", "ci", Role.OPERATOR, "d" * 64, AWARE, "admin", None, None, AWARE, device_id=None)
    row = to_row(ApiTokenRow, token)
    assert (row.role, row.created_at, row.digest) == ("operator", AWARE, "d" * 64)
    assert from_row(ApiToken, row) == token


def test_enrollment_token_round_trip_stores_plain_values() -> None:
    token = EnrollmentToken(
        "e1", "site", "d" * 64, AWARE, "admin", None, 3, 0, None, True, {"site": "a"}, Channel.ANSIBLE, None
    )
    row = to_row(EnrollmentTokenRow, token)
    assert type(row.channel) is str and row.channel == "ansible" and type(row.labels) is dict
    assert from_row(EnrollmentToken, row) == token
