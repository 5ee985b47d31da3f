"""What the build toolchain knows of each artifact kind: its natural precision and the precisions it builds at.

The words themselves (ArtifactKind, Precision) live in the wire contract, edge_agent/protocol/vocabulary.py, and are
imported from there. It must never import anything heavier than the standard library.
"""

from __future__ import annotations

from edge_agent.protocol.vocabulary import ArtifactKind, Precision

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
