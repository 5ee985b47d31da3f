"""Test builders for the agent suites: tiny ONNX models, self-test archives, signed desired states, configs.

Models are built with onnx.helper (Y = X @ W + B, dynamic batch), no torch needed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from edge_agent.protocol import (
    ArtifactChoice,
    ArtifactRef,
    DesiredState,
    HardwareKey,
    ModelAssignment,
    SelfTestSpec,
    SignedDesiredState,
    Signer,
)
from edge_agent.protocol.vocabulary import ArtifactKind

IN_FEATURES = 4
OUT_FEATURES = 2
SAMPLE = np.arange(3 * IN_FEATURES, dtype=np.float32).reshape(3, IN_FEATURES) / 10


def weights(version: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(version)
    return (
        rng.normal(size=(IN_FEATURES, OUT_FEATURES)).astype(np.float32),
        rng.normal(size=(OUT_FEATURES,)).astype(np.float32),
    )


def write_model(path: Path, w: np.ndarray, b: np.ndarray) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"])],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", IN_FEATURES])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", OUT_FEATURES])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def write_selftest(path: Path, w: np.ndarray, b: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez(handle, **{"input:X": SAMPLE, "output:Y": SAMPLE @ w + b})
    return path


def expected_output(version: int, x: np.ndarray = SAMPLE) -> np.ndarray:
    w, b = weights(version)
    return x @ w + b


def artifact(path: Path, url: str | None = None) -> ArtifactRef:
    data = path.read_bytes()
    return ArtifactRef(url=url or path.as_uri(), sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def build_version(
    root: Path,
    version: int,
    *,
    bad: bool = False,
    padding: int = 0,
    base_url: str | None = None,
    shift: float = 0.0,
) -> ModelAssignment:
    """Files for model `lin` v`version` under `root`, and its assignment (file:// or under `base_url`).

    `bad`: the model's weights differ from the reference outputs (self-test fails).
    `shift`: the weights differ by this much (a lower-precision build: passes only with looser tolerances).
    `padding`: pad the model file with a large unused initializer (for download tests).
    """
    w, b = weights(version)
    model_w = w + 1.0 if bad else w + shift
    suffix = "-bad" if bad else (f"-shift{shift}" if shift else "")
    model_path = root / f"lin-v{version}{suffix}.onnx"
    write_model(model_path, model_w, b)
    if padding:
        _pad(model_path, padding)
    test_path = write_selftest(root / f"lin-v{version}-selftest.npz", w, b)

    def url(path: Path) -> str | None:
        return f"{base_url}/{path.name}" if base_url else None

    return ModelAssignment(
        name="lin",
        version=version,
        build_id=f"b{version}{'bad' if bad else ''}",
        target="cpu-x86_64",
        artifact=artifact(model_path, url(model_path)),
        selftest=SelfTestSpec(artifact=artifact(test_path, url(test_path))),
    )


AMPERE_PLAN_KEY = HardwareKey(gpu_class="dgpu-ampere", compute_capability="8.6", tensorrt_version="10.3.0")


def with_plan(
    onnx_build: ModelAssignment,
    key: HardwareKey | None = AMPERE_PLAN_KEY,
    *,
    fallback: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ModelAssignment:
    """`onnx_build` as the control plane sends it to a GPU class with a plan: a `tensorrt-plan` primary keyed by
    `key`, and `onnx_build` as the fallback (self-test tolerances `atol`/`rtol`).

    The plan's URL names a file that does not exist: an agent that tries to download it fails the apply.
    """
    plan = ArtifactRef(url=f"file:///nonexistent/lin-v{onnx_build.version}-plan.onnx", sha256="ab" * 32, size=4096)
    choice = ArtifactChoice(
        build_id=onnx_build.build_id, artifact_kind="onnx", artifact=onnx_build.artifact, atol=atol, rtol=rtol
    )
    return onnx_build.model_copy(
        update={
            "build_id": f"{onnx_build.build_id}-plan",
            "target": key.gpu_class if key else "dgpu-ampere",
            "artifact_kind": ArtifactKind.TENSORRT_PLAN,
            "artifact": plan,
            "hardware_key": key,
            "fallback": choice if fallback else None,
        }
    )


def _pad(path: Path, size: int) -> None:
    model = onnx.load(str(path))
    filler = np.frombuffer(np.random.default_rng(0).bytes(size), dtype=np.uint8)
    model.graph.initializer.append(numpy_helper.from_array(filler, "unused_padding"))
    path.write_bytes(model.SerializeToString())


def signed(
    signer: Signer, generation: int, models: list[ModelAssignment], device_id: str = "dev-1"
) -> SignedDesiredState:
    doc = DesiredState(
        device_id=device_id, generation=generation, issued_at=datetime(2025, 1, 1, tzinfo=UTC), models=models
    )
    return signer.sign_desired(doc)


def write_config(path: Path, data_dir: Path, public_key: str, **overrides: Any) -> Path:
    config: dict[str, Any] = {
        "device_id": "dev-1",
        "labels": {"site": "factory-a"},
        "data_dir": str(data_dir),
        "control_plane_public_key": public_key,
        "telemetry_interval_s": 1,
        "download": {"timeout_s": 10, "max_attempts": 5},
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path
