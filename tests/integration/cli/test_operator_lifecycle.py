"""An operator's lifecycle verbs, as `edgectl` subprocesses against a real `edgectl server` on a real Mosquitto:
pushing a model exported with torch's defaults (its external data sent along and folded in), the attacks on that
upload, cancelling a build that waits for a builder nobody runs, `build` without a target, `targets` with each
class's kinds, and deleting a model version (refused while a rollout or a device uses it).

Asserts what the operator sees: exit codes, printed text, what the server answers afterwards.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest
from onnx import TensorProto

from tests.support import EDGECTL, ControlPlaneProcess, Mosquitto, enroll_device, mint_token, python_env
from tests.unit.control_plane.onnx_models import W, linear_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    running = ControlPlaneProcess(mosquitto, tmp_path_factory.mktemp("lifecycle") / "data")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def api(server: ControlPlaneProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def edgectl(server: ControlPlaneProcess, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [EDGECTL, "--url", server.url, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=180)


def ok_json(server: ControlPlaneProcess, *args: str) -> Any:
    result = edgectl(server, "--json", *args)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def torch_export(folder: Path) -> Path:
    """A small MLP exported with torch.onnx.export's defaults: its large weights land in `model.onnx.data`."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)).eval()
    batch = torch.export.Dim("batch")
    path = folder / "model.onnx"
    torch.onnx.export(net, (torch.zeros(2, 4),), str(path), input_names=["x"], dynamic_shapes=({0: batch},))
    assert (folder / "model.onnx.data").stat().st_size > 0
    return path


def test_a_model_exported_by_torch_is_pushed_with_its_external_data_and_stored_whole(
    server: ControlPlaneProcess, api: httpx.Client, tmp_path: Path
) -> None:
    model = torch_export(tmp_path)
    pushed = edgectl(server, "models", "push", "torch-mlp", str(model))
    assert pushed.returncode == 0, pushed.stderr
    assert "sending external data model.onnx.data with model.onnx" in pushed.stderr
    assert "torch-mlp v1" in pushed.stdout
    source = api.get(f"/v1/artifacts/{api.get('/v1/models/torch-mlp/versions/1').json()['source_sha256']}")
    stored = onnx.load_from_string(source.content)  # one file: nothing refers to external data any more
    assert all(t.data_location == TensorProto.DEFAULT for t in stored.graph.initializer)
    built = edgectl(server, "build", "torch-mlp", "1", "-t", "cpu-x86_64", "--wait")
    assert built.returncode == 0 and "succeeded" in built.stdout, built.stderr


def hand_made(location: str, length: int = W.nbytes) -> bytes:
    """The linear model with its weight `W` said to live at `location`."""
    model = onnx.load_from_string(linear_model())
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    return bytes(model.SerializeToString())


UPLOAD_ATTACKS = [
    pytest.param("../../etc/passwd", [("../../etc/passwd", W.tobytes())], "'..'", id="parent-traversal"),
    pytest.param("/etc/passwd", [("/etc/passwd", W.tobytes())], "absolute path", id="absolute-path"),
    pytest.param("/etc/passwd", [], "which was not uploaded", id="server-file-not-uploaded"),
    pytest.param("weights.bin", [("other.bin", W.tobytes())], "'weights.bin', which was not uploaded", id="other"),
    pytest.param("weights.bin", [("weights.bin", W.tobytes()[:20])], "the file has 20 bytes", id="data-too-short"),
]


@pytest.mark.parametrize(("location", "files", "message"), UPLOAD_ATTACKS)
def test_an_upload_whose_external_data_leaves_the_upload_is_refused(
    api: httpx.Client, location: str, files: list[tuple[str, bytes]], message: str
) -> None:
    name = f"attack-{abs(hash(location + str(len(files)))) % 10**6}"
    parts = [("model", ("model.onnx", hand_made(location), "application/octet-stream"))]
    parts += [("external_data", (n, data, "application/octet-stream")) for n, data in files]
    answer = api.post(f"/v1/models/{name}/versions", files=parts)
    assert answer.status_code in (400, 422), answer.text
    detail = answer.json()["detail"]
    assert message in detail, detail
    assert "root:" not in answer.text  # /etc/passwd's content never comes back
    assert api.get(f"/v1/models/{name}").status_code == 404  # nothing registered


def test_the_cli_refuses_a_location_outside_the_models_folder_before_sending(
    server: ControlPlaneProcess, api: httpx.Client, tmp_path: Path
) -> None:
    (tmp_path / "m").mkdir()
    model = tmp_path / "m" / "model.onnx"
    model.write_bytes(hand_made("../secret.bin"))
    (tmp_path / "secret.bin").write_bytes(W.tobytes())
    refused = edgectl(server, "models", "push", "sneaky", str(model))
    assert refused.returncode == 1
    assert "external data location '../secret.bin' must not contain '..'" in refused.stderr
    assert api.get("/v1/models/sneaky").status_code == 404
    missing = tmp_path / "m" / "alone.onnx"
    missing.write_bytes(hand_made("alone.onnx.data"))
    told = edgectl(server, "models", "push", "alone", str(missing))
    assert told.returncode == 1 and "'alone.onnx.data'" in told.stderr and "put it next to the model" in told.stderr


def push(server: ControlPlaneProcess, name: str, folder: Path, scale: float = 1.0) -> None:
    path = folder / f"{name}.onnx"
    path.write_bytes(linear_model(weight_scale=scale))
    pushed = edgectl(server, "models", "push", name, str(path))
    assert pushed.returncode == 0, pushed.stderr


def test_a_build_waiting_for_a_builder_is_cancelled_and_a_finished_one_cannot_be(
    server: ControlPlaneProcess, tmp_path: Path
) -> None:
    push(server, "cancel-me", tmp_path)
    queued = ok_json(server, "build", "cancel-me", "1", "-t", "jetson-orin", "-k", "tensorrt-plan")
    waiting = queued["builds"][0]  # one per compute capability and TensorRT release of the class
    assert waiting["status"] == "waiting_for_builder"  # nobody here builds TensorRT plans for Orin
    cancelled = edgectl(server, "builds", "cancel", waiting["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout
    again = edgectl(server, "builds", "cancel", waiting["id"])
    assert again.returncode == 1
    assert "409" in again.stderr and "cancelled" in again.stderr


def test_targets_lists_each_class_with_its_kinds(server: ControlPlaneProcess) -> None:
    shown = edgectl(server, "targets")
    assert shown.returncode == 0, shown.stderr
    assert "kinds" in shown.stdout and "tensorrt-plan" in shown.stdout and "onnx-int8-qdq" in shown.stdout
    classes = {t["name"]: t["kinds"] for t in ok_json(server, "targets")}
    assert classes["cpu-x86_64"] and "tensorrt-plan" not in classes["cpu-x86_64"]


def test_build_without_a_target_builds_for_the_fleets_classes_and_deleting_waits_for_its_users(
    server: ControlPlaneProcess, api: httpx.Client, tmp_path: Path
) -> None:
    push(server, "fleet-model", tmp_path)
    nobody = edgectl(server, "build", "fleet-model", "1")
    assert nobody.returncode == 1 and "no enrolled device has a GPU class" in nobody.stderr
    assert "--target" in nobody.stderr

    enroll_device(api, "life-1", labels={"lifecycle": "yes"}, gpu_class="cpu-x86_64")
    built = edgectl(server, "build", "fleet-model", "1", "--wait")
    assert built.returncode == 0, built.stderr
    assert "building for the GPU classes of the enrolled devices: cpu-x86_64" in built.stderr

    created = ok_json(server, "rollout", "create", "-m", "fleet-model", "-v", "1", "-l", "lifecycle=yes")
    refused = edgectl(server, "models", "delete", "fleet-model", "--version", "1")
    assert refused.returncode == 1
    assert f"unfinished rollout(s) {created['id']}" in refused.stderr
    assert "1 device(s) run it or are told to (life-1" in refused.stderr
    assert api.get("/v1/models/fleet-model/versions/1").status_code == 200  # nothing deleted


def test_delete_a_version_then_the_model_removes_its_builds_and_artifacts(
    server: ControlPlaneProcess, api: httpx.Client, tmp_path: Path
) -> None:
    push(server, "short-lived", tmp_path, scale=3.0)
    push(server, "short-lived", tmp_path, scale=5.0)  # artifacts of its own: content-addressed files are shared
    (build,) = ok_json(server, "build", "short-lived", "2", "-t", "cpu-x86_64", "--wait")
    artifact = f"/v1/artifacts/{build['artifact_sha256']}"
    assert api.get(artifact).status_code == 200

    deleted = edgectl(server, "models", "delete", "short-lived", "--version", "2")
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted short-lived v2: 1 version(s), 1 build(s)" in deleted.stdout
    assert api.get(artifact).status_code == 404
    assert api.get(f"/v1/builds/{build['id']}").status_code == 404
    assert [v["version"] for v in api.get("/v1/models/short-lived/versions").json()] == [1]

    whole = edgectl(server, "models", "delete", "short-lived")
    assert whole.returncode == 0 and "deleted model short-lived: 1 version(s)" in whole.stdout, whole.stderr
    gone = edgectl(server, "models", "delete", "short-lived")
    assert gone.returncode == 1 and "(404)" in gone.stderr and "'short-lived'" in gone.stderr


def test_deleting_needs_registry_write(server: ControlPlaneProcess, api: httpx.Client, tmp_path: Path) -> None:
    push(server, "kept", tmp_path)
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        assert anonymous.delete("/v1/models/kept").status_code == 401
    viewer = mint_token(api, "viewer", "lifecycle-viewer")
    refused = api.delete("/v1/models/kept", headers={"Authorization": f"Bearer {viewer}"})
    assert refused.status_code == 403
    assert api.get("/v1/models/kept").status_code == 200
