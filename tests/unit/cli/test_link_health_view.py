"""The "tunnel" section of `edgectl devices show`: the device's link as it reported it (connected since, round
trip, bytes each way, reconnects, last error), said to be its word, flagged when the device is offline, and absent
for a device without a tunnel."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console, RenderableType

from control_plane.cli import views
from control_plane.cli.views.link_health import size

TUNNEL = {
    "connected": True,
    "connected_since": "2026-03-01T12:00:00Z",
    "rtt_ms": 12.345,
    "bytes_in": 1_234_567,
    "bytes_out": 512,
    "reconnects": 3,
    "last_error": None,
    "exposed": ["kserve", "ssh"],
}


def text(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(renderable)
    out: str = console.file.getvalue()  # type: ignore[attr-defined]
    return out


def device(presence: str = "online", **tunnel: Any) -> dict[str, Any]:
    return {"id": "dev-1", "presence": presence, "reported": {"agent_version": "1", "tunnel": TUNNEL | tunnel}}


def test_devices_show_prints_the_link_as_the_device_reported_it() -> None:
    shown = text(views.device_view(device()))
    assert "tunnel (as the device reported it)" in shown
    for fragment in ("yes, since 2026-03-01T12:00:00Z", "12.3 ms", "1.2 MB / 512 B", "3", "kserve, ssh"):
        assert fragment in shown
    assert "'connected'" not in shown  # not dumped again as a raw dictionary in the "reported" record


def test_a_dropped_link_of_an_offline_device_shows_its_last_error_as_last_known() -> None:
    shown = text(views.device_view(device("offline", connected=False, connected_since=None, rtt_ms=None,
                                          last_error="the gateway closed the connection")))  # fmt: skip
    assert "the device is offline now" in shown
    assert "the gateway closed the connection" in shown and "connected" in shown and "no" in shown


def test_a_device_without_a_tunnel_has_no_tunnel_section() -> None:
    assert "tunnel" not in text(views.device_view({"id": "dev-2", "reported": {"agent_version": "1"}}))


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (12_345_678, "12.3 MB"), (None, "-"), ("x", "-"), (True, "-")],
)
def test_byte_counts_for_people(value: Any, shown: str) -> None:
    assert size(value) == shown
