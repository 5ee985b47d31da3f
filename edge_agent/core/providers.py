"""Which onnxruntime execution providers to ask for, from the detected hardware. Pure.

onnxruntime-gpu lists TensorRT/CUDA providers even on a host with no GPU; asking for them there only produces
warnings and a silent CPU fallback, so GPU providers are chosen only when a GPU was detected.
"""

from __future__ import annotations

from collections.abc import Sequence

CPU = "CPUExecutionProvider"
GPU_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_providers(gpu_present: bool, available: Sequence[str], requested: Sequence[str] = ()) -> list[str]:
    """Providers best first, always ending with CPU; `requested` (from the desired state) narrows the choice."""
    wanted = list(requested) if requested else list(GPU_PREFERENCE)
    chosen = [p for p in wanted if p in available and p != CPU and (gpu_present or p not in GPU_PREFERENCE)]
    return [*chosen, CPU]
