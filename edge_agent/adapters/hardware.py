"""Hardware detection: which GPU class this host is, from nvidia-smi, the Jetson release file, or the CPU.

The parse and mapping functions are pure and tested with recorded real outputs; only `detect_hardware` touches
the host (a subprocess and two files), and any failure there means "no GPU", never a crash.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.protocol import HardwareFacts

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")

COMPUTE_CAPABILITY_CLASSES = {
    "7.2": "jetson-xavier",
    "8.7": "jetson-orin",
    "7.5": "dgpu-turing",
    "8.0": "dgpu-ampere",
    "8.6": "dgpu-ampere",
    "8.9": "dgpu-ada",
    "9.0": "dgpu-hopper",
}


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str
    driver_version: str


def parse_nvidia_smi(output: str) -> list[GpuInfo]:
    """GPUs from `nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader`."""
    gpus = []
    for line in output.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 3 or not re.fullmatch(r"\d+\.\d+", parts[1]):
            continue
        gpus.append(GpuInfo(name=parts[0], compute_capability=parts[1], driver_version=parts[2]))
    return gpus


def class_for_compute_capability(compute_capability: str) -> str | None:
    return COMPUTE_CAPABILITY_CLASSES.get(compute_capability)


def parse_tegra_release(text: str) -> str | None:
    """L4T version (e.g. `36.3.0`) from /etc/nv_tegra_release: `# R36 (release), REVISION: 3.0, ...`."""
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def jetson_class(model: str, l4t_version: str | None) -> tuple[str, str]:
    """(gpu class, compute capability) of a Jetson from its device-tree model, else from the L4T major."""
    lowered = model.lower()
    if "orin" in lowered:
        return "jetson-orin", "8.7"
    if "xavier" in lowered:
        return "jetson-xavier", "7.2"
    major = int(l4t_version.split(".")[0]) if l4t_version else 0
    return ("jetson-orin", "8.7") if major >= 35 else ("jetson-xavier", "7.2")


def cpu_class(machine: str) -> str:
    return "cpu-aarch64" if machine.lower() in ("aarch64", "arm64") else "cpu-x86_64"


CommandRunner = Callable[[list[str]], str | None]
FileReader = Callable[[Path], str | None]


def run_command(argv: list[str]) -> str | None:
    """stdout of a successful command; None if it is missing, fails, or hangs."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode(errors="replace").rstrip("\x00")
    except OSError:
        return None


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
) -> Detected:
    machine = machine or platform.machine()
    common: dict[str, object] = {
        "arch": machine,
        "onnxruntime_version": onnxruntime_version,
        "available_providers": available_providers,
        "cpu_count": os.cpu_count() or 1,
        "memory_mb": _memory_mb(read),
    }
    tegra = read(TEGRA_RELEASE)
    if tegra is not None:
        l4t = parse_tegra_release(tegra)
        gpu_class, cc = jetson_class(read(DEVICE_TREE_MODEL) or "", l4t)
        facts = HardwareFacts.model_validate(
            {
                **common,
                "gpu_class": gpu_class_override or gpu_class,
                "gpu_name": (read(DEVICE_TREE_MODEL) or "Jetson").strip("\x00 \n"),
                "compute_capability": cc,
                "l4t_version": l4t,
            }
        )
        return Detected(facts, gpu_present=True)
    return _detect_dgpu_or_cpu(machine, common, gpu_class_override, run)


def _detect_dgpu_or_cpu(machine: str, common: dict[str, object], override: str | None, run: CommandRunner) -> Detected:
    output = run(NVIDIA_SMI_QUERY)
    gpus = parse_nvidia_smi(output) if output else []
    if gpus:
        gpu = gpus[0]
        gpu_class = class_for_compute_capability(gpu.compute_capability) or cpu_class(machine)
        facts = HardwareFacts.model_validate(
            {
                **common,
                "gpu_class": override or gpu_class,
                "gpu_name": gpu.name,
                "compute_capability": gpu.compute_capability,
                "driver_version": gpu.driver_version,
            }
        )
        return Detected(facts, gpu_present=True)
    facts = HardwareFacts.model_validate({**common, "gpu_class": override or cpu_class(machine)})
    return Detected(facts, gpu_present=False)


def _memory_mb(read: FileReader) -> int:
    text = read(Path("/proc/meminfo")) or ""
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else 0
