"""`edgectl rollout watch` against a real uvicorn server streaming SSE: exit codes, JSON lines, timeout.

The server is the SSE route with the in-memory rollout stand-in of test_rollout_events_sse.py (events are
appended while the command watches).
"""

from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from control_plane.cli.main import app
from control_plane.domain.rollout_progress import RolloutPhase
from tests.integration.control_plane.test_rollout_events_sse import RecordedRollouts, rollouts, url  # noqa: F401
from tests.support import wait_for

pytestmark = pytest.mark.integration


def run_watch(base: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--url", base, "rollout", "watch", "r1", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        pytest.param(RolloutPhase.SUCCEEDED, 0, id="succeeded"),
        pytest.param(RolloutPhase.ROLLED_BACK, 1, id="rolled-back"),
        pytest.param(RolloutPhase.ABORTED, 1, id="aborted"),
    ],
)
def test_watch_follows_until_the_final_phase_and_exits_with_its_code(url, rollouts: RecordedRollouts, phase, code):  # noqa: F811
    rollouts.add("created", "rollout of lin v2")
    result: dict[str, object] = {}
    watcher = threading.Thread(target=lambda: result.update(out=run_watch(url, "--timeout", "30")))
    watcher.start()
    rollouts.add("device_status", "dev-1 activated", device_id="dev-1", step="canary", status="activated")
    wait_for(lambda: len(rollouts.records) == 2, what="events added")
    rollouts.finish(phase)
    watcher.join(timeout=30)

    exit_code, output = result["out"]  # type: ignore[misc]
    assert exit_code == code, output
    assert f"rollout r1 {phase.value}" in output and "dev-1" in output


def test_watch_json_prints_each_event_once_as_a_json_line(url, rollouts: RecordedRollouts):  # noqa: F811
    for kind in ("created", "step_started", "published"):
        rollouts.add(kind, kind)
    rollouts.finish(RolloutPhase.SUCCEEDED)

    exit_code, output = run_watch(url, "--json")

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert exit_code == 0
    assert [(e["id"], e["kind"]) for e in lines] == [
        (1, "created"),
        (2, "step_started"),
        (3, "published"),
        (4, "phase"),
    ]


def test_watch_times_out_with_exit_3(url, rollouts: RecordedRollouts):  # noqa: F811
    rollouts.add("created", "created")
    exit_code, output = run_watch(url, "--timeout", "1")
    assert exit_code == 3 and "timed out after 1s" in output


def test_watch_an_unknown_rollout_exits_1_with_the_servers_reason(url):  # noqa: F811
    result = CliRunner().invoke(app, ["--url", url, "rollout", "watch", "nope"])
    assert result.exit_code == 1 and "does not exist" in result.output
