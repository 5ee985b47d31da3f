"""The `tensorrt-plan` kind: an ONNX graph parsed and built into a serialised TensorRT plan on this GPU.

This is the only module that imports `tensorrt`; importing it fails with ImportError where TensorRT is not
installed, which the caller turns into "this builder cannot build plans". It applies the settings decided in
`tensorrt_plan.py` (flags, workspace, profiles, hardware compatibility) and must never decide them itself, nor
report a plan it did not get from `build_serialized_network`.

int8 plans use explicit quantisation: the caller passes the QDQ graph made by `ort_quantize.py`, so no
IInt8 calibrator (deprecated in TensorRT 10) and no device buffers are needed here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import tensorrt as trt

from model_builds.tensorrt_plan import BuilderSettings


class TensorRTFailure(RuntimeError):
    """TensorRT could not parse or build the network; the text carries TensorRT's own messages."""


def version() -> str:
    return str(trt.__version__)


class _Logger(trt.ILogger):  # type: ignore[misc]  # tensorrt ships no type hints
    """Forwards TensorRT's warnings and errors to the build log."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        trt.ILogger.__init__(self)
        self._sink = sink

    def log(self, severity: object, msg: str) -> None:
        if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR, trt.ILogger.Severity.WARNING):
            self._sink(f"tensorrt: {msg}")


def _network(builder: object, logger: object, onnx_path: Path) -> tuple[object, object]:
    """(network, parser): the parser is returned so it outlives the network it filled."""
    # Explicit batch is the only mode in TensorRT 10 (the flag is accepted and ignored); 8.x needs it set.
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)  # type: ignore[attr-defined]
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise TensorRTFailure(f"the ONNX parser refused the model: {errors or 'no reason given'}")
    return network, parser


def _config(builder: object, network: object, settings: BuilderSettings) -> object:
    config = builder.create_builder_config()  # type: ignore[attr-defined]
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    for name in settings.flags_on:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in settings.flags_off:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if settings.profiles:
        profile = builder.create_optimization_profile()  # type: ignore[attr-defined]
        for name, shape in settings.profiles.items():
            profile.set_shape(name, shape.min, shape.opt, shape.max)
        config.add_optimization_profile(profile)
    if settings.compatibility_level is not None:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, settings.compatibility_level)
    return config


def build_plan(onnx_path: Path, settings: BuilderSettings, log: Callable[[str], None]) -> bytes:
    """Parse `onnx_path` and build it with `settings`; the serialised plan's bytes."""
    logger = _Logger(log)
    try:
        builder = trt.Builder(logger)
        network, _parser = _network(builder, logger, onnx_path)
        config = _config(builder, network, settings)
        serialized = builder.build_serialized_network(network, config)
    except TensorRTFailure:
        raise
    except Exception as exc:  # TensorRT raises RuntimeError/TypeError from its bindings
        raise TensorRTFailure(f"TensorRT failed: {exc}") from exc
    if serialized is None:
        raise TensorRTFailure("TensorRT built no plan (build_serialized_network returned None; see the log)")
    return bytes(memoryview(serialized))
