"""Which builds a request means, what key each has, and the tolerance each must meet: pure decisions.

It exists so the control plane, the build workers and the tests agree on one expansion of "build this version
for these classes" and one cache key. It must never read files, the clock, or the host's hardware.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.protocol.vocabulary import ArtifactKind, Precision
from model_builds.catalog import Catalog, CatalogError, TargetSpec
from model_builds.kinds import KIND_PRECISIONS, NATURAL_PRECISION
from model_builds.protocol import BuildOptions, BuildSpec, wire


@dataclass(frozen=True)
class Skipped:
    target: str
    kind: ArtifactKind
    precision: Precision
    reason: str


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def build_key(source_sha256: str, spec: BuildSpec, options: BuildOptions) -> str:
    """Same key, same artifact: the sha256 of everything that decides the bytes.

    Options that cannot change a kind's bytes are left out (an fp32 ONNX build does not depend on the workspace),
    so asking for one with a different workspace still finds the existing build.
    """
    opts = wire(options)
    if spec.kind is not ArtifactKind.TENSORRT_PLAN:
        opts = {"calibration_sha256": opts["calibration_sha256"] if spec.precision is Precision.INT8 else None}
    elif spec.precision is not Precision.INT8:
        opts["calibration_sha256"] = None
    return hashlib.sha256(canonical_json({"source": source_sha256, **wire(spec), "options": opts}).encode()).hexdigest()


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
