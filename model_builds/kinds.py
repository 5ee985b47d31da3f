"""The names every part of the build toolchain shares: artifact kinds and numeric precisions.

It exists so the catalog, the planner, the builders and the control plane spell a kind one way. It must never
import anything heavier than the standard library.
"""

from __future__ import annotations

from enum import Enum


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class ArtifactKind(str, Enum):
    ONNX = "onnx"
    ONNX_FP16 = "onnx-fp16"
    ONNX_INT8_QDQ = "onnx-int8-qdq"
    TENSORRT_PLAN = "tensorrt-plan"


# The precision a kind has when none is asked for, and the precisions it can be built at.
NATURAL_PRECISION: dict[ArtifactKind, Precision] = {
    ArtifactKind.ONNX: Precision.FP32,
    ArtifactKind.ONNX_FP16: Precision.FP16,
    ArtifactKind.ONNX_INT8_QDQ: Precision.INT8,
    ArtifactKind.TENSORRT_PLAN: Precision.FP32,
}
KIND_PRECISIONS: dict[ArtifactKind, tuple[Precision, ...]] = {
    ArtifactKind.ONNX: (Precision.FP32,),
    ArtifactKind.ONNX_FP16: (Precision.FP16,),
    ArtifactKind.ONNX_INT8_QDQ: (Precision.INT8,),
    ArtifactKind.TENSORRT_PLAN: (Precision.FP32, Precision.FP16, Precision.INT8),
}
ONNX_KINDS = (ArtifactKind.ONNX, ArtifactKind.ONNX_FP16, ArtifactKind.ONNX_INT8_QDQ)
