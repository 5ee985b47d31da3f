"""What a builder's delivery is read as, and the build manifest the control plane signs.

Pure: a report is untrusted input (shape-checked here, its figures never deciding a re-provable kind), and the
manifest is composed from stored facts plus the identity that delivered; signing happens in the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from control_plane.domain.errors import InvalidInput
from control_plane.domain.registry import Build, ModelVersion
from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.protocol import BuildReport


@dataclass(frozen=True)
class BuilderSignature:
    """Who delivered the bytes, as the manifest names them: the authenticated identity, and the builder's label."""

    subject: str
    name: str
    label: str | None
    hostname: str | None


def build_identity(build: Build) -> dict[str, Any]:
    """What names a build, in its BuildTask and in its manifest alike."""
    return {
        "build_id": build.id,
        "key": build.key,
        "model": build.model,
        "version": build.version,
        "target": build.target,
        "kind": build.artifact_kind.value,
        "precision": build.precision.value,
    }


def checked_parity(report: BuildReport) -> dict[str, Any]:
    """The report's parity figures, shape-checked: a malformed report is the builder's bug, refused with 422."""
    outputs = report.parity.get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(o, Mapping) for o in outputs):
        raise InvalidInput("report: parity.outputs must be a list of per-output figures (docs/builds.md)")
    return dict(report.parity)


def hardware_key_of(build: Build, report: BuildReport) -> dict[str, Any]:
    """Plans are keyed by the hardware they were built on; portable kinds only by their class."""
    hardware = report.hardware
    options = report.build_options or dict(build.options)
    if build.artifact_kind is not ArtifactKind.TENSORRT_PLAN:
        return {"gpu_class": build.target}
    return {
        "gpu_class": build.target,
        "compute_capability": build.compute_capability,
        "tensorrt_version": build.tensorrt_version,
        "jetpack_version": hardware.get("jetpack_version"),
        "hardware_compatibility_level": options.get("hardware_compatibility_level"),
    }


def hardware_mismatch(build: Build, report: BuildReport) -> str | None:
    """A plan reported as built on other hardware than its key names is refused, never shipped."""
    if build.artifact_kind is not ArtifactKind.TENSORRT_PLAN:
        return None
    hardware = report.hardware
    for field, want in (("compute_capability", build.compute_capability), ("tensorrt_version", build.tensorrt_version)):
        got = hardware.get(field)
        if got is not None and want is not None and str(got) != want:
            return f"the builder reports {field} {got}, the build's key needs {want}"
    return None


def compose_manifest(
    build: Build,
    version: ModelVersion,
    builder: BuilderSignature,
    sha: str,
    size: int,
    parity: Mapping[str, Any],
    report: BuildReport,
    hardware_key: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The manifest of docs/builds.md "Signed manifest" (`parity` is the figures that decided the build)."""
    return {
        **build_identity(build),
        "artifact": {"sha256": sha, "size": size},
        "hardware_key": dict(hardware_key),
        "toolchain": dict(report.toolchain),
        "build_options": report.build_options or dict(build.options),
        "source": {"sha256": version.source_sha256, "lineage": dict(version.lineage)},
        "parity": dict(parity),
        "latency": dict(report.latency),
        "builder": {
            "id": builder.label,
            "hostname": builder.hostname,
            "subject": builder.subject,
            "name": builder.name,
        },
        "built_at": now.isoformat(),
    }
