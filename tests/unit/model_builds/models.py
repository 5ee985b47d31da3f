"""Small real ONNX models for the build tests, made with onnx.helper (no torch: fast to import and build)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_builds.onnx_model import save_npz
from model_builds.ort_runtime import run

OPSET = 17


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def mlp(seed: int = 0, scale: float = 1.0) -> onnx.ModelProto:
    """The demo model's shape: 8 -> 64 -> 64 -> 3, batch dynamic."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w1", rng.standard_normal((8, 64)) * 0.35 * scale),
        _init("b1", rng.standard_normal(64) * 0.1),
        _init("w2", rng.standard_normal((64, 64)) * 0.18 * scale),
        _init("b2", rng.standard_normal(64) * 0.1),
        _init("w3", rng.standard_normal((64, 3)) * 0.18),
        _init("b3", rng.standard_normal(3) * 0.1),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "w3"], ["m3"]),
        helper.make_node("Add", ["m3", "b3"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def convnet(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-ReLU x2, global pooling and a 5-class head on 3x16x16 images, batch dynamic."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("c1", rng.standard_normal((8, 3, 3, 3)) * 0.3),
        _init("c1b", rng.standard_normal(8) * 0.1),
        _init("c2", rng.standard_normal((16, 8, 3, 3)) * 0.15),
        _init("c2b", rng.standard_normal(16) * 0.1),
        _init("fc", rng.standard_normal((16, 5)) * 0.5),
        _init("fcb", rng.standard_normal(5) * 0.1),
        numpy_helper.from_array(np.array([-1, 16], dtype=np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Conv", ["img", "c1", "c1b"], ["y1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y1"], ["z1"]),
        helper.make_node("Conv", ["z1", "c2", "c2b"], ["y2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["y2"], ["z2"]),
        helper.make_node("GlobalAveragePool", ["z2"], ["p"]),
        helper.make_node("Reshape", ["p", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["m"]),
        helper.make_node("Add", ["m", "fcb"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def write(model: onnx.ModelProto, folder: Path, rows: int = 16, seed: int = 1) -> tuple[Path, Path]:
    """(source.onnx, samples.npz with inputs and the source's reference outputs) in `folder`."""
    onnx.checker.check_model(model)
    source = folder / "source.onnx"
    onnx.save(model, str(source))
    shape = [d.dim_value or rows for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    inputs = {model.graph.input[0].name: rng.standard_normal(shape).astype(np.float32)}
    samples = folder / "samples.npz"
    save_npz(samples, inputs, run(source, inputs))
    return source, samples
