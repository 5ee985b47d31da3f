"""Which builds a request means, what key each has, and the tolerance each must meet: pure decisions.

It exists so the control plane, the build workers and the tests agree on one expansion of "build this version
for these classes" and one cache key. It must never read files, the clock, or the host's hardware.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from edge_agent.protocol.vocabulary import ArtifactKind, Precision
from model_builds.catalog import Catalog, CatalogError, TargetSpec
from model_builds.kinds import KIND_PRECISIONS, NATURAL_PRECISION


@dataclass(frozen=True)
class BuildSpec:
    """One artifact to build: the key's hardware half (compute capability, TensorRT) is set for plans only."""

    target: str
    kind: ArtifactKind
    precision: Precision
    compute_capability: str | None = None
    tensorrt_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind.value,
            "precision": self.precision.value,
            "compute_capability": self.compute_capability,
            "tensorrt_version": self.tensorrt_version,
        }


@dataclass(frozen=True)
class Skipped:
    target: str
    kind: ArtifactKind
    precision: Precision
    reason: str


@dataclass(frozen=True)
class ProfileShape:
    """A TensorRT optimisation profile for one input: the smallest, typical and largest shapes it serves."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[int]]) -> ProfileShape:
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))


@dataclass(frozen=True)
class BuildOptions:
    """Everything besides the source and the spec that decides an artifact's bytes (so it is part of the key)."""

    workspace_mb: int = 1024
    hardware_compatibility_level: str | None = None
    profiles: Mapping[str, ProfileShape] | None = None
    calibration_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        profiles = None if self.profiles is None else {k: v.as_dict() for k, v in sorted(self.profiles.items())}
        return {
            "workspace_mb": self.workspace_mb,
            "hardware_compatibility_level": self.hardware_compatibility_level,
            "profiles": profiles,
            "calibration_sha256": self.calibration_sha256,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> BuildOptions:
        data = data or {}
        profiles = data.get("profiles")
        return cls(
            workspace_mb=int(data.get("workspace_mb") or 1024),
            hardware_compatibility_level=data.get("hardware_compatibility_level"),
            profiles=None if not profiles else {k: ProfileShape.from_dict(v) for k, v in profiles.items()},
            calibration_sha256=data.get("calibration_sha256"),
        )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def build_key(source_sha256: str, spec: BuildSpec, options: BuildOptions) -> str:
    """Same key, same artifact: the sha256 of everything that decides the bytes.

    Options that cannot change a kind's bytes are left out (an fp32 ONNX build does not depend on the workspace),
    so asking for one with a different workspace still finds the existing build.
    """
    opts = options.as_dict()
    if spec.kind is not ArtifactKind.TENSORRT_PLAN:
        opts = {"calibration_sha256": opts["calibration_sha256"] if spec.precision is Precision.INT8 else None}
    elif spec.precision is not Precision.INT8:
        opts["calibration_sha256"] = None
    return hashlib.sha256(
        canonical_json({"source": source_sha256, **spec.as_dict(), "options": opts}).encode()
    ).hexdigest()


@dataclass(frozen=True)
class Tolerances:
    """What a candidate must meet against the fp32 source; `top1` None means top-1 agreement is not required."""

    atol: float
    rtol: float
    cosine: float
    top1: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {"atol": self.atol, "rtol": self.rtol, "cosine": self.cosine, "top1": self.top1}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tolerances:
        top1 = data.get("top1")
        return cls(
            float(data["atol"]), float(data["rtol"]), float(data["cosine"]), None if top1 is None else float(top1)
        )

    @classmethod
    def from_overrides(cls, precision: Precision, overrides: Mapping[str, Any] | None) -> Tolerances:
        """The precision's defaults, with a model's `tolerances: {fp16: {atol: ...}}` applied on top."""
        base = default_tolerances(precision)
        mine = dict((overrides or {}).get(precision.value) or {})
        unknown = sorted(set(mine) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown tolerance(s) {unknown} for {precision.value}; known: atol, rtol, cosine, top1")
        merged: dict[str, Any] = base.as_dict() | {k: (None if v is None else float(v)) for k, v in mine.items()}
        return cls.from_dict(merged)


_DEFAULT_TOLERANCES = {
    Precision.FP32: Tolerances(atol=1e-4, rtol=1e-3, cosine=0.99999),
    Precision.FP16: Tolerances(atol=1e-2, rtol=1e-2, cosine=0.999),
    Precision.INT8: Tolerances(atol=0.25, rtol=0.25, cosine=0.98, top1=0.9),
}


def default_tolerances(precision: Precision) -> Tolerances:
    return _DEFAULT_TOLERANCES[precision]


@dataclass
class _Plan:
    specs: list[BuildSpec] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def plan_builds(
    catalog: Catalog,
    targets: Sequence[str],
    kinds: Sequence[ArtifactKind],
    precisions: Sequence[Precision] | None = None,
) -> tuple[list[BuildSpec], list[Skipped]]:
    """The builds `targets x kinds x precisions` mean; what a class does not allow is skipped with the reason."""
    unknown = sorted({t for t in targets if catalog.get(t) is None})
    if unknown:
        raise CatalogError(f"unknown target(s) {unknown}; known targets: {catalog.names()}")
    plan = _Plan()
    for name in dict.fromkeys(targets):
        target = catalog.get(name)
        assert target is not None  # checked above
        for kind in dict.fromkeys(kinds):
            for precision in precisions if precisions is not None else [NATURAL_PRECISION[kind]]:
                _plan_one(plan, target, kind, precision)
    return plan.specs, plan.skipped


def _plan_one(plan: _Plan, target: TargetSpec, kind: ArtifactKind, precision: Precision) -> None:
    reason = _refusal(target, kind, precision)
    if reason is not None:
        plan.skipped.append(Skipped(target.name, kind, precision, reason))
    elif kind is ArtifactKind.TENSORRT_PLAN:
        for cc in target.compute_capabilities:
            for trt in target.tensorrt_versions:
                plan.specs.append(BuildSpec(target.name, kind, precision, cc, trt))
    else:
        plan.specs.append(BuildSpec(target.name, kind, precision))


def _refusal(target: TargetSpec, kind: ArtifactKind, precision: Precision) -> str | None:
    if precision not in KIND_PRECISIONS[kind]:
        return f"kind {kind.value} is built at {[p.value for p in KIND_PRECISIONS[kind]]} only"
    if kind not in target.kinds:
        return f"class {target.name} does not allow kind {kind.value} (allowed: {[k.value for k in target.kinds]})"
    if precision not in target.precisions:
        allowed = [p.value for p in target.precisions]
        return f"class {target.name} does not allow precision {precision.value} (allowed: {allowed})"
    return None
