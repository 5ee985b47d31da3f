"""What `rollout show`, `rollout watch`, `rollout list` and `devices show` print of a staged rollout and a device:
each step's devices (named when few), the bake countdown between the server's times, the gate's values against
their thresholds, the verdicts, what the rollout waits for, restored counts, and the device's telemetry. The
answers are built by the API's own schema (RolloutOut) from domain values, then rendered as the CLI does."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console, RenderableType

from control_plane.api.schemas.rollouts import RolloutOut
from control_plane.cli import views
from control_plane.cli.watch_view import WatchModel, apply_rollout, render
from control_plane.domain.fleet import Presence
from control_plane.domain.rollout_gates import GateReading
from control_plane.domain.rollout_plan import new_rollout
from control_plane.domain.rollout_progress import (
    DeviceStatus,
    DeviceTrack,
    GateVerdict,
    RolloutPhase,
    RolloutState,
    Verdict,
    with_tracks,
)
from control_plane.domain.rollout_spec import RolloutRequest
from control_plane.domain.step_states import Seen, in_flight, waits
from control_plane.services.rollouts import RolloutPage

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
GATES = {"min_requests": 200, "max_error_rate": 0.01, "max_p99_ratio": 1.5}


def staged(n: int = 4) -> RolloutState:
    request = RolloutRequest.model_validate(
        {
            "model": "demo",
            "version": 2,
            "strategy": {"type": "canary", "canary": {"count": 1}, "waves": [{"percent": 100}]},
            "bake_s": 120,
            "gates": GATES,
        }
    )
    tracks = [DeviceTrack(f"dev-{i}", "", DeviceStatus.WAITING, None, None, None, None) for i in range(n)]
    return new_rollout("r1", request, tracks, lambda _: {}, T0)


def baking_canary() -> RolloutState:
    state = staged()
    canary = state.track("dev-0")
    assert canary is not None
    state = with_tracks(state, [replace(canary, status=DeviceStatus.ACTIVATED, generation=3, published_at=T0)])
    return replace(state, step_started_at=T0, baked_since=T0 + timedelta(seconds=10))


def answer(page: RolloutPage | RolloutState) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RolloutOut.model_validate(page).model_dump_json())
    return data


def text(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=220, color_system=None)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


READINGS = (
    GateReading("failed", 0, 0, True, "max"),
    GateReading("requests", 150, 200, None, "min"),
    GateReading("error_rate", 0.02, 0.01, None, "max"),
)


def test_show_lists_the_steps_with_their_devices_bake_countdown_and_gate_values() -> None:
    state = baking_canary()
    page = RolloutPage(state, list(state.devices), None, T0 + timedelta(seconds=88), (), READINGS)
    shown = text(views.rollout_view(answer(page)))
    assert "canary" in shown and "wave-1" in shown and "baking" in shown
    assert "dev-0 (activated)" in shown  # a step of one device names it
    assert "42 s left" in shown  # baked since 10 s, bakes 120 s, the server says it is 88 s: 42 s left
    assert "failed 0 (need <= 0) ok" in shown
    assert "requests 150 (need >= 200) not yet" in shown
    assert "error rate 0.02 (need <= 0.01) not yet" in shown
    assert "requests >= 200, error rate <= 0.01, p99 ratio <= 1.5" in shown  # the next step's thresholds


def test_a_verdict_and_its_reason_are_shown_per_step() -> None:
    state = replace(baking_canary(), verdicts=(GateVerdict("canary", Verdict.PASSED, "1 device(s) activated", T0),))
    state = replace(state, step_index=1, baked_since=None)
    shown = text(views.rollout_view(answer(state)))
    assert "passed: 1 device(s) activated" in shown


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        pytest.param(Seen(Presence.OFFLINE, T0), "offline since 2026-03-02T12:00:00+00:00", id="offline"),
        pytest.param(Seen(Presence.ONLINE, T0), "online, installing", id="online"),
    ],
)
def test_show_says_which_devices_the_rollout_waits_for_and_why(seen: Seen, expected: str) -> None:
    state = staged()
    canary = state.track("dev-0")
    assert canary is not None
    state = with_tracks(state, [replace(canary, status=DeviceStatus.IN_PROGRESS, generation=3, published_at=T0)])
    waited = tuple(waits(state, in_flight(state), {"dev-0": seen}))
    shown = text(views.rollout_view(answer(RolloutPage(state, list(state.devices), None, T0, waited))))
    assert "waiting for" in shown and expected in shown and "2026-03-02T12:05:00" in shown  # until its deadline


def test_watch_renders_the_same_steps_and_waits_from_the_rollout_it_reads() -> None:
    state = baking_canary()
    model = WatchModel("r1")
    apply_rollout(model, answer(RolloutPage(state, list(state.devices), None, T0 + timedelta(seconds=100))))
    shown = text(render(model))
    assert "steps" in shown and "30 s left" in shown and "dev-0 (activated)" in shown


def test_list_shows_restored_counts_and_other_statuses_some_device_has() -> None:
    rows = [{"id": "r1", "phase": "rolled_back", "counts": {"activated": 0, "restored": 3, "restore_failed": 1}}]
    shown = text(views.rollouts_view(rows))
    assert "restored=3" in shown and "restore_failed=1" in shown and "activated=0" in shown


def test_a_rollout_answer_from_a_command_has_no_live_parts_and_still_renders() -> None:
    data = answer(replace(staged(), phase=RolloutPhase.IN_PROGRESS))
    assert data["as_of"] is None and data["waiting_for"] == []
    assert "steps" in text(views.rollout_view(data))


def test_devices_show_prints_the_latest_telemetry_windows() -> None:
    device = {
        "id": "dev-1",
        "presence": "online",
        "telemetry": [
            {"model": "demo", "version": 2, "at": "2026-03-02T12:00:10+00:00", "window_s": 10.0, "requests": 120,
             "errors": 1, "p50_ms": 1.25, "p99_ms": 4.5},
        ],
    }  # fmt: skip
    shown = text(views.device_view(device))
    assert "telemetry (newest first)" in shown and "demo v2" in shown and "120" in shown and "4.5" in shown
    assert "telemetry: none reported yet" in text(views.device_view({"id": "dev-2"}))
