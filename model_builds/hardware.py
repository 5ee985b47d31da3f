"""Hardware detection: which GPU class this host is, from nvidia-smi, the Jetson release file, or the CPU.

One implementation for the edge agent (which reports it and picks artifacts by it) and for builders (which
claim only builds whose key matches it). The parse and mapping functions are pure and tested with recorded
real outputs; only `detect_host` touches the host (a subprocess, a few files, package metadata), and any failure
there means "no GPU" or "unknown", never a crash. It must never import tensorrt (its version is read from the
installed package's metadata).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_libs")

COMPUTE_CAPABILITY_CLASSES = {
    "7.2": "jetson-xavier",
    "8.7": "jetson-orin",
    "7.5": "dgpu-turing",
    "8.0": "dgpu-ampere",
    "8.6": "dgpu-ampere",
    "8.9": "dgpu-ada",
    "9.0": "dgpu-hopper",
}
# L4T release -> JetPack, most specific first (NVIDIA's Jetson archive).
L4T_JETPACK = (
    ("36.4.3", "6.2"),
    ("36.4", "6.1"),
    ("36.3", "6.0"),
    ("36.2", "6.0"),
    ("35.6", "5.1.4"),
    ("35.5", "5.1.3"),
    ("35.4", "5.1.2"),
    ("35.3", "5.1.1"),
    ("35.2", "5.1"),
)


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


def jetpack_for_l4t(l4t_version: str | None) -> str | None:
    if not l4t_version:
        return None
    for prefix, jetpack in L4T_JETPACK:
        if l4t_version == prefix or l4t_version.startswith(prefix + "."):
            return jetpack
    return None


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
VersionProbe = Callable[[], str | None]


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


def installed_tensorrt_version() -> str | None:
    """The installed TensorRT Python package's version, from its metadata (without importing it)."""
    for name in TENSORRT_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


@dataclass(frozen=True)
class HostHardware:
    """What detection found on this host; `gpu_present` decides whether GPU providers and plans are possible."""

    gpu_class: str
    arch: str
    gpu_present: bool
    gpu_name: str | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    l4t_version: str | None = None
    jetpack_version: str | None = None
    tensorrt_version: str | None = None
    cpu_count: int = 1
    memory_mb: int = 0


def detect_host(
    gpu_class_override: str | None = None,
    run: CommandRunner = run_command,
    read: FileReader = read_text,
    machine: str | None = None,
    tensorrt_version: VersionProbe = installed_tensorrt_version,
) -> HostHardware:
    machine = machine or platform.machine()
    cpu = HostHardware(
        gpu_class=gpu_class_override or cpu_class(machine),
        arch=machine,
        gpu_present=False,
        cpu_count=os.cpu_count() or 1,
        memory_mb=_memory_mb(read),
    )
    tegra = read(TEGRA_RELEASE)
    if tegra is not None:
        l4t = parse_tegra_release(tegra)
        model = (read(DEVICE_TREE_MODEL) or "").strip("\x00 \n")
        gpu_class, cc = jetson_class(model, l4t)
        return replace(
            cpu,
            gpu_class=gpu_class_override or gpu_class,
            gpu_present=True,
            gpu_name=model or "Jetson",
            compute_capability=cc,
            l4t_version=l4t,
            jetpack_version=jetpack_for_l4t(l4t),
            tensorrt_version=tensorrt_version(),
        )
    output = run(NVIDIA_SMI_QUERY)
    gpus = parse_nvidia_smi(output) if output else []
    if not gpus:
        return cpu
    gpu = gpus[0]
    return replace(
        cpu,
        gpu_class=gpu_class_override or class_for_compute_capability(gpu.compute_capability) or cpu.gpu_class,
        gpu_present=True,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        driver_version=gpu.driver_version,
        tensorrt_version=tensorrt_version(),
    )


def _memory_mb(read: FileReader) -> int:
    text = read(Path("/proc/meminfo")) or ""
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else 0
