"""The `onnx-fp16` kind: weights and compute in float16, inputs and outputs kept float32.

Keeping the IO in float32 (`keep_io_types=True`) means the device feeds and reads the same arrays whatever the
precision, and the self-test compares like with like. It must never change the graph's IO names or shapes.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxconverter_common import float16  # type: ignore[import-untyped]


class Fp16Failure(RuntimeError):
    """onnxconverter-common could not convert the model; the text says why."""


def convert_fp16(source: Path, destination: Path) -> None:
    """Write `source` converted to float16 compute with float32 inputs and outputs."""
    try:
        model = onnx.load(str(source))
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
        onnx.save(converted, str(destination))
    except Exception as exc:  # the converter raises assorted types on unsupported graphs
        raise Fp16Failure(f"float16 conversion failed: {exc}") from exc
