"""Real `edge-agent run` processes against real Mosquitto, real HTTP artifact servers and real onnxruntime."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from edge_agent.protocol import Signer
from tests.integration.agent.harness import AgentProcess, ArtifactServer, ControlPlaneClient
from tests.support import free_port, password_for, python_env, wait_for
from tests.unit.agent.builders import SAMPLE, build_version, expected_output, signed, with_plan, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate()


def agent_config(tmp_path: Path, signer: Signer, device: str, broker_port: int, serving_port: int) -> Path:
    return write_config(
        tmp_path / f"{device}.yaml",
        tmp_path / f"{device}-data",
        signer.public_key_b64,
        device_id=device,
        mqtt={
            "host": "127.0.0.1",
            "port": broker_port,
            "username": device,
            "password": password_for(device),
            "protocol": "auto",
            "keepalive_s": 10,
        },
        serving={"host": "127.0.0.1", "port": serving_port},
    )


def infer(port: int) -> tuple[str, list[float]]:
    body = {"inputs": [{"name": "X", "shape": [3, 4], "datatype": "FP32", "data": SAMPLE.ravel().tolist()}]}
    response = httpx.post(f"http://127.0.0.1:{port}/v2/models/lin/infer", json=body, timeout=10)
    response.raise_for_status()
    answer = response.json()
    return answer["model_version"], answer["outputs"][0]["data"]


def applied(control: ControlPlaneClient, generation: int) -> bool:
    reported = control.latest_reported()
    return bool(
        reported
        and reported["applied_generation"] == generation
        and reported["models"]
        and reported["models"][0]["health"] == "serving"
    )


def test_agent_applies_reports_serves_and_survives_bad_messages(tmp_path, mosquitto, signer):
    device, port = "dev-4", free_port()
    control = ControlPlaneClient(mosquitto, device)
    agent = AgentProcess(agent_config(tmp_path, signer, device, mosquitto.port, port), tmp_path / "agent.log").start()
    try:
        with ArtifactServer(tmp_path / "art") as server:
            control.publish_desired(
                signed(signer, 1, [build_version(tmp_path / "art", 1, base_url=server.url)], device)
            )
            wait_for(lambda: applied(control, 1), timeout=30, what=f"generation 1 reported\n{agent.output()}")
        reported = control.latest_reported()
        assert reported["models"][0]["provider"] == "CPUExecutionProvider"
        assert reported["serving_url"] == f"http://127.0.0.1:{port}" and reported["labels"] == {"site": "factory-a"}
        assert {"received", "downloading", "verified", "loaded", "self_test_passed", "activated"} <= set(
            control.events()
        )
        assert '"state":"online"' in control.messages_on("status")[-1]
        version, data = infer(port)
        assert version == "1" and data == pytest.approx(expected_output(1).ravel().tolist(), rel=1e-5)
        assert "protocol 5" in agent.output()

        control.publish_raw(b"{not an envelope")
        control.publish_desired(signed(Signer.generate(), 2, [build_version(tmp_path / "art", 2)], device))
        wait_for(lambda: control.events().count("rejected") >= 2, what="two rejections")
        assert agent.alive() and infer(port)[0] == "1"
        wait_for(lambda: control.bodies("telemetry"), what="telemetry")
        assert control.bodies("telemetry")[-1]["window_s"] == 1

        assert agent.terminate() == 0
        wait_for(lambda: '"state":"offline"' in control.messages_on("status")[-1], what="offline presence")
    finally:
        agent.kill()
        control.close()


def test_a_plan_this_device_cannot_run_falls_back_and_says_why(tmp_path, mosquitto, signer):
    device, port = "dev-12", free_port()
    control = ControlPlaneClient(mosquitto, device)
    agent = AgentProcess(agent_config(tmp_path, signer, device, mosquitto.port, port), tmp_path / "agent.log").start()
    try:
        with ArtifactServer(tmp_path / "art") as server:
            assignment = with_plan(build_version(tmp_path / "art", 1, base_url=server.url))
            plan = assignment.artifact.model_copy(update={"url": f"{server.url}/lin-v1-plan.onnx"})
            control.publish_desired(signed(signer, 1, [assignment.model_copy(update={"artifact": plan})], device))
            wait_for(lambda: applied(control, 1), timeout=30, what=f"generation 1 reported\n{agent.output()}")
        assert server.served("lin-v1-plan.onnx") == []  # a refused plan is never downloaded
        [fallback] = [e for e in control.event_bodies() if e["step"] == "artifact_fallback"]
        assert fallback["model"] == "lin" and "tensorrt-plan b1-plan built for dgpu-ampere" in fallback["reason"]
        [model] = control.latest_reported()["models"]
        assert (model["build_id"], model["provider"]) == ("b1", "CPUExecutionProvider")
        assert model["artifact_kind"] == "onnx" and model["fallback_reason"] == fallback["reason"].split(": ", 1)[1]
        version, data = infer(port)
        assert version == "1" and data == pytest.approx(expected_output(1).ravel().tolist(), rel=1e-5)
    finally:
        agent.kill()
        control.close()


def test_hot_swap_under_load_fails_no_request(tmp_path, mosquitto, signer):
    device, port = "dev-5", free_port()
    control = ControlPlaneClient(mosquitto, device)
    agent = AgentProcess(agent_config(tmp_path, signer, device, mosquitto.port, port), tmp_path / "agent.log").start()
    outcomes: list[str] = []
    failures: list[str] = []
    try:
        control.publish_desired(signed(signer, 1, [build_version(tmp_path / "art", 1)], device))
        wait_for(lambda: applied(control, 1), timeout=30, what=f"generation 1\n{agent.output()}")
        done = threading.Event()

        def hammer() -> None:
            with httpx.Client(timeout=10) as client:
                for _ in range(3000):
                    if done.is_set():
                        return
                    _request(client, port, outcomes, failures)

        readiness: list[int] = []

        def ask_ready() -> None:
            with httpx.Client(timeout=10) as client:
                while not done.is_set():
                    for path in ("/v2/health/ready", "/v2/models/lin/ready"):
                        readiness.append(client.get(f"http://127.0.0.1:{port}{path}").status_code)

        threads = [threading.Thread(target=hammer) for _ in range(4)] + [threading.Thread(target=ask_ready)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(outcomes) > 50, what="load running")
        control.publish_desired(signed(signer, 2, [build_version(tmp_path / "art", 2)], device))
        wait_for(lambda: outcomes[-200:].count("2") >= 100 or failures, timeout=30, what="version 2 answering")
        done.set()
        for thread in threads:
            thread.join(30)
        # The previous version keeps answering, by version, after the swap.
        previous = httpx.get(f"http://127.0.0.1:{port}/v2/models/lin/versions/1/ready", timeout=10)
        metadata = httpx.get(f"http://127.0.0.1:{port}/v2/models/lin", timeout=10).json()
    finally:
        agent.kill()
        control.close()
    assert failures == []
    assert {"1", "2"} <= set(outcomes)
    assert readiness and set(readiness) == {200}, "the model was reported not ready during the swap"
    assert previous.status_code == 200 and metadata["versions"] == ["2", "1"]


def _request(client: httpx.Client, port: int, outcomes: list[str], failures: list[str]) -> None:
    body = {"inputs": [{"name": "X", "shape": [3, 4], "datatype": "FP32", "data": SAMPLE.ravel().tolist()}]}
    try:
        response = client.post(f"http://127.0.0.1:{port}/v2/models/lin/infer", json=body)
        answer = response.json()
        version = answer["model_version"]
        want = expected_output(int(version)).ravel().tolist()
        if response.status_code != 200 or answer["outputs"][0]["data"] != pytest.approx(want, rel=1e-5):
            failures.append(response.text)
        outcomes.append(version)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        failures.append(repr(exc))


def test_sigkill_mid_download_then_restart_resumes_and_converges(tmp_path, mosquitto, signer):
    device, port = "dev-6", free_port()
    control = ControlPlaneClient(mosquitto, device)
    config = agent_config(tmp_path, signer, device, mosquitto.port, port)
    model = build_version(tmp_path / "art", 1, padding=3_000_000)
    size = model.artifact.size
    staging = tmp_path / f"{device}-data" / "staging" / f"{model.artifact.sha256}.part"
    with ArtifactServer(tmp_path / "art", bytes_per_s=400_000) as server:
        model = build_version(tmp_path / "art", 1, padding=3_000_000, base_url=server.url)
        agent = AgentProcess(config, tmp_path / "agent.log").start()
        try:
            control.publish_desired(signed(signer, 1, [model], device))
            wait_for(lambda: staging.exists() and staging.stat().st_size > 300_000, timeout=30, what="half download")
            agent.kill()
            kept = staging.stat().st_size
            assert 0 < kept < size
            server.bytes_per_s = None
            agent = AgentProcess(config, tmp_path / "agent.log").start()
            wait_for(lambda: applied(control, 1), timeout=60, what=f"converged after restart\n{agent.output()}")
            assert infer(port)[0] == "1"
        finally:
            agent.kill()
            control.close()
    transfers = server.served("lin-v1.onnx")
    assert any(t.range and t.range.startswith("bytes=") and t.range != "bytes=0-" for t in transfers[1:])
    assert sum(t.sent for t in transfers) < 2 * size


def test_without_a_broker_the_last_known_good_model_is_served_at_once(tmp_path, signer):
    closed_port, port = free_port(), free_port()
    config = agent_config(tmp_path, signer, "dev-11", closed_port, port)
    desired = tmp_path / "desired.json"
    desired.write_text(signed(signer, 1, [build_version(tmp_path / "art", 1)], "dev-11").model_dump_json())
    import subprocess

    pushed = subprocess.run(
        ["edge-agent", "apply", "--desired", str(desired), "--config", str(config)],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pushed.returncode == 0, pushed.stderr
    agent = AgentProcess(config, tmp_path / "agent.log").start()
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200,
            timeout=20,
            what=f"ready without broker\n{agent.output()}",
        )
        assert infer(port)[0] == "1"
        assert "not reachable" in agent.output()
    finally:
        agent.kill()
