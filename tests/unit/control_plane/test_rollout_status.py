"""Per-device rollout status and rollout phase, derived purely from reported state (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from control_plane.domain.rollouts import (
    DeviceRolloutStatus,
    RolloutPhase,
    derive_device_status,
    derive_phase,
)
from edge_agent.protocol import (
    ApplyOutcome,
    ApplyPhase,
    EventStep,
    HardwareFacts,
    ModelHealth,
    ModelStatus,
    ReportedState,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
S = DeviceRolloutStatus


def report(
    applied: int,
    models: tuple[tuple[str, int, ModelHealth], ...] = (),
    last: tuple[int, ApplyPhase, str | None] | None = None,
) -> ReportedState:
    return ReportedState(
        device_id="dev-1",
        agent_version="0.1.0",
        applied_generation=applied,
        last_apply=None
        if last is None
        else ApplyOutcome(generation=last[0], phase=last[1], step=EventStep.SELF_TEST_FAILED, reason=last[2], at=NOW),
        models=[
            ModelStatus(name=n, version=v, build_id="b", active_slot="a", provider="CPUExecutionProvider", health=h)
            for n, v, h in models
        ],
        hardware=HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64"),
    )


SERVING_V2 = (("m", 2, ModelHealth.SERVING),)


@pytest.mark.parametrize(
    ("current", "reported", "published", "expected", "reason"),
    [
        pytest.param(S.PENDING, None, False, S.PENDING, None, id="not-published-no-report"),
        pytest.param(S.PENDING, None, True, S.IN_PROGRESS, None, id="published-no-report"),
        pytest.param(S.IN_PROGRESS, report(4, SERVING_V2), True, S.IN_PROGRESS, None, id="old-generation-applied"),
        pytest.param(S.IN_PROGRESS, report(5, SERVING_V2), True, S.ACTIVATED, None, id="activated"),
        pytest.param(S.IN_PROGRESS, report(7, SERVING_V2), True, S.ACTIVATED, None, id="activated-later-generation"),
        pytest.param(
            S.IN_PROGRESS, report(5, (("m", 1, ModelHealth.SERVING),)), True, S.IN_PROGRESS, None, id="other-version"
        ),
        pytest.param(
            S.IN_PROGRESS, report(5, (("m", 2, ModelHealth.FAILED),)), True, S.IN_PROGRESS, None, id="not-serving"
        ),
        pytest.param(
            S.IN_PROGRESS,
            report(4, (("m", 1, ModelHealth.SERVING),), (5, ApplyPhase.FAILED, "self-test: Y off by 3.0")),
            True,
            S.FAILED,
            "self-test: Y off by 3.0",
            id="failed-this-generation",
        ),
        pytest.param(
            S.IN_PROGRESS,
            report(4, (), (4, ApplyPhase.FAILED, "older failure")),
            True,
            S.IN_PROGRESS,
            None,
            id="failure-of-another-generation",
        ),
        pytest.param(
            S.IN_PROGRESS,
            report(4, (), (5, ApplyPhase.IN_PROGRESS, None)),
            True,
            S.IN_PROGRESS,
            None,
            id="apply-in-progress",
        ),
        pytest.param(S.ACTIVATED, report(6, ()), True, S.ACTIVATED, None, id="activated-is-sticky"),
        pytest.param(S.FAILED, report(5, SERVING_V2), True, S.FAILED, None, id="failed-is-sticky"),
    ],
)
def test_device_status(
    current: DeviceRolloutStatus,
    reported: ReportedState | None,
    published: bool,
    expected: DeviceRolloutStatus,
    reason: str | None,
) -> None:
    status, why = derive_device_status(current, 5, "m", 2, reported, published)
    assert status is expected
    assert why == reason


@pytest.mark.parametrize(
    ("statuses", "phase"),
    [
        pytest.param([S.ACTIVATED, S.ACTIVATED], RolloutPhase.SUCCEEDED, id="all-activated"),
        pytest.param([S.ACTIVATED, S.IN_PROGRESS], RolloutPhase.IN_PROGRESS, id="one-still-moving"),
        pytest.param([S.ACTIVATED, S.FAILED], RolloutPhase.FAILED, id="all-terminal-one-failed"),
        pytest.param([S.FAILED, S.PENDING], RolloutPhase.IN_PROGRESS, id="failed-but-not-all-terminal"),
        pytest.param([S.PENDING], RolloutPhase.IN_PROGRESS, id="pending"),
        pytest.param([], RolloutPhase.IN_PROGRESS, id="empty"),
    ],
)
def test_rollout_phase(statuses: list[DeviceRolloutStatus], phase: RolloutPhase) -> None:
    assert derive_phase(statuses) is phase
