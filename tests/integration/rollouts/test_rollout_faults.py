"""Staged rollouts through the faults an operator meets: a version that fails its self-test on the canary, a version
whose latency breaks the gate under load, a control plane killed with SIGKILL mid-wave, a broker restart mid-rollout,
a device whose download is cut in the middle, and a device offline for part of the rollout.

Real Mosquitto, `edgectl server` as a process, three real agents as processes (tests/integration/rollouts/conftest.py).
Each test asserts what an operator sees: the rollout's phase and per-device status, the versions devices report,
and the versions inference answers carry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.rollouts.conftest import DEVICE_IDS, Fleet, bring_up, tear_down
from tests.integration.rollouts.fleet import (
    CuttableProxy,
    LoadGenerator,
    answered_version,
    consistent,
    device_status,
    devices,
    fleet_serves,
    rollout,
    served_version,
    serving_urls,
    wait_phase,
)
from tests.integration.rollouts.models import (
    inputs_only,
    linear,
    push_and_build,
    slow,
    upload_and_build,
    wide,
    wrong_reference_samples,
)
from tests.support import Mosquitto, free_port, wait_for

pytestmark = pytest.mark.integration

CANARY = "dev-3"  # the only device at site b: the canary is pinned to it
NOT_CANARY = ("dev-1", "dev-2")


def canary_then(waves: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "canary", "canary": {"count": 1, "labels": {"site": "b"}}, "waves": waves}


def converged_on(fleet: Fleet, version: int) -> None:
    """Every device serves `version`, says so in its report and has applied what it was told."""
    wait_for(
        lambda: (
            fleet_serves(fleet.api, fleet.model, version, DEVICE_IDS)
            and all(consistent(d) for d in devices(fleet.api).values())
        ),
        timeout=30,
        what=f"every device serving v{version} with its desired generation applied",
    )
    for device_id, url in serving_urls(fleet.api).items():
        assert answered_version(url, fleet.model) == version, device_id


def test_a_version_whose_reference_outputs_disagree_with_it_is_rejected_before_any_device_sees_it(
    fleet: Fleet,
) -> None:
    generations = {i: d["desired_generation"] for i, d in devices(fleet.api).items()}
    bad = upload_and_build(fleet.api, fleet.model, linear(2), wrong_reference_samples())
    assert bad["status"] == "rejected" and bad["parity"]["measured_by"] == "control-plane", bad
    assert bad["manifest_signature"] is None
    refused = fleet.api.post(
        "/v1/rollouts", json={"model": fleet.model, "version": bad["version"], "selector": {"labels": {}}}
    )
    assert refused.status_code == 409, refused.text
    assert {i: d["desired_generation"] for i, d in devices(fleet.api).items()} == generations


def test_a_canary_whose_credential_was_revoked_fails_and_the_rollout_aborts_before_wave_1_serving_v1(
    fleet: Fleet,
) -> None:
    """The canary's device token is revoked: its download is refused (401), the canary fails at once, the rollout
    aborts before wave 1 and the canary keeps serving v1 from its active slot."""
    tokens = fleet.api.get("/v1/tokens").json()
    canary_token = next(t for t in tokens if t["device_id"] == CANARY and t["revoked_at"] is None)
    assert fleet.api.post(f"/v1/tokens/{canary_token['id']}/revoke").status_code == 200
    bad = push_and_build(fleet.api, fleet.model, linear(2), inputs_only())
    generations = {i: d["desired_generation"] for i, d in devices(fleet.api).items()}

    rollout_id = fleet.create(bad["version"], canary_then([{"percent": 100}]), bake_s=1)
    final = wait_phase(fleet.api, rollout_id, ("rolled_back", "aborted", "succeeded"), 60, fleet.logs)

    assert final["phase"] == "rolled_back", final
    statuses = device_status(final)
    assert statuses[CANARY] == "restored", statuses
    assert all(statuses[d] == "waiting" for d in NOT_CANARY), statuses
    after = devices(fleet.api)
    for device_id in NOT_CANARY:  # wave 1 never started: nothing was published to them
        assert after[device_id]["desired_generation"] == generations[device_id], after[device_id]
    history = fleet.api.get(f"/v1/devices/{CANARY}/events", params={"limit": 50}).json()
    failed = [e for e in history if e["step"] == "error" and "401" in (e.get("reason") or "")]
    assert failed, f"the canary never reported its refused download: {history}"
    converged_on(fleet, 1)


def test_a_version_breaking_the_latency_gate_under_load_rolls_the_fleet_back_without_a_failed_request(
    fleet: Fleet,
) -> None:
    heavy = push_and_build(fleet.api, fleet.model, slow(), inputs_only())
    load = LoadGenerator(list(serving_urls(fleet.api).values()), fleet.model, threads=1, rows=8).start()
    try:
        wait_for(lambda: len(load.answers) >= 30, what="load flowing on v1")
        gate = {"min_requests": 20, "max_p99_ratio": 3.0, "max_p99_ms": 5.0, "on_fail": "abort"}
        # The canary passes on its install alone; the latency gate judges wave 1, so the rollback is fleet-wide.
        rollout_id = fleet.create(
            heavy["version"], canary_then([{"percent": 100}]), bake_s=2, gates=gate, step_gates={"canary": {}}
        )
        final = wait_phase(fleet.api, rollout_id, ("rolled_back", "aborted", "succeeded"), 90, fleet.logs)
        assert final["phase"] == "rolled_back", final
        # Load keeps running through the restore and a little after it: every device must answer v1 again.
        wait_for(lambda: fleet_serves(fleet.api, fleet.model, 1, DEVICE_IDS), timeout=30, what="fleet back on v1")
        mark = len(load.answers)
        wait_for(
            lambda: {u for u, v in load.answers[mark:] if v == 1} == set(load.urls),
            timeout=20,
            what="every device answering v1 under load",
        )
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert 2 in {v for _, v in load.answers}, "the slow version was never served under load"
    assert "p99" in str(final), f"the rollout does not say the latency gate tripped: {final}"
    assert all(s == "restored" for s in device_status(final).values()), final
    converged_on(fleet, 1)


def _wave_1_running(fleet: Fleet, rollout_id: str) -> bool:
    statuses = device_status(rollout(fleet.api, rollout_id))
    return statuses[CANARY] == "activated" and any(statuses[d] != "waiting" for d in NOT_CANARY)


def test_the_control_plane_killed_mid_wave_and_restarted_completes_the_rollout(fleet: Fleet) -> None:
    v2 = push_and_build(fleet.api, fleet.model, linear(2), inputs_only())
    rollout_id = fleet.create(v2["version"], canary_then([{"count": 1}, {"count": 1}]), bake_s=1)
    wait_for(lambda: _wave_1_running(fleet, rollout_id), timeout=60, what="wave 1 under way")

    fleet.control_plane.kill()
    fleet.control_plane.start()  # same data dir, same port
    fleet.reconnect_api()

    final = wait_phase(fleet.api, rollout_id, ("succeeded", "rolled_back", "aborted", "paused"), 90, fleet.logs)
    assert final["phase"] == "succeeded", final
    assert set(device_status(final).values()) == {"activated"}, final
    converged_on(fleet, 2)


def test_a_broker_restart_mid_rollout_lets_everyone_reconnect_and_converge(fleet: Fleet) -> None:
    v2 = push_and_build(fleet.api, fleet.model, linear(2), inputs_only())
    rollout_id = fleet.create(v2["version"], canary_then([{"count": 1}, {"count": 1}]), bake_s=1)
    wait_for(
        lambda: device_status(rollout(fleet.api, rollout_id))[CANARY] == "activated", timeout=60, what="canary done"
    )

    fleet.broker.restart()  # sessions and retained desired states are gone

    final = wait_phase(fleet.api, rollout_id, ("succeeded", "rolled_back", "aborted", "paused"), 90, fleet.logs)
    assert final["phase"] == "succeeded", final
    assert all(agent.alive() for agent in fleet.agents.values())
    wait_for(lambda: all(d["presence"] == "online" for d in devices(fleet.api).values()), timeout=30, what="all online")
    converged_on(fleet, 2)


@pytest.fixture
def proxied_fleet(broker: Mosquitto, tmp_path: Path, proxy_factory: Callable[[int], CuttableProxy]) -> Any:
    port = free_port()
    proxy = proxy_factory(port)  # artifact URLs point at the proxy, which forwards to the control plane
    # Plain HTTP on this one: the test reads the Range header the resumed download sends through the proxy.
    running = bring_up(
        broker, tmp_path, {"download": {"timeout_s": 10, "max_attempts": 10}}, proxy.url, port, https=False
    )
    try:
        yield running, proxy
    finally:
        tear_down(running)


def test_a_device_cut_off_mid_download_serves_v1_meanwhile_then_resumes_and_converges(
    proxied_fleet: tuple[Fleet, CuttableProxy],
) -> None:
    fleet, proxy = proxied_fleet
    big = push_and_build(fleet.api, fleet.model, wide(), inputs_only())
    assert big["artifact_size"] > 4_000_000, big
    canary_url = serving_urls(fleet.api)[CANARY]
    before = proxy.downstream_bytes

    rollout_id = fleet.create(big["version"], canary_then([{"percent": 100}]), bake_s=1, device_deadline_s=120)
    wait_for(lambda: proxy.downstream_bytes - before > 1_500_000, timeout=60, what="the canary's download under way")
    proxy.cut()
    try:
        wait_for(
            lambda: "attempt" in fleet.agents[CANARY].output() and "failed" in fleet.agents[CANARY].output(),
            timeout=30,
            what="the canary noticing the cut",
        )
        assert answered_version(canary_url, fleet.model) == 1
        assert served_version(devices(fleet.api)[CANARY], fleet.model) == 1
        assert device_status(rollout(fleet.api, rollout_id))[CANARY] in ("pending", "in_progress")
    finally:
        proxy.heal()

    final = wait_phase(fleet.api, rollout_id, ("succeeded", "rolled_back", "aborted", "paused"), 120, fleet.logs)
    assert final["phase"] == "succeeded", final
    resumed = [r for r in proxy.ranges_asked(big["artifact_sha256"]) if not r.startswith("bytes=0-")]
    assert resumed, f"no download resumed with Range: {proxy.request_heads}"
    converged_on(fleet, 2)


def test_a_device_offline_during_the_rollout_converges_when_it_returns(fleet: Fleet) -> None:
    """The retained desired state waits for an offline device; the rollout waits for it within its deadline."""
    away = fleet.agents["dev-1"]
    away.terminate()  # a clean stop says offline
    wait_for(lambda: devices(fleet.api)["dev-1"]["presence"] == "offline", timeout=30, what="dev-1 offline")
    v2 = push_and_build(fleet.api, fleet.model, linear(2), inputs_only())
    rollout_id = fleet.create(v2["version"], device_deadline_s=120)

    wait_for(
        lambda: [device_status(rollout(fleet.api, rollout_id))[d] for d in ("dev-2", "dev-3")] == ["activated"] * 2,
        timeout=60,
        what="the online devices activated",
    )
    body = rollout(fleet.api, rollout_id)
    assert body["phase"] == "in_progress", body  # waiting for dev-1, not failed
    assert device_status(body)["dev-1"] in ("pending", "in_progress")
    assert served_version(devices(fleet.api)["dev-1"], fleet.model) == 1  # its last report: still v1

    away.start()  # back on the same data dir: serves v1 at once, then applies the retained v2
    final = wait_phase(fleet.api, rollout_id, ("succeeded", "rolled_back", "aborted", "paused"), 90, fleet.logs)
    assert final["phase"] == "succeeded", final
    converged_on(fleet, 2)
