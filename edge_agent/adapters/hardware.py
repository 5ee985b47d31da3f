"""Hardware detection for the agent: the facts it reports, from the build toolchain's one detector.

Detection itself lives in `model_builds/hardware.py` so the agent and the builders read a host one way; this
module only turns what it found into the wire's `HardwareFacts` and keeps the names the agent imports. It must
never parse nvidia-smi or the Jetson files itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.protocol import HardwareFacts
from model_builds.hardware import (
    COMPUTE_CAPABILITY_CLASSES,
    DEVICE_TREE_MODEL,
    NVIDIA_SMI_QUERY,
    TEGRA_RELEASE,
    CommandRunner,
    FileReader,
    GpuInfo,
    VersionProbe,
    class_for_compute_capability,
    cpu_class,
    detect_host,
    installed_tensorrt_version,
    jetson_class,
    parse_nvidia_smi,
    parse_tegra_release,
    read_text,
    run_command,
)

__all__ = [
    "COMPUTE_CAPABILITY_CLASSES",
    "DEVICE_TREE_MODEL",
    "NVIDIA_SMI_QUERY",
    "TEGRA_RELEASE",
    "CommandRunner",
    "Detected",
    "FileReader",
    "GpuInfo",
    "class_for_compute_capability",
    "cpu_class",
    "detect_hardware",
    "jetson_class",
    "parse_nvidia_smi",
    "parse_tegra_release",
    "read_text",
    "run_command",
]


@dataclass(frozen=True)
class Detected:
    """What detection found; `gpu_present` decides whether GPU execution providers are asked for."""

    facts: HardwareFacts
    gpu_present: bool


def detect_hardware(
    available_providers: list[str],
    onnxruntime_version: str | None,
    gpu_class_override: str | None = None,
    run: CommandRunner = run_command,
    read: FileReader = read_text,
    machine: str | None = None,
    tensorrt_version: VersionProbe = installed_tensorrt_version,
) -> Detected:
    host = detect_host(gpu_class_override, run=run, read=read, machine=machine, tensorrt_version=tensorrt_version)
    facts = HardwareFacts(
        gpu_class=host.gpu_class,
        arch=host.arch,
        gpu_name=host.gpu_name,
        compute_capability=host.compute_capability,
        driver_version=host.driver_version,
        tensorrt_version=host.tensorrt_version,
        jetpack_version=host.jetpack_version,
        l4t_version=host.l4t_version,
        onnxruntime_version=onnxruntime_version,
        available_providers=available_providers,
        cpu_count=host.cpu_count,
        memory_mb=host.memory_mb,
    )
    return Detected(facts, gpu_present=host.gpu_present)
