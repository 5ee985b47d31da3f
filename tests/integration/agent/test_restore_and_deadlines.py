"""A real `edge-agent run` rolled back to its previous version under load: served from the kept slot and runner
(no request reaches the artifact server, no inference request fails); and a download past its deadline fails
the apply with the reason while the old version keeps serving."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import yaml

from edge_agent.protocol import Signer
from tests.integration.agent.harness import AgentProcess, ArtifactServer, ControlPlaneClient
from tests.integration.agent.test_agent_process import _request, agent_config, applied, infer
from tests.support import free_port, wait_for
from tests.unit.agent.builders import build_version, signed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate()


def test_rollback_under_load_uses_the_kept_slot_and_fails_no_request(tmp_path, mosquitto, signer):
    device, port = "dev-9", free_port()
    control = ControlPlaneClient(mosquitto, device)
    agent = AgentProcess(agent_config(tmp_path, signer, device, mosquitto.port, port), tmp_path / "agent.log").start()
    outcomes: list[str] = []
    failures: list[str] = []
    done = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                _request(client, port, outcomes, failures)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        with ArtifactServer(tmp_path / "art") as server:
            v1 = build_version(tmp_path / "art", 1, base_url=server.url)
            v2 = build_version(tmp_path / "art", 2, base_url=server.url)
            control.publish_desired(signed(signer, 1, [v1], device))
            wait_for(lambda: applied(control, 1), timeout=30, what=f"generation 1\n{agent.output()}")
            control.publish_desired(signed(signer, 2, [v2], device))
            wait_for(lambda: applied(control, 2), timeout=30, what=f"generation 2\n{agent.output()}")
            for thread in threads:
                thread.start()
            wait_for(lambda: outcomes.count("2") > 50, what="load on version 2")
            requests_before = len(server.requests)

            sent = time.monotonic()
            control.publish_desired(signed(signer, 3, [v1], device))
            wait_for(lambda: applied(control, 3), timeout=30, what=f"generation 3 (v1 again)\n{agent.output()}")
            took = time.monotonic() - sent
            wait_for(lambda: outcomes[-200:].count("1") >= 100 or failures, timeout=30, what="version 1 answering")
            assert len(server.requests) == requests_before  # nothing fetched for the restore
        done.set()
        for thread in threads:
            thread.join(30)
        rollback = [e for e in control.event_bodies() if e["generation"] == 3]
        assert [e["step"] for e in rollback] == ["received", "verified", "loaded", "self_test_passed", "activated"]
        assert "rolled_back" not in control.events()  # the device never calls an activation a rollback
        assert "not reloaded" in rollback[2]["reason"] and rollback[-1]["version"] == 1
        assert took < 10, f"restore took {took:.1f} s"
        wait_for(lambda: applied(control, 3), what="generation 3 reported")
        [model] = control.latest_reported()["models"]
        assert (model["version"], model["previous_version"]) == (1, 2)
    finally:
        done.set()
        agent.kill()
        control.close()
    assert failures == []
    assert {"1", "2"} <= set(outcomes)


def test_a_download_past_its_deadline_fails_the_apply_and_v1_keeps_serving(tmp_path, mosquitto, signer):
    device, port = "dev-10", free_port()
    control = ControlPlaneClient(mosquitto, device)
    config = agent_config(tmp_path, signer, device, mosquitto.port, port)
    with_deadline = yaml.safe_load(config.read_text()) | {"deadlines": {"download_s": 1}}
    config.write_text(yaml.safe_dump(with_deadline))
    agent = AgentProcess(config, tmp_path / "agent.log").start()
    try:
        control.publish_desired(signed(signer, 1, [build_version(tmp_path / "art", 1)], device))
        wait_for(lambda: applied(control, 1), timeout=30, what=f"generation 1\n{agent.output()}")
        with ArtifactServer(tmp_path / "slow", bytes_per_s=200_000) as server:
            v2 = build_version(tmp_path / "slow", 2, padding=3_000_000, base_url=server.url)
            control.publish_desired(signed(signer, 2, [v2], device))
            wait_for(lambda: "error" in control.events(), timeout=30, what=f"deadline error\n{agent.output()}")
        [error] = [e for e in control.event_bodies() if e["step"] == "error"]
        assert error["reason"] == "deadline exceeded in download after 1 s" and error["version"] == 2
        wait_for(lambda: (control.latest_reported() or {}).get("last_apply", {}).get("phase") == "failed")
        reported = control.latest_reported()
        assert reported["last_apply"]["reason"] == "deadline exceeded in download after 1 s"
        assert reported["applied_generation"] == 1 and infer(port)[0] == "1"
    finally:
        agent.kill()
        control.close()
