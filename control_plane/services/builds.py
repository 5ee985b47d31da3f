"""Builds as operators ask for them: plan `targets x kinds x precisions`, queue each by its key, show them.

A request never builds anything itself: each planned build is stored `queued` under its key (docs/builds.md) and
a builder (the in-process worker or a remote one, through `BuildQueueService`) takes it. Same key in the same
version, same build: an existing build is returned as it is, except a `failed` or `cancelled` one, which is queued
again. Cancelling is the operator's way to stop a build (queued, waiting or running); its builder is told to stop
at its next call.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from control_plane.domain.builds import BuildView
from control_plane.domain.errors import InvalidInput, NotFound
from control_plane.domain.identity import Principal
from control_plane.domain.registry import Build, BuildStatus, ModelVersion
from control_plane.services.build_queue import BuildQueueService
from control_plane.services.ports import Artifacts, BuildStore, Clock, RegistryStore
from edge_agent.protocol.vocabulary import ArtifactKind, Precision
from model_builds.catalog import Catalog, CatalogError, TargetSpec
from model_builds.planner import Skipped, build_key, plan_builds
from model_builds.protocol import BuildOptions, BuildSpec, wire


@dataclass(frozen=True)
class BuildRequestSpec:
    """What an operator asked for (already shape-checked by the API schema)."""

    targets: Sequence[str]
    kinds: Sequence[str] = (ArtifactKind.ONNX.value,)  # as asked (text): read into kinds by `_kinds`
    precisions: Sequence[str] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    calibration: str | None = None


@dataclass(frozen=True)
class BuildRequestOutcome:
    builds: list[BuildView]
    skipped: list[Skipped]
    targets: list[str] = field(default_factory=list)  # the GPU classes built for
    targets_from_fleet: bool = False  # none were asked for: the classes of the enrolled devices


class BuildService:
    def __init__(
        self,
        store: BuildStore,
        registry: RegistryStore,
        artifacts: Artifacts,
        catalog: Catalog,
        queue: BuildQueueService,
        clock: Clock,
    ) -> None:
        self._store = store
        self._registry = registry
        self._artifacts = artifacts
        self._catalog = catalog
        self._queue = queue
        self._clock = clock

    def targets(self) -> list[TargetSpec]:
        return self._catalog.all()

    def target(self, name: str) -> TargetSpec | None:
        return self._catalog.get(name)

    # -- requests ---------------------------------------------------------------------------------------------
    def request(self, name: str, version: int, spec: BuildRequestSpec) -> BuildRequestOutcome:
        found = self._version(name, version)
        kinds = _kinds(spec.kinds)
        precisions = _precisions(spec.precisions)
        options = self._options(spec.options, spec.calibration)
        targets = list(spec.targets) or self._fleet_targets()
        try:
            specs, skipped = plan_builds(self._catalog, targets, kinds, precisions)
        except CatalogError as exc:
            raise InvalidInput(f"targets: {exc}") from exc
        if not specs and not skipped:
            asked = [p.value for p in precisions or []]
            raise InvalidInput(
                f"precisions: none of {asked} is a precision of the kinds {[k.value for k in kinds]} "
                "(onnx is fp32, onnx-fp16 fp16, onnx-int8-qdq int8; tensorrt-plan any)"
            )
        builds = [self._queue_one(found, s, options) for s in specs]
        if any(b.status is BuildStatus.QUEUED for b in builds):
            self._queue.notify_queued()
        return BuildRequestOutcome(self._queue.views(builds), skipped, targets, not spec.targets)

    def _fleet_targets(self) -> list[str]:
        """No target asked for: the GPU classes the enrolled devices have (those the catalog knows)."""
        classes = self._store.fleet_gpu_classes()
        known = [c for c in classes if self._catalog.get(c) is not None]
        if not known:
            unknown = f" (their classes {classes} are not in the catalog)" if classes else ""
            raise InvalidInput(
                f"targets: none given, and no enrolled device has a GPU class to build for{unknown}; "
                "name the classes with --target (`edgectl targets` lists them)"
            )
        return known

    def _queue_one(self, version: ModelVersion, spec: BuildSpec, options: BuildOptions) -> Build:
        if spec.precision is not Precision.INT8:
            options = BuildOptions(
                options.workspace_mb, options.hardware_compatibility_level, options.profiles, calibration_sha256=None
            )
        key = build_key(version.source_sha256, spec, options)
        existing = self._store.find_by_key(version.model, version.version, key)
        if existing is not None:
            if existing.status in (BuildStatus.FAILED, BuildStatus.CANCELLED):
                return self._queue.requeue_finished(existing) or existing
            return existing
        return self._store.insert_build(self._new(version, spec, options, key))

    def _new(self, version: ModelVersion, spec: BuildSpec, options: BuildOptions, key: str) -> Build:
        return Build(
            id=uuid.uuid4().hex[:16],
            model=version.model,
            version=version.version,
            target=spec.target,
            precision=spec.precision,
            artifact_kind=spec.kind,
            status=BuildStatus.QUEUED,
            artifact_sha256=None,
            artifact_size=None,
            error=None,
            created_at=self._clock(),
            manifest={},
            manifest_signature=None,
            key=key,
            compute_capability=spec.compute_capability,
            tensorrt_version=spec.tensorrt_version,
            options=wire(options),
            calibration_sha256=options.calibration_sha256,
        )

    def _options(self, raw: Mapping[str, Any], calibration: str | None) -> BuildOptions:
        if calibration is not None and self._artifacts.path_for(calibration) is None:
            raise NotFound(
                f"calibration: no uploaded calibration set {calibration} "
                "(POST /v1/models/{name}/versions/{version}/calibration first)"
            )
        try:
            return BuildOptions(**{**raw, "calibration_sha256": calibration})
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"options: {exc}") from exc

    def cancel(self, build_id: str, by: Principal) -> BuildView:
        return self._queue.view(self._queue.cancel(build_id, by))

    # -- queries ----------------------------------------------------------------------------------------------
    def list_builds(self, name: str, version: int) -> list[BuildView]:
        self._version(name, version)
        return self._queue.views(self._store.list_builds(name, version))

    def get_build(self, build_id: str) -> BuildView:
        return self._queue.view(self._build(build_id))

    def logs(self, build_id: str) -> str:
        self._build(build_id)
        return "".join(f"{line.at.isoformat()} {line.message}\n" for line in self._store.logs(build_id))

    def _build(self, build_id: str) -> Build:
        build = self._store.get_build(build_id)
        if build is None:
            raise NotFound(f"build {build_id!r} does not exist")
        return build

    def _version(self, name: str, version: int) -> ModelVersion:
        found = self._registry.get_version(name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return found


def _kinds(values: Sequence[str]) -> list[ArtifactKind]:
    known = [k.value for k in ArtifactKind]
    unknown = [v for v in values if v not in known]
    if unknown:
        raise InvalidInput(f"kinds: unknown kind(s) {unknown}; known kinds: {known}")
    if not values:
        raise InvalidInput("kinds: give at least one kind")
    return [ArtifactKind(v) for v in dict.fromkeys(values)]


def _precisions(values: Sequence[str] | None) -> list[Precision] | None:
    if values is None:
        return None
    known = [p.value for p in Precision]
    unknown = [v for v in values if v not in known]
    if unknown:
        raise InvalidInput(f"precisions: unknown precision(s) {unknown}; known: {known}")
    return [Precision(v) for v in dict.fromkeys(values)]
