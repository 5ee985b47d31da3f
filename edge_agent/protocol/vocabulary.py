"""The project's terms, spelled once: artifact kinds, precisions, delivery channels and execution providers.

The control plane, the builders and the agent all say "tensorrt-plan", "int8", "ansible" or
"TensorrtExecutionProvider"; they import the word from here instead of writing the string. Values are the wire
spellings (str enums), so a model field typed with one of them reads and writes exactly what it did as a string.
This module must never import anything but the standard library.
"""

from __future__ import annotations

from enum import Enum


class Precision(str, Enum):
    """Numeric precision a model runs at."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class ArtifactKind(str, Enum):
    """What a build produces: portable ONNX (at three precisions) or a TensorRT engine for one hardware key."""

    ONNX = "onnx"
    ONNX_FP16 = "onnx-fp16"
    ONNX_INT8_QDQ = "onnx-int8-qdq"
    TENSORRT_PLAN = "tensorrt-plan"


class Channel(str, Enum):
    """How a device receives its desired state: from the broker itself (mqtt) or copied by a playbook (ansible)."""

    MQTT = "mqtt"
    ANSIBLE = "ansible"


class ExecutionProvider(str, Enum):
    """onnxruntime's names for where a session runs, in the spelling onnxruntime itself uses."""

    TENSORRT = "TensorrtExecutionProvider"
    CUDA = "CUDAExecutionProvider"
    CPU = "CPUExecutionProvider"


# GPU providers in the order an agent or a builder prefers them.
GPU_PROVIDERS: tuple[ExecutionProvider, ...] = (ExecutionProvider.TENSORRT, ExecutionProvider.CUDA)
