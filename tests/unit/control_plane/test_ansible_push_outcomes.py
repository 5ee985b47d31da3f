"""Which deploy_model.yml host outcomes are delivery failures (the agent never answered for the generation) and
which are the agent's own answer, read by the rollout planner from the stored report."""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.domain.playbooks import HostResult, HostStatus
from control_plane.services.ansible_push import _undelivered

GEN = 7


def applied(generation: int) -> dict[str, Any]:
    return {"ok": True, "reported": {"applied_generation": generation, "last_apply": None}}


def refused_self_test() -> dict[str, Any]:
    last = {"generation": GEN, "phase": "failed", "reason": "self-test failed"}
    return {"ok": False, "reported": {"applied_generation": GEN - 1, "last_apply": last}}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param(HostResult("d", HostStatus.CHANGED, applied(GEN)), None, id="applied"),
        pytest.param(HostResult("d", HostStatus.OK, applied(GEN)), None, id="already-applied"),
        pytest.param(HostResult("d", HostStatus.FAILED, refused_self_test(), "self-test"), None, id="agent-failed-it"),
        pytest.param(
            HostResult("d", HostStatus.FAILED, {"ok": False, "reported": {"applied_generation": GEN - 1}}, "pins key"),
            "deploy_model.yml failed: pins key",
            id="agent-refused-before-the-journal",
        ),
        pytest.param(
            HostResult("d", HostStatus.UNREACHABLE, None, "ssh: connect to host 10.0.0.9 port 22: No route"),
            "unreachable: ssh: connect to host 10.0.0.9 port 22: No route",
            id="unreachable",
        ),
        pytest.param(
            HostResult("d", HostStatus.FAILED, None, "Could not find or access 'bundle/desired.json'"),
            "deploy_model.yml failed: Could not find or access 'bundle/desired.json'",
            id="copy-failed",
        ),
        pytest.param(
            HostResult("d", HostStatus.PENDING), "the run ended before it reached the host", id="run-ended-first"
        ),
        pytest.param(
            HostResult("d", HostStatus.OK), "deploy_model.yml returned no result for the host", id="ok-without-result"
        ),
        pytest.param(None, "the host was not in the run", id="missing-host"),
        pytest.param(
            HostResult("d", HostStatus.CHANGED, applied(GEN - 1)),
            None,
            id="succeeded-host-with-an-old-report-is-the-agents-answer",
        ),
    ],
)
def test_undelivered(host: HostResult | None, expected: str | None) -> None:
    assert _undelivered(host, GEN) == expected
