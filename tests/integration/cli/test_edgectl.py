"""`edgectl` as a real subprocess against a real control plane (`edgectl server`) on a real Mosquitto broker.

Asserts what an operator sees: exit codes, printed text, files written.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.support import EDGECTL, ControlPlaneProcess, Mosquitto, enroll_agent, free_port, python_env, wait_for

pytestmark = pytest.mark.integration


Server = ControlPlaneProcess  # what every test here talks to: a real `edgectl server` process


@pytest.fixture(scope="module")
def training_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's one training code root (training.code_dirs)."""
    return tmp_path_factory.mktemp("training-code")


@pytest.fixture(scope="module")
def server(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory, training_code: Path) -> Iterator[Server]:
    roots = {"EDGE_CP_TRAINING__CODE_DIRS": json.dumps([str(training_code)])}
    running = ControlPlaneProcess(mosquitto, tmp_path_factory.mktemp("edgectl-server") / "data", extra_env=roots)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def edgectl(server: Server, *args: str, json_out: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [EDGECTL, "--url", server.url, *(["--json"] if json_out else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=120)


def ok_json(server: Server, *args: str) -> object:
    result = edgectl(server, *args, json_out=True)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def tiny_model(path: Path) -> Path:
    """y = 2 * x + 1 on float32 [batch, 4]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])]
    graph = helper.make_graph(nodes, "affine", [x], [y], initializer=[two, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_status_reports_the_mqtt_link(server: Server) -> None:
    result = edgectl(server, "status")
    assert result.returncode == 0, result.stderr
    assert "mqtt_connected" in result.stdout
    assert ok_json(server, "status") == {"status": "ok", "mqtt_connected": True}


def test_status_with_ingest_shows_the_queue_counters(server: Server) -> None:
    shown = ok_json(server, "status", "--ingest")
    assert isinstance(shown, dict) and shown["mqtt_connected"] is True
    assert shown["ingest"]["capacity"] == 50_000 and shown["ingest"]["dropped"] == 0
    table = edgectl(server, "status", "--ingest")
    assert table.returncode == 0, table.stderr
    assert "ingest queue" in table.stdout and "resync_pending" in table.stdout


def test_push_list_build_and_fetch_the_artifact(server: Server, tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "affine.onnx")
    np.savez(tmp_path / "samples.npz", **{"input:x": np.ones((3, 4), dtype=np.float32)})
    pushed = edgectl(server, "models", "push", "affine", str(model), "--samples", str(tmp_path / "samples.npz"))
    assert pushed.returncode == 0, pushed.stderr
    assert "affine v1" in pushed.stdout

    listed = edgectl(server, "models", "list")
    assert listed.returncode == 0 and "affine" in listed.stdout
    models = ok_json(server, "models", "list")
    assert isinstance(models, list)
    assert any(m["name"] == "affine" and m["latest_version"] == 1 for m in models)

    followed = edgectl(server, "build", "affine", "1", "--target", "cpu-x86_64", "--wait")
    assert followed.returncode == 0, followed.stderr
    assert "succeeded" in followed.stdout
    builds = ok_json(server, "build", "affine", "1", "--target", "cpu-x86_64", "--wait")
    assert isinstance(builds, list)
    assert [(b["target"], b["kind"], b["status"]) for b in builds] == [("cpu-x86_64", "onnx", "succeeded")]
    build = builds[0]

    table = edgectl(server, "builds", "affine", "1")
    assert table.returncode == 0 and "cpu-x86_64" in table.stdout and "succeeded" in table.stdout
    shown = ok_json(server, "builds", "show", build["id"])
    assert isinstance(shown, dict) and shown["artifact_sha256"] == build["artifact_sha256"]
    human = edgectl(server, "builds", "show", build["id"])
    assert human.returncode == 0
    assert all(part in human.stdout for part in ("parity (passed", "latency", "manifest (signed)", "max abs"))
    logs = edgectl(server, "builds", "logs", build["id"])
    assert logs.returncode == 0 and "claimed by builder" in logs.stdout and "succeeded" in logs.stdout
    rejected = edgectl(server, "build", "affine", "1", "--target", "cpu-x86_64", "--kind", "onnx-fp64")
    assert rejected.returncode == 1 and "onnx-fp64" in rejected.stderr

    out = tmp_path / "artifact.onnx"
    got = edgectl(server, "artifacts", "get", build["artifact_sha256"], "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == build["artifact_sha256"]

    npz = tmp_path / "ref.npz"
    assert edgectl(server, "models", "samples", "affine", "1", "-o", str(npz)).returncode == 0
    with np.load(npz) as data:
        assert np.allclose(data["output:y"], 3.0)


def test_doctor_says_what_this_host_can_build(server: Server) -> None:
    result = subprocess.run([EDGECTL, "doctor"], capture_output=True, text=True, env=python_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "onnx-int8-qdq" in result.stdout and "onnxruntime" in result.stdout
    assert "tensorrt-plan:" in result.stdout  # no TensorRT on these hosts: the reason is printed
    facts = json.loads(
        subprocess.run([EDGECTL, "--json", "doctor"], capture_output=True, text=True, env=python_env()).stdout
    )
    assert "CPUExecutionProvider" in facts["onnxruntime_providers"]


def test_builders_lists_the_in_process_worker(server: Server) -> None:
    builders = wait_for(lambda: ok_json(server, "builders"), what="the in-process builder to claim")
    assert isinstance(builders, list)
    assert any(b["builder_id"].startswith("control-plane@") and "onnx" in b["kinds"] for b in builders)


def test_devices_list_with_no_fleet(server: Server) -> None:
    """A selector no device matches (its key exists) is an empty list; an unknown key: test_operator_habits.py."""
    with server.client() as api:
        answer = api.put("/v1/devices/cli-somewhere/enrollment", json={"channel": "mqtt", "labels": {"site": "x"}})
        assert answer.status_code == 200, answer.text
    result = edgectl(server, "devices", "list", "--selector", "site=nowhere")
    assert result.returncode == 0, result.stderr
    assert "devices" in result.stdout
    assert ok_json(server, "devices", "list", "--selector", "site=nowhere") == []


def test_devices_list_pages_through_the_whole_fleet(server: Server) -> None:
    """More devices than one page: `devices list` follows the pages and shows them all (one table header, one JSON
    array); `--limit` shows at most that many."""
    ids = [f"cli-pages-{n}" for n in range(5)]
    with server.client() as api:
        for device_id in ids:
            answer = api.put(f"/v1/devices/{device_id}/enrollment", json={"channel": "mqtt", "labels": {"t": "pages"}})
            assert answer.status_code == 200, answer.text
    listed = ok_json(server, "devices", "list", "--selector", "t=pages", "--chunk-size", "2")
    assert [d["id"] for d in listed] == ids  # type: ignore[union-attr, index]
    limited = ok_json(server, "devices", "list", "--selector", "t=pages", "--chunk-size", "2", "--limit", "3")
    assert [d["id"] for d in limited] == ids[:3]  # type: ignore[union-attr, index]
    table = edgectl(server, "devices", "list", "--selector", "t=pages", "--chunk-size", "2")
    assert table.returncode == 0, table.stderr
    assert all(device_id in table.stdout for device_id in ids)
    assert table.stdout.count("presence") == 1, table.stdout
    assert "pages" in edgectl(server, "devices", "list", "--help").stdout


def test_a_file_that_is_not_onnx_is_refused_with_the_servers_reason(server: Server, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"this is not a protobuf")
    result = edgectl(server, "models", "push", "bogus", str(bogus))
    assert result.returncode == 1
    assert "error:" in result.stderr
    assert "POST /v1/models/bogus/versions failed (4" in result.stderr


def test_unknown_names_are_404_with_the_servers_detail(server: Server) -> None:
    result = edgectl(server, "models", "show", "no-such-model")
    assert result.returncode == 1
    assert "(404)" in result.stderr


def test_unreachable_server_exits_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [EDGECTL, "--url", url, "models", "list"], capture_output=True, text=True, env=python_env(), timeout=30
    )
    assert result.returncode == 2
    assert f"cannot reach the control plane at {url}" in result.stderr


ENTRYPOINT = textwrap.dedent(
    """
    import argparse, json, pathlib, sys
    import numpy as np, onnx
    from onnx import TensorProto, helper
    p = argparse.ArgumentParser(); p.add_argument("--output-dir"); p.add_argument("--params-json")
    a = p.parse_args(); params = json.loads(a.params_json); out = pathlib.Path(a.output_dir)
    if params.get("fail"):
        print("step 1 of 1: giving up on purpose", flush=True); sys.exit(3)
    print("epoch 1/1 loss=0.1", flush=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
    onnx.save(m, str(out / "model.onnx"))
    np.savez(out / "samples.npz", **{"input:x": np.array([[1, -1]], dtype=np.float32)})
    (out / "metrics.json").write_text(json.dumps({"accuracy": 1.0}))
    """
)


def _spec(code_root: Path, tmp_path: Path, name: str, fail: bool, entrypoint: str = "relu/job.py") -> Path:
    """The entrypoint goes into the server's code root; the spec (anywhere) names it relative to that root."""
    (code_root / "relu").mkdir(exist_ok=True)
    (code_root / "relu" / "job.py").write_text(ENTRYPOINT)
    spec = tmp_path / f"{name}.yaml"
    fail_text = str(fail).lower()
    spec.write_text(f"name: {name}\nmodel_name: relu\nentrypoint: {entrypoint}\nparameters: {{fail: {fail_text}}}\n")
    return spec


def test_train_wait_registers_a_version(server: Server, training_code: Path, tmp_path: Path) -> None:
    spec = _spec(training_code, tmp_path, "relu-ok", fail=False)
    result = edgectl(server, "train", str(spec), "--wait", "--timeout", "90")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "registered relu v" in result.stderr
    assert "relu v" in result.stdout and "training" in result.stdout
    jobs = ok_json(server, "training", "list")
    assert isinstance(jobs, list) and any(j["spec"]["name"] == "relu-ok" and j["status"] == "succeeded" for j in jobs)


def test_train_outside_the_code_root_is_refused_by_the_server(
    server: Server, training_code: Path, tmp_path: Path
) -> None:
    spec = _spec(training_code, tmp_path, "relu-absent", fail=False, entrypoint="relu/absent.py")
    result = edgectl(server, "train", str(spec))
    assert result.returncode == 1
    assert "entrypoint 'relu/absent.py' is not a Python source file (.py) in any root of training.code_dirs" in (
        result.stderr
    )
    assert str(training_code) not in result.stderr


def test_failed_training_shows_its_log_and_exits_1(server: Server, training_code: Path, tmp_path: Path) -> None:
    spec = _spec(training_code, tmp_path, "relu-bad", fail=True)
    result = edgectl(server, "train", str(spec), "--wait", "--timeout", "90")
    assert result.returncode == 1
    assert "giving up on purpose" in result.stdout
    assert "failed" in result.stderr


def start_agent(
    server: Server, mosquitto: Mosquitto, tmp_path: Path, site: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A real `edge-agent run` (device cli-SITE, label site=SITE), enrolled the operator's way: `edgectl
    enrollment-tokens create --label site=SITE --auto-approve`, then `edge-agent enroll` on the device."""
    created = ok_json(
        server, "enrollment-tokens", "create", f"cli-{site}", "--label", f"site={site}", "--auto-approve",
        "--max-uses", "1", "--expires-in", "10m",
    )  # fmt: skip
    serving_port = free_port()
    config = tmp_path / "agent.yaml"
    base = {"data_dir": str(tmp_path / "agent-data"), "telemetry_interval_s": 1}
    config.write_text(json.dumps(base | {"serving": {"host": "127.0.0.1", "port": serving_port}}))
    enroll_agent(mosquitto, server.url, created["token"], config, f"cli-{site}")  # type: ignore[index]
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [str(Path(sys.executable).parent / "edge-agent"), "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=python_env(),
        )
    return agent, serving_port, log


def stop(agent: subprocess.Popen[bytes]) -> None:
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(timeout=15)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()


def served_version(port: int, model: str) -> str:
    answer = httpx.post(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3]}]},
        timeout=10,
    ).json()
    return str(answer["model_version"])


def test_rollout_create_wait_follows_a_real_agent_until_it_serves(
    server: Server, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The operator's main path in one go: push, build, `rollout create --wait` until a real agent serves it."""
    agent, serving_port, log = start_agent(server, mosquitto, tmp_path, "cli-wait")
    try:
        devices = wait_for(
            lambda: ok_json(server, "devices", "list", "--selector", "site=cli-wait"), what="the agent to enroll"
        )
        gpu_class = devices[0]["gpu_class"]  # type: ignore[index]
        ok_json(server, "models", "push", "wait-model", str(tiny_model(tmp_path / "m.onnx")))
        ok_json(server, "build", "wait-model", "1", "--target", gpu_class, "--wait")

        result = edgectl(
            server, "rollout", "create", "--model", "wait-model", "--version", "1", "--selector", "site=cli-wait",
            "--wait", "--timeout", "60",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr + log.read_text()[-2000:]
        assert "cli-cli-wait" in result.stdout
        assert "activated" in result.stdout

        answer = httpx.post(
            f"http://127.0.0.1:{serving_port}/v2/models/wait-model/infer",
            json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3]}]},
            timeout=10,
        ).json()
        assert answer["model_version"] == "1"
        assert answer["outputs"][0]["data"] == [1.0, 3.0, 5.0, 7.0]
    finally:
        stop(agent)


def test_operator_pauses_then_aborts_a_canary_and_watch_reports_the_rollback(
    server: Server, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """rollout pause / abort / watch through real processes: the canary goes back to v1 from its previous slot."""
    agent, serving_port, log = start_agent(server, mosquitto, tmp_path, "cli-stage")
    try:
        devices = wait_for(
            lambda: ok_json(server, "devices", "list", "--selector", "site=cli-stage"), what="the agent to enroll"
        )
        gpu_class = devices[0]["gpu_class"]  # type: ignore[index]
        for version in (1, 2):
            ok_json(server, "models", "push", "staged", str(tiny_model(tmp_path / f"v{version}.onnx")))
            ok_json(server, "build", "staged", str(version), "--target", gpu_class, "--wait")
        first = edgectl(server, "rollout", "create", "-m", "staged", "-v", "1", "-l", "site=cli-stage", "--wait")
        assert first.returncode == 0, first.stdout + first.stderr + log.read_text()[-2000:]

        staged = ok_json(
            server, "rollout", "create", "-m", "staged", "-v", "2", "-l", "site=cli-stage",
            "--canary", "1", "--wave", "100%", "--bake", "600",
        )  # fmt: skip
        rollout_id = staged["id"]  # type: ignore[index]
        wait_for(lambda: served_version(serving_port, "staged") == "2", timeout=60, what="the canary on v2")
        assert ok_json(server, "rollout", "pause", rollout_id)["phase"] == "paused"  # type: ignore[index]

        aborted = ok_json(server, "rollout", "abort", rollout_id)
        assert aborted["phase"] in ("rolling_back", "rolled_back")  # type: ignore[index]
        watched = edgectl(server, "rollout", "watch", rollout_id, "--timeout", "60")
        assert watched.returncode == 1, watched.stdout + watched.stderr
        assert "rolled_back" in watched.stdout + watched.stderr
        assert served_version(serving_port, "staged") == "1"
    finally:
        stop(agent)
