"""The project's terms, spelled once: artifact kinds, precisions, channels, execution providers, MQTT versions.

The control plane, the builders and the agent all say "tensorrt-plan", "int8", "ansible" or
"TensorrtExecutionProvider"; they import the word from here instead of writing the string. Values are the wire
spellings (StrEnum: str() and f-strings give the value, not "Precision.FP16"), so a model field typed with one of
them reads, writes and prints exactly what it did as a string.
This module must never import anything but the standard library.
"""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """Numeric precision a model runs at."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class ArtifactKind(StrEnum):
    """What a build produces: portable ONNX (at three precisions) or a TensorRT engine for one hardware key."""

    ONNX = "onnx"
    ONNX_FP16 = "onnx-fp16"
    ONNX_INT8_QDQ = "onnx-int8-qdq"
    TENSORRT_PLAN = "tensorrt-plan"


class Channel(StrEnum):
    """How a device receives its desired state: from the broker itself (mqtt) or copied by a playbook (ansible)."""

    MQTT = "mqtt"
    ANSIBLE = "ansible"


class ExecutionProvider(StrEnum):
    """onnxruntime's names for where a session runs, in the spelling onnxruntime itself uses."""

    TENSORRT = "TensorrtExecutionProvider"
    CUDA = "CUDAExecutionProvider"
    CPU = "CPUExecutionProvider"


class MqttProtocol(StrEnum):
    """The MQTT version a client speaks; both the agent and the control plane are configured with it."""

    AUTO = "auto"  # MQTT 5 where the broker offers it, else 3.1.1
    V311 = "3.1.1"
    V5 = "5"


# GPU providers in the order an agent or a builder prefers them.
GPU_PROVIDERS: tuple[ExecutionProvider, ...] = (ExecutionProvider.TENSORRT, ExecutionProvider.CUDA)
