"""`edgectl rollout watch` rendering and SSE parsing from recorded event and rollout data (no network)."""

from __future__ import annotations

import pytest
from rich.console import Console

from control_plane.cli.commands.rollout_watch import SseEvent, parse_sse
from control_plane.cli.watch_view import WatchExit, WatchModel, apply_event, apply_rollout, final_line, render

EVENTS = [
    {"id": 1, "kind": "created", "message": "rollout of lin v2 to 3 device(s)", "data": {}},
    {"id": 2, "kind": "step_started", "step": "canary", "message": "canary: 1 device(s)", "data": {}},
    {"id": 3, "kind": "device_status", "device_id": "dev-1", "step": "canary", "message": "dev-1 activated",
     "data": {"status": "activated"}},
    {"id": 4, "kind": "gate_failed", "step": "canary", "message": "p99 41 ms over 20 ms", "data": {}},
    {"id": 5, "kind": "rolling_back", "message": "gate failed on canary: p99 41 ms over 20 ms", "data": {}},
    {"id": 6, "kind": "restored", "device_id": "dev-1", "step": "canary", "message": "dev-1 back on v1", "data": {}},
    {"id": 7, "kind": "phase", "message": "rolled back: gate failed on canary", "data": {"phase": "rolled_back"}},
]  # fmt: skip

ROLLOUT = {
    "id": "r1",
    "model": "lin",
    "version": 2,
    "phase": "in_progress",
    "current_step": "canary",
    "steps": [{"name": "canary", "gate": {"verdict": "pending"}}, {"name": "wave-1"}],
    "devices": [
        {"device_id": "dev-1", "step": "canary", "status": "in_progress", "reason": None},
        {"device_id": "dev-2", "step": "wave-1", "status": "waiting", "reason": None},
    ],
}


def text_of(model: WatchModel) -> str:
    console = Console(width=160, record=True)
    console.print(render(model))
    return console.export_text()


def test_events_drive_steps_gates_devices_and_the_final_phase():
    model = WatchModel("r1")
    apply_rollout(model, ROLLOUT)
    for event in EVENTS:
        apply_event(model, event)

    shown = text_of(model)
    assert "rollout r1  lin v2  phase rolled_back  step canary" in shown
    assert "reason: rolled back: gate failed on canary" in shown
    assert "gate canary: failed: p99 41 ms over 20 ms" in shown
    assert "dev-1" in shown and "restored" in shown and "dev-1 back on v1" in shown
    assert "wave-1" in shown and "waiting" in shown
    assert model.final and model.exit_code() is WatchExit.FAILED and model.last_event_id == 7
    assert final_line(model) == "rollout r1 rolled_back: rolled back: gate failed on canary"


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        pytest.param("succeeded", WatchExit.SUCCEEDED, id="succeeded"),
        pytest.param("aborted", WatchExit.FAILED, id="aborted"),
        pytest.param("rolled_back", WatchExit.FAILED, id="rolled-back"),
    ],
)
def test_exit_code_of_each_final_phase(phase, code):
    model = WatchModel("r1")
    apply_event(model, {"id": 9, "kind": "phase", "message": phase, "data": {"phase": phase}})
    assert model.final and model.exit_code() is code


@pytest.mark.parametrize("phase", ["in_progress", "paused", "rolling_back"])
def test_open_phases_are_not_final(phase):
    model = WatchModel("r1")
    apply_rollout(model, {**ROLLOUT, "phase": phase})
    assert not model.final


def test_the_rollout_json_wins_over_what_events_said():
    model = WatchModel("r1")
    apply_event(model, EVENTS[2])
    apply_rollout(model, {**ROLLOUT, "devices": [{"device_id": "dev-1", "status": "failed", "reason": "self-test"}]})
    row = model.devices["dev-1"]
    assert (row.step, row.status, row.reason) == ("canary", "failed", "self-test")
    assert model.gates["canary"] == "pending"


def test_parse_sse_blocks_comments_and_multiline_data():
    lines = [
        "id: 1", "event: created", 'data: {"a": 1}', "",
        ": heartbeat", "",
        "id: 2", "event: phase", "data: line1", "data: line2", "",
        "data: no id", "",
    ]  # fmt: skip
    assert list(parse_sse(lines)) == [
        SseEvent(1, "created", '{"a": 1}'),
        SseEvent(2, "phase", "line1\nline2"),
        SseEvent(None, "message", "no id"),
    ]
