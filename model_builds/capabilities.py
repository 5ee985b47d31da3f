"""What this host can build, and why not the rest: the builder's side of "a build waits for a matching builder".

ONNX kinds build anywhere onnxruntime runs; a TensorRT plan only where `tensorrt` imports AND a GPU is present,
and only for that GPU's compute capability and that TensorRT version (a plan is tied to both). It must never
claim a kind it cannot build: `reasons` says, for each kind left out, why.
"""

from __future__ import annotations

import importlib.util
import socket
import uuid
from collections.abc import Callable

from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.hardware import HostHardware, detect_host
from model_builds.kinds import ONNX_KINDS
from model_builds.protocol import BuilderInfo


def tensorrt_importable() -> bool:
    """Whether `import tensorrt` would find the package (checked without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def builder_info(builder_id: str, hostname: str, host: HostHardware, has_tensorrt: bool) -> BuilderInfo:
    """Pure: the kinds this host builds given what was detected, with the reason for each left out."""
    reasons: list[str] = []
    kinds: list[ArtifactKind] = list(ONNX_KINDS)
    if not has_tensorrt:
        reasons.append("tensorrt-plan: the tensorrt package is not installed (pip install tensorrt on a GPU host)")
    elif not host.gpu_present or host.compute_capability is None:
        reasons.append("tensorrt-plan: no NVIDIA GPU detected (nvidia-smi or /etc/nv_tegra_release)")
    elif host.tensorrt_version is None:
        reasons.append("tensorrt-plan: tensorrt imports but its version is unknown (package metadata missing)")
    else:
        kinds.append(ArtifactKind.TENSORRT_PLAN)
    return BuilderInfo(
        builder_id=builder_id,
        hostname=hostname,
        kinds=tuple(kinds),
        gpu_class=host.gpu_class,
        compute_capability=host.compute_capability,
        tensorrt_version=host.tensorrt_version if has_tensorrt else None,
        gpu_name=host.gpu_name,
        reasons=tuple(reasons),
    )


def detect_builder(
    builder_id: str | None = None,
    detect: Callable[[], HostHardware] = detect_host,
    has_tensorrt: Callable[[], bool] = tensorrt_importable,
) -> BuilderInfo:
    """This host as a builder (the id defaults to `HOSTNAME-RANDOM`)."""
    hostname = socket.gethostname()
    return builder_info(builder_id or f"{hostname}-{uuid.uuid4().hex[:8]}", hostname, detect(), has_tensorrt())
