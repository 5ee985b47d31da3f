"""What the control plane's signature on a build rests on: whose artifact it may accept, and whose figures decide.

A signed manifest means the control plane vouches for the bytes. For every kind it can run itself (the ONNX kinds)
it measures parity on its own onnxruntime; the builder's figures are recorded and never decide. For kinds it cannot
run (TensorRT plans) it can only take a builder's word, so it takes it only from a builder an administrator
registered for that hardware. Pure decisions: no I/O, no clock reads; the service loads the inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from control_plane.domain.registry import Build, BuildStatus
from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.protocol import ParityReport

# The kinds the control plane runs on its own CPU onnxruntime (QDQ included: the CPU EP runs it).
REPROVED_KINDS = frozenset({ArtifactKind.ONNX, ArtifactKind.ONNX_FP16, ArtifactKind.ONNX_INT8_QDQ})


class MeasuredBy(str, Enum):
    """Whose figures a build's stored and signed parity are (`parity.measured_by`)."""

    CONTROL_PLANE = "control-plane"  # re-proved here
    BUILDER = "builder"  # a registered builder's report, re-judged against the tolerances


_TENSORRT_PATTERN = re.compile(r"^\d+(\.(\d+|x)){0,3}$")
_COMPUTE_CAPABILITY = re.compile(r"^\d+\.\d+$")


def reproved(kind: ArtifactKind) -> bool:
    """Whether the control plane re-proves an artifact of `kind` itself (else a registered builder's word it is)."""
    return kind in REPROVED_KINDS


def valid_tensorrt_pattern(pattern: str) -> bool:
    """`10.3.0`, `10.3`, `10.x`: dotted numbers, `x` for any number in a position after the first."""
    return bool(_TENSORRT_PATTERN.fullmatch(pattern))


def valid_compute_capability(value: str) -> bool:
    return bool(_COMPUTE_CAPABILITY.fullmatch(value))


def tensorrt_matches(pattern: str, version: str | None) -> bool:
    """`10.x` and `10` match every 10.* release, `10.3` every 10.3.*, `10.3.0` only itself."""
    if version is None or not valid_tensorrt_pattern(pattern):
        return False
    wanted = pattern.split(".")
    have = version.split(".")
    if len(have) < len(wanted):
        return False
    return all(w in ("x", h) for w, h in zip(wanted, have, strict=False))


@dataclass(frozen=True)
class BuilderRegistration:
    """An administrator's word that the builder identity `subject` runs on this hardware: it may deliver the
    TensorRT plans whose key names that compute capability and a TensorRT release the pattern matches."""

    subject: str
    name: str
    compute_capability: str
    tensorrt: str  # a release or a pattern: 10.3.0, 10.3, 10.x
    gpu_class: str | None  # when set: only plans of this GPU class
    created_by: str
    created_at: datetime


def plan_refusal(build: Build, registration: BuilderRegistration | None) -> str | None:
    """Why this builder may not build or deliver `build`, or None. Only TensorRT plans need a registration."""
    if reproved(build.artifact_kind):
        return None
    hardware = f"compute capability {build.compute_capability or '?'} and TensorRT {build.tensorrt_version or '?'}"
    if registration is None:
        return (
            f"a {build.artifact_kind.value} cannot be re-proved by the control plane: only a builder an administrator "
            f"registered for {hardware} may deliver it (POST /v1/builders, edgectl builders register)"
        )
    if registration.compute_capability != build.compute_capability:
        return (
            f"builder {registration.name} is registered for compute capability {registration.compute_capability}, "
            f"the build needs {build.compute_capability or '?'}"
        )
    if not tensorrt_matches(registration.tensorrt, build.tensorrt_version):
        return (
            f"builder {registration.name} is registered for TensorRT {registration.tensorrt}, "
            f"the build needs {build.tensorrt_version or '?'}"
        )
    if registration.gpu_class is not None and registration.gpu_class != build.target:
        return f"builder {registration.name} is registered for GPU class {registration.gpu_class}, not {build.target}"
    return None


def disagreement(measured: ParityReport, reported: ParityReport) -> str | None:
    """How the builder's claim differs from what the control plane measured (logged, never deciding), or None."""
    if measured.passed == reported.passed:
        return None
    said = "within" if reported.passed else "outside"
    found = "within" if measured.passed else "outside"
    return f"the builder reported parity {said} tolerance; the control plane measured it {found}"


def cancel_refusal(build: Build) -> str | None:
    """Why `build` cannot be cancelled now, or None: only builds not finished yet can."""
    if build.status.finished:
        return f"build {build.id} is {build.status.value}; only a queued or running build can be cancelled"
    return None


def lost_reason(build: Build) -> str:
    """What a builder that does not hold `build` is told (it must stop working on it)."""
    if build.status is BuildStatus.CANCELLED:
        return f"this builder does not hold build {build.id}: it was cancelled; stop working on it"
    if build.status is BuildStatus.RUNNING:
        return f"this builder does not hold build {build.id}: it is leased to another builder"
    return f"this builder does not hold build {build.id} ({build.status.value}, not held by any builder)"
