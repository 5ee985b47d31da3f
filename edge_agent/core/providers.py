"""Which onnxruntime execution providers to ask for, and with which options. Pure.

onnxruntime-gpu lists TensorRT/CUDA providers even on a host with no GPU; asking for them there only produces
warnings and a silent CPU fallback, so GPU providers are chosen only when a GPU was detected. A TensorRT plan
(an ONNX model holding one EPContext node) runs on the TensorRT EP and nowhere else, so it gets exactly that one.

Provider options arrive as templates: `{data_dir}` (the agent's data directory) and the hardware placeholders
`{gpu_class}`, `{compute_capability}`, `{tensorrt_version}` are filled in from this device. An engine or timing
cache path is always keyed by this device's hardware, so a cache written on other hardware (another GPU, another
TensorRT release after an upgrade) is never deserialised here: a path template without all three hardware
placeholders gets a hardware-named subdirectory. Never touches the file system.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from edge_agent.core.artifacts import TENSORRT_EP, TENSORRT_PLAN
from edge_agent.protocol import HardwareFacts

CPU = "CPUExecutionProvider"
GPU_PREFERENCE = (TENSORRT_EP, "CUDAExecutionProvider")
# Options naming a directory that holds hardware-specific files (engines, timing caches).
CACHE_DIR_OPTIONS = ("trt_engine_cache_path", "trt_timing_cache_path")
HARDWARE_PLACEHOLDERS = ("{gpu_class}", "{compute_capability}", "{tensorrt_version}")


def choose_providers(gpu_present: bool, available: Sequence[str], requested: Sequence[str] = ()) -> list[str]:
    """Providers best first, always ending with CPU; `requested` (from the desired state) narrows the choice."""
    wanted = list(requested) if requested else list(GPU_PREFERENCE)
    chosen = [p for p in wanted if p in available and p != CPU and (gpu_present or p not in GPU_PREFERENCE)]
    return [*chosen, CPU]


def providers_for(kind: str, gpu_present: bool, available: Sequence[str], requested: Sequence[str] = ()) -> list[str]:
    """Providers for an artifact kind: a TensorRT plan gets exactly the TensorRT EP (an EPContext node cannot
    run anywhere else); every other kind gets `choose_providers`."""
    if kind == TENSORRT_PLAN:
        return [TENSORRT_EP]
    return choose_providers(gpu_present, available, requested)


def hardware_tag(facts: HardwareFacts) -> str:
    """A directory name that differs whenever the hardware an engine depends on differs."""
    cc = f"sm{facts.compute_capability.replace('.', '')}" if facts.compute_capability else "nogpu"
    return f"{facts.gpu_class}-{cc}-trt{facts.tensorrt_version or 'none'}"


def resolve_option(name: str, value: str, data_dir: Path, facts: HardwareFacts) -> str:
    """One provider option with its placeholders filled in; cache directories always end up hardware-keyed."""
    keyed = all(placeholder in value for placeholder in HARDWARE_PLACEHOLDERS)
    resolved = (
        value.replace("{data_dir}", str(data_dir))
        .replace("{gpu_class}", facts.gpu_class)
        .replace("{compute_capability}", facts.compute_capability or "none")
        .replace("{tensorrt_version}", facts.tensorrt_version or "none")
    )
    if name not in CACHE_DIR_OPTIONS:
        return resolved
    path = data_dir / resolved  # a relative cache path lives in the data directory; an absolute one stays
    return str(path if keyed else path / hardware_tag(facts))


def resolve_provider_options(
    options: Mapping[str, Mapping[str, str]], data_dir: Path, facts: HardwareFacts
) -> dict[str, dict[str, str]]:
    """Every provider's options with `{data_dir}` and the hardware placeholders substituted."""
    return {
        provider: {name: resolve_option(name, value, data_dir, facts) for name, value in values.items()}
        for provider, values in options.items()
    }


def cache_dirs(options: Mapping[str, Mapping[str, str]]) -> list[Path]:
    """The directories named by resolved cache options (the adapter creates them before loading)."""
    return [Path(values[name]) for values in options.values() for name in CACHE_DIR_OPTIONS if values.get(name)]
