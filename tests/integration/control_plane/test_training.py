"""Training with the local backend: a real subprocess entrypoint; success registers a version with lineage,
failure is reported with the log tail."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import wait_for

pytestmark = pytest.mark.integration

ENTRYPOINT = """
import argparse, json, pathlib
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


def job_done(api: httpx.Client, job_id: str) -> dict[str, Any] | None:
    job = api.get(f"/v1/training/jobs/{job_id}").json()
    return dict(job) if job["status"] in ("succeeded", "failed") else None


def test_training_registers_a_version_with_lineage(api: httpx.Client, tmp_path: Path) -> None:
    entry = tmp_path / "train.py"
    entry.write_text(ENTRYPOINT)
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    spec = {
        "name": "nightly",
        "model_name": "trained",
        "entrypoint": str(entry),
        "parameters": {"scale": 2.0},
        "data": {"path": str(data)},
    }
    answer = api.post("/v1/training/jobs", json=spec)
    assert answer.status_code == 202, answer.text
    job = wait_for(lambda: job_done(api, answer.json()["id"]), timeout=60, what="training job to finish")
    assert job["status"] == "succeeded", job
    assert "training with scale 2.0" in job["logs_tail"]
    version = api.get(f"/v1/models/trained/versions/{job['version']}").json()
    lineage = version["lineage"]
    assert lineage["source"] == "training" and lineage["training_job_id"] == job["id"]
    assert lineage["code_revision"] == hashlib.sha256(entry.read_bytes()).hexdigest()
    assert lineage["data_digest"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert lineage["parameters"] == {"scale": 2.0}
    assert {"python", "onnx"} <= set(lineage["tool_versions"])
    assert version["metrics"] == {"loss": 0.125}
    assert version["reference_outputs_computed"] is True and version["sample_count"] == 2


def test_failing_entrypoint_fails_the_job_with_its_log(api: httpx.Client, tmp_path: Path) -> None:
    entry = tmp_path / "bad.py"
    entry.write_text(FAILING)
    answer = api.post("/v1/training/jobs", json={"name": "bad", "model_name": "never", "entrypoint": str(entry)})
    job = wait_for(lambda: job_done(api, answer.json()["id"]), timeout=60, what="failing job to finish")
    assert job["status"] == "failed" and "exited with code 3" in job["error"]
    assert "boom: the dataset is empty" in job["logs_tail"]
    assert api.get("/v1/models/never").status_code == 404
    assert job["id"] in [j["id"] for j in api.get("/v1/training/jobs").json()]


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        pytest.param({"name": "x", "model_name": "m", "entrypoint": "/no/such/file.py"}, "is not a file", id="no-file"),
        pytest.param(
            {"name": "x", "model_name": "m", "entrypoint": "t.py", "backend": "slurm"}, "backend", id="backend"
        ),
        pytest.param({"name": "x", "model_name": "../m", "entrypoint": "t.py"}, "model_name", id="bad-model-name"),
    ],
)
def test_bad_specs_are_refused(api: httpx.Client, spec: dict[str, Any], detail: str) -> None:
    answer = api.post("/v1/training/jobs", json=spec)
    assert answer.status_code == 422
    assert detail in str(answer.json()["detail"])
