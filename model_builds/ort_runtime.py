"""The one place the build toolchain talks to ONNX Runtime: run a model, optimise a graph, report versions.

It must never be imported for its side effects elsewhere: onnxruntime is heavy and optional on some hosts.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort


class RuntimeFailure(RuntimeError):
    """ONNX Runtime could not load or run a model; the text is ONNX Runtime's reason."""


class OptimizationLevel(str, Enum):
    BASIC = "basic"
    EXTENDED = "extended"


_LEVELS = {
    OptimizationLevel.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    OptimizationLevel.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def version() -> str:
    return str(ort.__version__)


def _session(path: Path, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise RuntimeFailure(f"onnxruntime cannot load the model: {exc}") from exc


def run(path: Path, feeds: Mapping[str, npt.NDArray[np.generic]]) -> dict[str, npt.NDArray[np.generic]]:
    """Run the model once on CPU; outputs by name."""
    session = _session(path)
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, dict(feeds))
    except Exception as exc:
        raise RuntimeFailure(f"onnxruntime cannot run the model on the samples: {exc}") from exc
    return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}


def optimise(source: Path, destination: Path, level: OptimizationLevel) -> None:
    """Write the graph optimised to a portable level (never ENABLE_ALL: that bakes in hardware-specific ops)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[level]
    options.optimized_model_filepath = str(destination)
    _session(source, options)
    if not destination.is_file():
        raise RuntimeFailure("onnxruntime did not write the optimised model")
