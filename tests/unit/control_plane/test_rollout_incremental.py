"""The planner's cost follows what changed: after K devices report, a pass observes and changes K tracks (what the
executor writes) whatever the fleet size, and its counts per step match a full recount."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from control_plane.domain.rollout_notes import named_some
from control_plane.domain.rollout_plan import new_rollout, next_attention, plan, with_generations
from control_plane.domain.rollout_progress import (
    DeviceStatus,
    DeviceTrack,
    DeviceView,
    Publish,
    RolloutState,
    settled,
)
from control_plane.domain.rollout_spec import RolloutRequest
from edge_agent.protocol import HardwareFacts, ModelHealth, ModelStatus, ReportedState

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def started(n: int, **spec: Any) -> RolloutState:
    request = RolloutRequest.model_validate({"model": "m", "version": 2, **spec})
    tracks = [DeviceTrack(f"d{i:05}", "", DeviceStatus.WAITING, None, None, None, None) for i in range(n)]
    state = settled(new_rollout("r1", request, tracks, lambda _d: {}, T0))
    state, actions = plan(state, {}, T0, changed=frozenset())
    published = [a.device_id for a in actions if isinstance(a, Publish)]
    return settled(with_generations(state, {d: 7 for d in published}))


def serving(device_id: str) -> DeviceView:
    model = ModelStatus(name="m", version=2, build_id="b", active_slot="a", provider="cpu", health=ModelHealth.SERVING)
    reported = ReportedState(
        device_id=device_id,
        agent_version="x",
        applied_generation=7,
        models=[model],
        hardware=HardwareFacts(gpu_class="c", arch="x"),
    )
    return DeviceView(online=True, reported=reported)


@pytest.mark.parametrize("fleet", [pytest.param(1_000, id="1k-devices"), pytest.param(10_000, id="10k-devices")])
def test_a_pass_after_k_reports_touches_k_tracks(fleet: int) -> None:
    state = started(fleet)
    changed = [f"d{i:05}" for i in range(0, 50)]
    new, actions = plan(state, {d: serving(d) for d in changed}, T0 + timedelta(seconds=5), changed=frozenset(changed))
    assert sorted(new.touched) == changed
    assert new.count([DeviceStatus.ACTIVATED]) == 50
    assert new.count([DeviceStatus.IN_PROGRESS]) == fleet - 50
    recount = replace(new, devices=tuple(new.devices))  # a fresh tuple: counts derived again from the tracks
    assert recount.step_counts("all") == new.step_counts("all")
    assert len(actions) == 50  # one status note per activated device, nothing else


def test_a_deadline_is_found_without_a_report_and_says_when() -> None:
    state = started(10, device_deadline_s=60)
    assert next_attention(state) == T0 + timedelta(seconds=60)
    early, _ = plan(state, {}, T0 + timedelta(seconds=59), changed=frozenset())
    assert early.count([DeviceStatus.TIMED_OUT]) == 0
    late, _ = plan(state, {}, T0 + timedelta(seconds=60), changed=frozenset())
    assert "10 of 10 device(s) failed or timed out" in (late.reason or "")  # the gate saw them, then rolled back


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(3, "d0; d1; d2", id="few-all-named"),
        pytest.param(25, "; ".join(f"d{i}" for i in range(20)) + "; and 5 more", id="many-bounded"),
    ],
)
def test_a_reason_names_at_most_twenty_devices(names: int, expected: str) -> None:
    assert named_some([f"d{i}" for i in range(names)]) == expected
