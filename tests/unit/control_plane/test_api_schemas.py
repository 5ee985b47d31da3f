"""Answers read from domain values (control_plane/api/schemas): derived fields, and values shown as stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from control_plane.api.schemas.base import Out, with_fields
from control_plane.api.schemas.devices import DeviceOut
from control_plane.api.schemas.rollouts import RolloutDeviceOut
from control_plane.domain.fleet import Device, DeviceView, Presence
from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.rollout_progress import DeviceStatus, DeviceTrack, PreviousModel
from edge_agent.protocol.vocabulary import Channel

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Value:
    a: int
    b: str


class Pair(Out):
    a: int
    b: str


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, Pair(a=1, b="x"), id="own-attributes"),
        pytest.param({"b": "given"}, Pair(a=1, b="given"), id="given-wins"),
    ],
)
def test_with_fields(fields: dict[str, object], expected: Pair) -> None:
    assert Pair.model_validate(with_fields(Value(1, "x"), **fields)) == expected


@pytest.mark.parametrize(
    ("previous", "expected"),
    [
        pytest.param(None, (None, None), id="model-new-on-device"),
        pytest.param(PreviousModel(3, "b-old"), (3, "b-old"), id="ran-before"),
    ],
)
def test_rollout_device_flattens_previous(previous: PreviousModel | None, expected: tuple[object, object]) -> None:
    track = DeviceTrack("d1", "canary", DeviceStatus.ACTIVATED, 2, T0, None, previous, "cpu", "b-new", T0)
    shown = RolloutDeviceOut.model_validate(track)
    assert (shown.previous_version, shown.previous_build_id) == expected
    assert (shown.device_id, shown.status, shown.build_id) == ("d1", DeviceStatus.ACTIVATED, "b-new")


def test_device_shows_a_connection_stored_under_an_older_pattern_and_the_channel_as_its_word() -> None:
    loose = AnsibleConnection(host="-not-valid-today", user="root")
    device = Device("d1", T0, channel=Channel.ANSIBLE, labels={"site": "a"}, ansible=loose)
    shown = DeviceOut.model_validate(DeviceView(device, Presence.UNKNOWN))
    body = shown.model_dump(mode="json")
    assert body["ansible"]["host"] == "-not-valid-today" and body["channel"] == "ansible"
    assert (body["presence"], body["labels"], body["telemetry"]) == ("unknown", {"site": "a"}, [])
