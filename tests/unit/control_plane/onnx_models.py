"""Tiny ONNX models and sample files made with onnx.helper, for the control-plane tests."""

from __future__ import annotations

import io

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

W = np.array([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5], [0.0, 1.0, 1.0], [-1.0, 0.5, 2.0]], dtype=np.float32)
B = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def linear_model(opset: int = 17, weight_scale: float = 1.0, bias_shift: float = 0.0) -> bytes:
    """Y = X @ W + B with a dynamic batch dimension: X [N, 4] -> Y [N, 3]. `weight_scale`/`bias_shift` make a
    model of the same signature that answers differently (a tampered artifact)."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"])]
    weights = numpy_helper.from_array((W * weight_scale).astype(np.float32), "W")
    bias = numpy_helper.from_array((B + bias_shift).astype(np.float32), "B")
    graph = helper.make_graph(nodes, "linear", [x], [y], initializer=[weights, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def linear_samples(with_outputs: bool = True, batch: int = 3) -> bytes:
    x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4) / 10
    arrays = {"input:X": x}
    if with_outputs:
        arrays["output:Y"] = x @ W + B
    return npz_bytes(**arrays)
