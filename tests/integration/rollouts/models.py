"""ONNX versions for the rollout fault tests, built with onnx.helper (no torch), and their upload + build.

Every version takes X [N, 16] and answers Y [N, 16], so one load generator can drive any of them:
- `linear(seed)`: Y = X @ W + B, a good version (v1 and v2 differ by their weights);
- `slow(layers)`: X lifted to 512 features, pushed through `layers` MatMuls on one shared 512x512 orthogonal weight
  and projected back, so its p99 is many times the linear one's while staying numerically stable;
- `wide(hidden)`: two MatMuls through a wide hidden layer, so the artifact weighs megabytes (a download long enough
  to be cut in the middle);
- `wrong_reference_samples`: samples whose `output:Y` are deliberately wrong. The control plane re-proves every
  artifact against the version's reference outputs, so its build is rejected and it never reaches a device.
"""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support import wait_for

FEATURES = 16
SAMPLE_X = (np.arange(3 * FEATURES, dtype=np.float32).reshape(3, FEATURES) / 10).astype(np.float32)


def _model(nodes: list[onnx.NodeProto], initializers: list[np.ndarray], names: list[str]) -> bytes:
    graph = helper.make_graph(
        nodes,
        "rollout-test",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", FEATURES])],
        initializer=[numpy_helper.from_array(a, n) for a, n in zip(initializers, names, strict=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def linear(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    w = rng.normal(scale=0.3, size=(FEATURES, FEATURES)).astype(np.float32)
    b = rng.normal(scale=0.1, size=(FEATURES,)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"])]
    return _model(nodes, [w, b], ["W", "B"])


def slow(layers: int = 48, width: int = 512) -> bytes:
    rng = np.random.default_rng(7)
    lift = rng.normal(scale=0.25, size=(FEATURES, width)).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(width, width)))
    shared = q.astype(np.float32)  # orthogonal: the norm neither explodes nor vanishes over the chain
    drop = rng.normal(scale=0.06, size=(width, FEATURES)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["X", "LIFT"], ["H0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"H{i}", "Q"], [f"H{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"H{layers}", "DROP"], ["Y"]))
    return _model(nodes, [lift, shared, drop], ["LIFT", "Q", "DROP"])


def wide(hidden: int = 65536) -> bytes:
    """About hidden * 16 * 2 * 4 bytes of weights (8 MiB at the default)."""
    rng = np.random.default_rng(11)
    up = rng.normal(scale=0.25, size=(FEATURES, hidden)).astype(np.float32)
    down = rng.normal(scale=0.25 / np.sqrt(hidden), size=(hidden, FEATURES)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["X", "UP"], ["H"]), helper.make_node("MatMul", ["H", "DOWN"], ["Y"])]
    return _model(nodes, [up, down], ["UP", "DOWN"])


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def inputs_only() -> bytes:
    """Samples with inputs only: the control plane computes the reference outputs from the source."""
    return npz(**{"input:X": SAMPLE_X})


def wrong_reference_samples() -> bytes:
    return npz(**{"input:X": SAMPLE_X, "output:Y": np.full((3, FEATURES), 123.0, dtype=np.float32)})


FINISHED = ("succeeded", "rejected", "failed")


def push_and_build(api: httpx.Client, name: str, model: bytes, samples: bytes, timeout: float = 90) -> dict[str, Any]:
    """Upload a version, build it for cpu-x86_64 and wait; the version's succeeded build (BuildOut)."""
    final = upload_and_build(api, name, model, samples, timeout)
    assert final["status"] == "succeeded", final
    return final


def upload_and_build(api: httpx.Client, name: str, model: bytes, samples: bytes, timeout: float = 90) -> dict[str, Any]:
    """Upload a version, build it for cpu-x86_64 and wait; the build as it ended (BuildOut), whatever its status."""
    answer = api.post(f"/v1/models/{name}/versions", files={"model": ("m.onnx", model), "samples": ("s.npz", samples)})
    assert answer.status_code == 201, answer.text
    version = answer.json()["version"]
    builds = api.post(f"/v1/models/{name}/versions/{version}/builds", json={"targets": ["cpu-x86_64"]})
    assert builds.status_code == 202, builds.text
    build_id = builds.json()["builds"][0]["id"]
    final: dict[str, Any] = wait_for(
        lambda: (b := api.get(f"/v1/builds/{build_id}").json())["status"] in FINISHED and b,
        timeout=timeout,
        what=f"build of {name} v{version}",
    )
    return final
