"""Which onnxruntime execution providers to ask for, and with which options. Pure.

onnxruntime-gpu lists TensorRT/CUDA providers even on a host with no GPU; asking for them there only produces
warnings and a silent CPU fallback, so GPU providers are chosen only when a GPU was detected. A TensorRT plan
(an ONNX model holding one EPContext node) runs on the TensorRT EP and nowhere else, so it gets exactly that one.

Provider options are resolved by the wire contract's one resolver (`edge_agent.protocol.provider_options`, the
agent's step: `{data_dir}`, this device's hardware, hardware-keyed cache directories). Never touches the file
system.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from edge_agent.protocol.provider_options import CACHE_DIR_OPTIONS
from edge_agent.protocol.vocabulary import GPU_PROVIDERS, ArtifactKind, ExecutionProvider


def choose_providers(
    gpu_present: bool, available: Sequence[str], requested: Sequence[ExecutionProvider] = ()
) -> list[ExecutionProvider]:
    """Providers best first, always ending with CPU; `requested` (from the desired state) narrows the choice."""
    wanted = list(requested) if requested else list(GPU_PROVIDERS)
    chosen = [
        p for p in wanted if p in available and p != ExecutionProvider.CPU and (gpu_present or p not in GPU_PROVIDERS)
    ]
    return [*chosen, ExecutionProvider.CPU]


def providers_for(
    kind: ArtifactKind, gpu_present: bool, available: Sequence[str], requested: Sequence[ExecutionProvider] = ()
) -> list[ExecutionProvider]:
    """Providers for an artifact kind: a TensorRT plan gets exactly the TensorRT EP (an EPContext node cannot
    run anywhere else); every other kind gets `choose_providers`."""
    if kind == ArtifactKind.TENSORRT_PLAN:
        return [ExecutionProvider.TENSORRT]
    return choose_providers(gpu_present, available, requested)


def cache_dirs(options: Mapping[str, Mapping[str, str]]) -> list[Path]:
    """The directories named by resolved cache options (the adapter creates them before loading)."""
    return [Path(values[name]) for values in options.values() for name in CACHE_DIR_OPTIONS if values.get(name)]
