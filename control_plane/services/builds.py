"""Builds: a version x target x precision -> an artifact and a signed manifest, cached by that key.

Building is synchronous here (callers run it in a worker thread). A build that already exists for the key is
returned as is; only a `failed` one (the toolchain broke, nothing was produced) is tried again.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from control_plane.domain.errors import InvalidInput, NotFound
from control_plane.domain.registry import Build, BuildStatus, ModelVersion
from control_plane.services.ports import Artifacts, Clock, RegistryStore
from edge_agent.protocol import Signer, canonical_json
from model_builds.catalog import Catalog, Precision, TargetSpec
from model_builds.onnx_build import ARTIFACT_KIND, BuildOutcome, BuildResult, build_onnx
from model_builds.onnx_model import Arrays, load_npz

SUPPORTED_PRECISIONS = (Precision.FP32,)


def split_stored_samples(arrays: Arrays) -> tuple[Arrays, Arrays]:
    inputs = {k.removeprefix("input:"): v for k, v in arrays.items() if k.startswith("input:")}
    outputs = {k.removeprefix("output:"): v for k, v in arrays.items() if k.startswith("output:")}
    return inputs, outputs


class BuildService:
    def __init__(
        self, store: RegistryStore, artifacts: Artifacts, catalog: Catalog, signer: Signer, clock: Clock
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self._catalog = catalog
        self._signer = signer
        self._clock = clock
        self._lock = threading.Lock()  # one build at a time: the cache check and the write are one step

    def targets(self) -> list[TargetSpec]:
        return self._catalog.all()

    def build(self, name: str, version: int, targets: Sequence[str], precision: str = "fp32") -> list[Build]:
        found = self._version(name, version)
        specs = self._resolve_targets(targets, precision)
        with self._lock:
            return [self._build_one(found, spec, precision) for spec in specs]

    def list_builds(self, name: str, version: int) -> list[Build]:
        self._version(name, version)
        return self._store.list_builds(name, version)

    def get_build(self, build_id: str) -> Build:
        build = self._store.get_build(build_id)
        if build is None:
            raise NotFound(f"build {build_id!r} does not exist")
        return build

    def _version(self, name: str, version: int) -> ModelVersion:
        found = self._store.get_version(name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return found

    def _resolve_targets(self, targets: Sequence[str], precision: str) -> list[TargetSpec]:
        if not targets:
            raise InvalidInput("give at least one target")
        unknown = sorted({t for t in targets if self._catalog.get(t) is None})
        if unknown:
            raise InvalidInput(f"unknown target(s) {unknown}; known targets: {self._catalog.names()}")
        if precision not in {p.value for p in SUPPORTED_PRECISIONS}:
            raise InvalidInput(f"precision {precision!r} is not supported yet (supported: fp32)")
        specs = [spec for t in dict.fromkeys(targets) if (spec := self._catalog.get(t)) is not None]
        refused = [s.name for s in specs if Precision(precision) not in s.precisions]
        if refused:
            raise InvalidInput(f"target(s) {refused} do not allow precision {precision}")
        return specs

    def _build_one(self, version: ModelVersion, spec: TargetSpec, precision: str) -> Build:
        existing = self._store.find_build(version.model, version.version, spec.name, precision)
        if existing is not None and existing.status is not BuildStatus.FAILED:
            return existing
        work = self._artifacts.work_dir()
        try:
            result = self._run_toolchain(version, spec, work)
            return self._store.save_build(self._record(version, spec, precision, result))
        finally:
            self._artifacts.remove_work_dir(work)

    def _run_toolchain(self, version: ModelVersion, spec: TargetSpec, work: Path) -> BuildResult:
        source = self._artifacts.path_for(version.source_sha256)
        samples = self._artifacts.path_for(version.samples_sha256)
        if source is None or samples is None:
            raise NotFound(f"{version.model} v{version.version}: source or samples missing from the artifact store")
        inputs, reference = split_stored_samples(load_npz(samples))
        return build_onnx(source, version.source_sha256, spec, work, inputs, reference)

    def _record(self, version: ModelVersion, spec: TargetSpec, precision: str, result: BuildResult) -> Build:
        sha: str | None = None
        size: int | None = None
        if result.artifact is not None and result.outcome is not BuildOutcome.FAILED:
            sha, size = self._artifacts.put_file(result.artifact)
        manifest = dict(result.manifest) | {"model": version.model, "version": version.version}
        signature = self._signer.sign(canonical_json(manifest).encode())
        return Build(
            id=uuid.uuid4().hex[:16],
            model=version.model,
            version=version.version,
            target=spec.name,
            precision=precision,
            artifact_kind=ARTIFACT_KIND,
            status=BuildStatus(result.outcome.value),
            artifact_sha256=sha,
            artifact_size=size,
            error=result.error,
            created_at=self._clock(),
            manifest=manifest,
            manifest_signature=signature,
        )
