"""The `onnx` fp32 artifact kind: a portable optimised graph, its manifest, and a parity check.

The optimisation level is portable on purpose: ORT_ENABLE_BASIC. Measured with onnxruntime 1.32, EXTENDED already
rewrites Conv+Relu and Gemm+Relu into `com.microsoft` FusedConv/FusedGemm, which only the CPU/CUDA EPs run (the
TensorRT parser does not know them), and ENABLE_ALL adds layout changes for the build host. This module must never
touch storage or signing: it turns a source file into an artifact file and a manifest; the caller stores and signs.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from model_builds import ort_runtime
from model_builds.catalog import Precision, TargetSpec
from model_builds.onnx_model import Arrays

ARTIFACT_KIND = "onnx"
# Tolerances of the parity check and of the device self-test, by precision.
TOLERANCES: dict[Precision, tuple[float, float]] = {
    Precision.FP32: (1e-4, 1e-3),
    Precision.FP16: (1e-2, 1e-2),
    Precision.INT8: (1e-1, 1e-1),
}


class BuildOutcome(str, Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the toolchain could not produce an artifact
    REJECTED = "rejected"  # an artifact was produced but does not match the reference outputs


@dataclass(frozen=True)
class ParityReport:
    passed: bool
    atol: float
    rtol: float
    max_abs_diff: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "atol": self.atol,
            "rtol": self.rtol,
            "max_abs_diff": self.max_abs_diff,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class BuildResult:
    outcome: BuildOutcome
    artifact: Path | None
    manifest: dict[str, Any]
    error: str | None


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_parity(artifact: Path, inputs: Arrays, reference: Arrays, precision: Precision) -> ParityReport:
    """Outputs of `artifact` on `inputs` against `reference`, within the precision's tolerance."""
    atol, rtol = TOLERANCES[precision]
    try:
        got = ort_runtime.run(artifact, inputs)
    except ort_runtime.RuntimeFailure as exc:
        return ParityReport(False, atol, rtol, float("inf"), str(exc))
    worst = 0.0
    for name, want in reference.items():
        if name not in got:
            return ParityReport(False, atol, rtol, float("inf"), f"artifact has no output {name!r}")
        have = got[name]
        if have.shape != want.shape:
            return ParityReport(False, atol, rtol, float("inf"), f"output {name!r} shape {have.shape} != {want.shape}")
        if have.size:
            diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
            worst = max(worst, float(diff.max()))
        if not np.allclose(have, want, atol=atol, rtol=rtol):
            return ParityReport(False, atol, rtol, worst, f"output {name!r} differs beyond atol={atol} rtol={rtol}")
    return ParityReport(True, atol, rtol, worst, "all outputs within tolerance")


PORTABLE_LEVEL = ort_runtime.OptimizationLevel.BASIC


def build_portable(source: Path, destination: Path) -> None:
    """The `onnx` fp32 artifact: `source` optimised with standard-ONNX rewrites only (no contrib ops)."""
    ort_runtime.optimise(source, destination, PORTABLE_LEVEL)
    onnx.checker.check_model(str(destination))


def toolchain_versions() -> dict[str, str]:
    return {"onnx": str(onnx.__version__), "onnxruntime": ort_runtime.version(), "python": platform.python_version()}


def build_onnx(
    source: Path,
    source_sha256: str,
    target: TargetSpec,
    work_dir: Path,
    inputs: Arrays,
    reference: Arrays,
) -> BuildResult:
    """Optimise `source` for `target` into `work_dir`, validate it loads and matches the reference outputs."""
    precision = Precision.FP32
    artifact = work_dir / "model.onnx"
    base: dict[str, Any] = {
        "artifact_kind": ARTIFACT_KIND,
        "target": target.name,
        "precision": precision.value,
        "hardware_key": {"target": target.name, "arch": target.arch},
        "source_sha256": source_sha256,
        "toolchain": toolchain_versions(),
        "optimization_level": PORTABLE_LEVEL.value,
        "providers": list(target.runtime.providers),
    }
    try:
        build_portable(source, artifact)
    except (ort_runtime.RuntimeFailure, onnx.checker.ValidationError) as exc:
        return BuildResult(BuildOutcome.FAILED, None, base, f"optimisation failed: {exc}")
    sha, size = file_sha256(artifact)
    parity = check_parity(artifact, inputs, reference, precision)
    manifest = base | {"sha256": sha, "size": size, "parity": parity.as_dict()}
    if not parity.passed:
        return BuildResult(BuildOutcome.REJECTED, artifact, manifest, f"parity check failed: {parity.detail}")
    return BuildResult(BuildOutcome.SUCCEEDED, artifact, manifest, None)
