"""One build task, executed: source + samples in, an artifact plus its parity and latency proof out.

Every builder (the control plane's own worker, `edgectl build-worker`, an agent with `builder: true`) runs
builds through `execute`, so an artifact is made and proved one way wherever it is built. It must never store,
sign or judge for the record (the control plane re-judges the figures), and never return a product for an
artifact it did not build: what cannot be built raises `BuildError` with the reason. Every ONNX Runtime call on
the version's model runs in `ort_sandbox`'s child, within `EvalLimits`: a model that loops forever or asks for
unbounded memory fails its build with the reason, it never holds the builder (or the control plane) hostage.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds import ort_runtime
from model_builds.build_steps import build_artifact, candidate_providers
from model_builds.errors import BuildError
from model_builds.hardware import HostHardware, detect_host
from model_builds.onnx_model import Arrays, InvalidModel, ModelSignature, load_npz, split_samples
from model_builds.ort_sandbox import (
    EvalLimits,
    SandboxError,
    inspect_bounded,
    run_and_time_bounded,
    run_bounded,
)
from model_builds.protocol import BuildReport, BuildTask, LatencyReport, ParityReport, wire
from model_builds.reports import batch_latency, parity

Progress = Callable[[str, float | None], None]


@dataclass(frozen=True)
class BuildProduct:
    artifact: Path
    parity: ParityReport
    latency: LatencyReport
    toolchain: dict[str, str]
    hardware: dict[str, str | None]
    options: dict[str, Any]

    def report(self) -> BuildReport:
        """The `report` of the builder protocol's complete call."""
        return BuildReport(
            parity=wire(self.parity),
            latency=wire(self.latency),
            toolchain=self.toolchain,
            hardware=self.hardware,
            build_options=self.options,
        )


@functools.cache
def this_host() -> HostHardware:
    """Detected once per process: a build must not shell out to nvidia-smi each time."""
    return detect_host()


def _version_of(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def toolchain(host: HostHardware, kind: ArtifactKind) -> dict[str, str]:
    versions = {
        "onnx": str(onnx.__version__),
        "onnxruntime": ort_runtime.version(),
        "onnxconverter_common": _version_of("onnxconverter-common"),
        "python": platform.python_version(),
        "tensorrt": host.tensorrt_version if kind is ArtifactKind.TENSORRT_PLAN else None,
        "driver": host.driver_version,
    }
    return {k: v for k, v in versions.items() if v}


def hardware_of(host: HostHardware, task: BuildTask) -> dict[str, str | None]:
    return {
        "gpu_class": task.spec.target,
        "builder_gpu_class": host.gpu_class,
        "gpu_name": host.gpu_name,
        "compute_capability": task.spec.compute_capability,
        "tensorrt_version": task.spec.tensorrt_version,
        "jetpack_version": host.jetpack_version,
        "hardware_compatibility_level": task.options.hardware_compatibility_level,
        "driver_version": host.driver_version,
        "arch": host.arch,
    }


def _load_samples(signature: ModelSignature, samples: Path) -> Arrays:
    try:
        inputs, _ = split_samples(load_npz(samples), signature)
    except InvalidModel as exc:
        raise BuildError(f"the version's samples are unusable: {exc}") from exc
    return inputs


def _signature(source: Path, limits: EvalLimits) -> ModelSignature:
    try:
        return inspect_bounded(source, timeout_s=limits.timeout_s, memory_bytes=limits.memory_bytes)
    except SandboxError as exc:
        raise BuildError(f"the version's source is unusable: {exc.reason}") from exc


def execute(
    task: BuildTask,
    source: Path,
    samples: Path,
    calibration: Path | None,
    workdir: Path,
    progress: Progress,
    *,
    latency_runs: int = 50,
    host: HostHardware | None = None,
    limits: EvalLimits = EvalLimits(),
) -> BuildProduct:
    """Build `task` in `workdir` and prove it: parity against the fp32 source, latency on this builder.

    The fp32 reference run gets `limits.timeout_s` (the same bound an upload's reference outputs had); the build
    step and the proof's timed runs get `limits.long_timeout_s` each."""
    host = host or this_host()
    signature = _signature(source, limits)
    inputs = _load_samples(signature, samples)
    calibration_inputs = _load_samples(signature, calibration) if calibration is not None else inputs
    progress("running the fp32 source on the samples for reference outputs", 0.05)
    try:
        reference = run_bounded(source, inputs, timeout_s=limits.timeout_s, memory_bytes=limits.memory_bytes)
    except SandboxError as exc:
        raise BuildError(f"the fp32 source on the samples: {exc.reason}") from exc
    built = build_artifact(task, source, signature, inputs, calibration_inputs, workdir, host, progress, limits)
    progress(f"checking parity against the fp32 source; latency over {latency_runs} runs", 0.8)
    feeds = {batch: batch_feeds(inputs, batch) for batch in built.batches}
    try:
        candidate, provider, durations = run_and_time_bounded(
            built.artifact,
            inputs,
            feeds,
            latency_runs,
            timeout_s=limits.long_timeout_s,
            memory_bytes=limits.memory_bytes,
            providers=candidate_providers(task.spec.kind),
        )
    except SandboxError as exc:
        raise BuildError(f"the built artifact on the samples: {exc.reason}") from exc
    report = parity(candidate, reference, task.tolerances)
    latency = LatencyReport(provider, tuple(batch_latency(b, durations[b]) for b in built.batches))
    progress("parity " + ("passed" if report.passed else "FAILED: " + "; ".join(report.reasons)), 1.0)
    return BuildProduct(
        artifact=built.artifact,
        parity=report,
        latency=latency,
        toolchain=toolchain(host, task.spec.kind),
        hardware=hardware_of(host, task),
        options=wire(task.options) | built.options,
    )


def batch_feeds(inputs: Arrays, batch: int) -> Arrays:
    """The sample inputs at batch size `batch`: the first rows, or the rows repeated to fill it."""
    feeds: Arrays = {}
    for name, array in inputs.items():
        reps = -(-batch // array.shape[0])
        feeds[name] = np.concatenate([array] * reps, axis=0)[:batch] if reps > 1 else array[:batch]
    return feeds
