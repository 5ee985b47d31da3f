"""The rollout planner's small pure parts on their own: a step's telemetry summary and why it trips a gate, how many
devices may be in progress at once, and which operator commands each phase accepts.

The planner's transitions through them are tested in test_rollout_plan.py; here each rule is one table row.
"""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.domain.rollout_gates import TelemetrySummary, summarise, telemetry_trip
from control_plane.domain.rollout_progress import DeviceView, Operator, RolloutPhase, TelemetryWindow, allowed_commands
from control_plane.domain.rollout_spec import GateSpec, RolloutRequest
from control_plane.domain.rollout_steps import max_unavailable


def view(new: TelemetryWindow | None, old: TelemetryWindow | None = None) -> DeviceView:
    return DeviceView(online=True, reported=None, new_telemetry=new, old_telemetry=old)


@pytest.mark.parametrize(
    ("fleet", "ids", "expected"),
    [
        pytest.param({}, ["d1"], TelemetrySummary(0, 0, None, None), id="nothing-reported"),
        pytest.param({"d1": view(None)}, ["d1"], TelemetrySummary(0, 0, None, None), id="no-window-yet"),
        pytest.param(
            {"d1": view(TelemetryWindow(100, 2, 40.0)), "d2": view(TelemetryWindow(50, 1, 60.0))},
            ["d1", "d2"],
            TelemetrySummary(150, 3, 60.0, None),
            id="sums-requests-worst-p99",
        ),
        pytest.param(
            {"d1": view(TelemetryWindow(10, 0, 30.0), TelemetryWindow(10, 0, 20.0))},
            ["d1"],
            TelemetrySummary(10, 0, 30.0, 1.5),
            id="ratio-to-the-replaced-version",
        ),
        pytest.param(
            {"d1": view(TelemetryWindow(10, 0, 30.0), TelemetryWindow(10, 0, None))},
            ["d1"],
            TelemetrySummary(10, 0, 30.0, None),
            id="no-ratio-without-an-old-p99",
        ),
        pytest.param(
            {"d1": view(TelemetryWindow(10, 0, 30.0)), "d9": view(TelemetryWindow(99, 99, 999.0))},
            ["d1"],
            TelemetrySummary(10, 0, 30.0, None),
            id="only-the-step's-devices",
        ),
    ],
)
def test_summarise(fleet: dict[str, DeviceView], ids: list[str], expected: TelemetrySummary) -> None:
    assert summarise(fleet, ids) == expected


@pytest.mark.parametrize(
    ("gate", "summary", "expected"),
    [
        pytest.param({}, TelemetrySummary(100, 50, 900.0, 9.0), None, id="no-limits"),
        pytest.param(
            {"max_error_rate": 0.01},
            TelemetrySummary(100, 2, None, None),
            "error rate 0.02 over 0.01 (2/100)",
            id="error-rate",
        ),
        pytest.param({"max_error_rate": 0.02}, TelemetrySummary(100, 2, None, None), None, id="error-rate-at-limit"),
        pytest.param({"max_p99_ms": 50}, TelemetrySummary(10, 0, 75.0, None), "p99 75 ms over 50 ms", id="p99"),
        pytest.param(
            {"max_p99_ratio": 1.2},
            TelemetrySummary(10, 0, 30.0, 1.5),
            "p99 1.5x the previous version's, over 1.2x",
            id="p99-ratio",
        ),
        pytest.param(
            {"max_error_rate": 0.01, "max_p99_ms": 50},
            TelemetrySummary(100, 5, 75.0, None),
            "error rate 0.05 over 0.01 (5/100)",
            id="error-rate-named-first",
        ),
        pytest.param({"max_error_rate": 0.01}, TelemetrySummary(0, 0, None, None), None, id="no-requests"),
    ],
)
def test_telemetry_trip(gate: dict[str, Any], summary: TelemetrySummary, expected: str | None) -> None:
    assert telemetry_trip(GateSpec.model_validate(gate), summary) == expected


@pytest.mark.parametrize(
    ("request_kw", "total", "expected"),
    [
        pytest.param({}, 40, 40, id="all-at-once-all"),
        pytest.param({}, 0, 1, id="all-at-once-empty"),
        pytest.param({"strategy": {"type": "canary", "canary": {"count": 1}}}, 5, 1, id="staged-at-least-one"),
        pytest.param({"strategy": {"type": "canary", "canary": {"count": 1}}}, 41, 5, id="staged-ten-percent-up"),
        pytest.param({"max_unavailable": {"count": 3}}, 40, 3, id="asked-count"),
        pytest.param({"max_unavailable": {"percent": 1}}, 40, 1, id="asked-percent-at-least-one"),
    ],
)
def test_max_unavailable(request_kw: dict[str, Any], total: int, expected: int) -> None:
    request = RolloutRequest.model_validate({"model": "m", "version": 2, **request_kw})
    assert max_unavailable(request, total) == expected


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        pytest.param(RolloutPhase.IN_PROGRESS, {Operator.PAUSE, Operator.ABORT, Operator.ROLLBACK}, id="in-progress"),
        pytest.param(RolloutPhase.PAUSED, {Operator.RESUME, Operator.ABORT, Operator.ROLLBACK}, id="paused"),
        pytest.param(RolloutPhase.SUCCEEDED, {Operator.ROLLBACK}, id="succeeded"),
        pytest.param(RolloutPhase.ROLLING_BACK, set(), id="rolling-back"),
        pytest.param(RolloutPhase.ABORTED, set(), id="aborted"),
        pytest.param(RolloutPhase.ROLLED_BACK, set(), id="rolled-back"),
    ],
)
def test_allowed_commands(phase: RolloutPhase, expected: set[Operator]) -> None:
    assert allowed_commands(phase) == expected
