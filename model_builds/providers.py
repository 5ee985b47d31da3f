"""ONNX Runtime provider options for an artifact on a device: the class's options, made concrete.

The class file holds templates; the precision of the artifact sets TensorRT's fp16/int8 flags, and the device's
compute capability and TensorRT version go into the engine cache path, so an engine built on one GPU or
TensorRT release is never loaded by another. Pure; it must never look at the host itself.
"""

from __future__ import annotations

from edge_agent.protocol.vocabulary import Precision
from model_builds.catalog import TargetSpec

TENSORRT_EP = "TensorrtExecutionProvider"


def resolve_provider_options(
    target: TargetSpec,
    precision: Precision,
    data_dir: str,
    compute_capability: str | None,
    tensorrt_version: str | None,
) -> list[tuple[str, dict[str, str]]]:
    """(provider, options) in the class's preference order, templates filled in."""
    values = {
        "data_dir": data_dir.rstrip("/"),
        "gpu_class": target.name,
        "compute_capability": compute_capability or "none",
        "tensorrt_version": tensorrt_version or "none",
    }
    resolved: list[tuple[str, dict[str, str]]] = []
    for provider in target.runtime.providers:
        options = {k: v.format(**values) for k, v in target.provider_options.get(provider, {}).items()}
        if provider == TENSORRT_EP:
            options["trt_fp16_enable"] = "true" if precision in (Precision.FP16, Precision.INT8) else "false"
            options["trt_int8_enable"] = "true" if precision is Precision.INT8 else "false"
        resolved.append((provider, options))
    return resolved
