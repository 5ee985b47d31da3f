"""Training with the local backend through the real API: a real subprocess entrypoint from a registered training
code root; success registers a version with lineage, failure is reported with the log tail. And the trust
boundary: nothing the API receives runs as code, and a refusal tells nothing about files outside the roots."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.settings import TrainingSettings
from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.support import Mosquitto, python_env, wait_for
from tests.unit.control_plane.onnx_models import linear_model

pytestmark = pytest.mark.integration

ENTRYPOINT = """
import argparse, json, os, pathlib, sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

parser = argparse.ArgumentParser()
parser.add_argument("--output-dir", required=True)
parser.add_argument("--params-json", required=True)
args = parser.parse_args()
params = json.loads(args.params_json)
out = pathlib.Path(args.output_dir)
scale = float(params["scale"])
print("training with scale", scale)
print("isolated:", sys.flags.isolated, "in job folder:", pathlib.Path.cwd() == out.parent)
w = (np.eye(4, 2) * scale).astype(np.float32)
x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])
y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])
graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "t", [x], [y],
                          initializer=[numpy_helper.from_array(w, "W")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, out / "model.onnx")
np.savez(out / "samples.npz", **{"input:X": np.ones((2, 4), np.float32)})
(out / "metrics.json").write_text(json.dumps({"loss": 0.125, "tool_versions": {"onnx": onnx.__version__}}))
"""

FAILING = """
import sys
print("loading data...")
print("boom: the dataset is empty", file=sys.stderr)
sys.exit(3)
"""


@dataclass(frozen=True)
class Roots:
    code: Path  # registered: training.code_dirs
    data: Path  # registered: training.data_dirs
    outside: Path  # anything else on the host


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Roots:
    base = tmp_path_factory.mktemp("training-roots")
    made = Roots(code=base / "code", data=base / "data", outside=base / "outside")
    for folder in (made.code / "jobs" / "folder.py", made.data, made.outside):
        folder.mkdir(parents=True)
    (made.code / "jobs" / "train.py").write_text(ENTRYPOINT)
    (made.code / "jobs" / "bad.py").write_text(FAILING)
    (made.code / "jobs" / "notes.txt").write_text("not code\n")
    (made.data / "blobs.csv").write_text("a,b\n1,2\n")
    (made.outside / "secret.py").write_text("print('outside the roots')\n")
    (made.code / "jobs" / "escape.py").symlink_to(made.outside / "secret.py")
    (made.code / "jobs" / "dangling.py").symlink_to(made.outside / "absent.py")
    (made.data / "escape.csv").symlink_to(made.outside / "secret.py")
    (made.data / "dangling.csv").symlink_to(made.outside / "absent.py")
    return made


@pytest.fixture(scope="module")
def trainer(mosquitto: Mosquitto, roots: Roots, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A control plane with one training code root and one data root registered."""
    settings = server_settings(mosquitto, tmp_path_factory.mktemp("trainer-data"))
    training = TrainingSettings(code_dirs=[roots.code], data_dirs=[roots.data])
    running = start_server(settings.model_copy(update={"training": training}))
    try:
        yield running
    finally:
        running.stop()


def job_done(api: httpx.Client, job_id: str) -> dict[str, Any] | None:
    job = api.get(f"/v1/training/jobs/{job_id}").json()
    return dict(job) if job["status"] in ("succeeded", "failed") else None


def job_ids(api: httpx.Client) -> set[str]:
    return {j["id"] for j in api.get("/v1/training/jobs").json()}


def submit(api: httpx.Client, entrypoint: str, data: str | None = None) -> httpx.Response:
    spec: dict[str, Any] = {"name": "probe", "model_name": "probe", "entrypoint": entrypoint}
    if data is not None:
        spec["data"] = {"path": data}
    return api.post("/v1/training/jobs", json=spec)


def test_training_registers_a_version_with_lineage(trainer: RunningServer, roots: Roots) -> None:
    api = trainer.http
    spec = {
        "name": "nightly",
        "model_name": "trained",
        "entrypoint": "jobs/train.py",
        "parameters": {"scale": 2.0},
        "data": {"path": "blobs.csv"},
    }
    answer = api.post("/v1/training/jobs", json=spec)
    assert answer.status_code == 202, answer.text
    assert answer.json()["spec"]["entrypoint"] == "jobs/train.py"  # as given: no host path in any answer
    job = wait_for(lambda: job_done(api, answer.json()["id"]), timeout=60, what="training job to finish")
    assert job["status"] == "succeeded", job
    assert "training with scale 2.0" in job["logs_tail"]
    assert "isolated: 1 in job folder: True" in job["logs_tail"]
    assert str(roots.code) not in str(job["spec"])
    version = api.get(f"/v1/models/trained/versions/{job['version']}").json()
    lineage = version["lineage"]
    assert lineage["source"] == "training" and lineage["training_job_id"] == job["id"]
    assert lineage["code_revision"] == hashlib.sha256((roots.code / "jobs" / "train.py").read_bytes()).hexdigest()
    assert lineage["data_digest"] == hashlib.sha256((roots.data / "blobs.csv").read_bytes()).hexdigest()
    assert lineage["parameters"] == {"scale": 2.0}
    assert {"python", "onnx"} <= set(lineage["tool_versions"])
    assert version["metrics"] == {"loss": 0.125}
    assert version["reference_outputs_computed"] is True and version["sample_count"] == 2


def test_failing_entrypoint_fails_the_job_with_its_log(trainer: RunningServer) -> None:
    api = trainer.http
    answer = api.post("/v1/training/jobs", json={"name": "bad", "model_name": "never", "entrypoint": "jobs/bad.py"})
    job = wait_for(lambda: job_done(api, answer.json()["id"]), timeout=60, what="failing job to finish")
    assert job["status"] == "failed" and "exited with code 3" in job["error"]
    assert "boom: the dataset is empty" in job["logs_tail"]
    assert api.get("/v1/models/never").status_code == 404
    assert job["id"] in job_ids(api)


def test_without_a_code_root_training_is_refused_naming_the_setting(api: httpx.Client) -> None:
    before = job_ids(api)
    answer = submit(api, "demo_model/train.py")
    assert answer.status_code == 422
    assert "training.code_dirs (EDGE_CP_TRAINING__CODE_DIRS)" in answer.json()["detail"]
    assert job_ids(api) == before


def polyglot(marker: Path) -> bytes:
    """A valid ONNX model (it uploads and onnxruntime loads it) that is also a zip whose `__main__.py` writes
    `marker`: the zip is the value of a metadata entry, the last field, so the archive ends the file."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("__main__.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    entry = b"\x0a\x01k\x12" + _varint(len(archive.getvalue())) + archive.getvalue()
    return linear_model() + b"\x72" + _varint(len(entry)) + entry  # ModelProto field 14: metadata_props


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def test_an_uploaded_onnx_that_is_a_zip_never_runs(trainer: RunningServer, roots: Roots, tmp_path: Path) -> None:
    api, marker = trainer.http, tmp_path / "PWNED"
    payload = polyglot(marker)
    uploaded = api.post("/v1/models/polyglot/versions", files={"model": ("m.onnx", payload)})
    assert uploaded.status_code == 201, uploaded.text
    digest = hashlib.sha256(payload).hexdigest()
    artifact = trainer.settings.artifacts_dir / digest[:2] / digest
    assert artifact.read_bytes() == payload  # the attacker's bytes sit on the control plane's disk
    before = job_ids(api)

    for entrypoint in (str(artifact), os.path.relpath(artifact, roots.code)):  # absolute; relative with '..'
        answer = submit(api, entrypoint)
        assert answer.status_code == 422, answer.text
        assert str(trainer.settings.data_dir) not in answer.text
    (roots.code / "jobs" / "upload.py").symlink_to(artifact)  # a link to it from inside the root
    assert submit(api, "jobs/upload.py").status_code == 422
    assert job_ids(api) == before and not marker.exists()  # refused: no job, so nothing can run later

    # even copied into a code root under a .py name, it is only ever compiled as Python source
    (roots.code / "jobs" / "copied.py").write_bytes(payload)
    answer = submit(api, "jobs/copied.py")
    assert answer.status_code == 202, answer.text
    job = wait_for(lambda: job_done(api, answer.json()["id"]), timeout=60, what="the zip job to end")
    assert job["status"] == "failed" and "null bytes" in job["logs_tail"]
    assert not marker.exists()

    # control: the payload is live; `python FILE` runs it
    subprocess.run([sys.executable, "-I", str(artifact)], env=python_env(), timeout=60, check=True)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize(
    ("entrypoint", "reason"),
    [
        pytest.param("/etc/passwd", "absolute paths are refused", id="etc-passwd"),
        pytest.param("jobs/escape.py", "is not a Python source file (.py)", id="symlink-out-of-root"),
        pytest.param("jobs/folder.py", "is not a Python source file (.py)", id="directory"),
        pytest.param("jobs", "must name a .py file", id="directory-by-name"),
        pytest.param("jobs/notes.txt", "must name a .py file", id="not-py"),
        pytest.param("jobs/../../outside/secret.py", "'..' is refused", id="dotdot"),
    ],
)
def test_entrypoints_outside_registered_python_source_are_refused(
    trainer: RunningServer, roots: Roots, entrypoint: str, reason: str
) -> None:
    before = job_ids(trainer.http)
    answer = submit(trainer.http, entrypoint)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail.startswith("entrypoint ") and "training.code_dirs" in detail and reason in detail
    assert str(roots.code.parent) not in detail and "/etc" not in detail
    assert job_ids(trainer.http) == before


@pytest.mark.parametrize(
    ("field", "existing", "missing"),
    [
        pytest.param("entrypoint", "/etc/passwd", "/etc/no-such-file", id="absolute"),
        pytest.param("entrypoint", "{outside}/secret.py", "{outside}/absent.py", id="absolute-py"),
        pytest.param("entrypoint", "../outside/secret.py", "../outside/absent.py", id="dotdot"),
        pytest.param("entrypoint", "jobs/escape.py", "jobs/dangling.py", id="symlink"),
        pytest.param("data", "/etc/passwd", "/etc/no-such-file", id="data-absolute"),
        pytest.param("data", "../outside/secret.py", "../outside/absent.py", id="data-dotdot"),
        pytest.param("data", "escape.csv", "dangling.csv", id="data-symlink"),
    ],
)
def test_probing_outside_the_roots_tells_nothing(
    trainer: RunningServer, roots: Roots, field: str, existing: str, missing: str
) -> None:
    answers = []
    for probe in (existing.format(outside=roots.outside), missing.format(outside=roots.outside)):
        answer = submit(trainer.http, probe) if field == "entrypoint" else submit(trainer.http, "jobs/train.py", probe)
        answers.append((answer.status_code, answer.json()["detail"].replace(repr(probe), "'<path>'")))
    assert answers[0] == answers[1]
    assert answers[0][0] == 422
    assert str(roots.outside) not in answers[0][1]
