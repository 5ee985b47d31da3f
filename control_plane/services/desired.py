"""Model assignments as they go into a device's desired state: the artifact, its self-test, runtime options and
the fallback, all from the registry's records. Used for installs and for restores (the previous build, with the
same artifact sha256, so the agent restores it from its previous slot)."""

from __future__ import annotations

from control_plane.domain.artifacts import hardware_key_of, provider_options
from control_plane.domain.builds import version_tolerances
from control_plane.domain.errors import Conflict
from control_plane.domain.registry import Build, ModelVersion
from control_plane.domain.rollouts import DevicePlan
from control_plane.services.ports import Artifacts
from edge_agent.protocol import (
    ArtifactChoice,
    ArtifactRef,
    HardwareFacts,
    ModelAssignment,
    RuntimeOptions,
    SelfTestSpec,
)
from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.catalog import Catalog
from model_builds.protocol import Tolerances


class AssignmentFactory:
    """Made for one executor pass (services/rollout_compose.py): a version's self-test reference (its size read from
    disk) and a build's tolerances do not depend on the device and are made once per pass, not once per device (an
    abort of 5,000 devices stat'ed the same samples file 5,000 times)."""

    def __init__(self, artifacts: Artifacts, catalog: Catalog, base_url: str) -> None:
        self._artifacts = artifacts
        self._catalog = catalog
        self._base_url = base_url.rstrip("/")
        self._samples: dict[str, ArtifactRef] = {}
        self._tolerance_of: dict[tuple[str, int, str], Tolerances] = {}

    def assignment(self, version: ModelVersion, plan: DevicePlan) -> ModelAssignment:
        build = plan.build
        facts = plan.device.hardware
        tolerances = self._tolerances(version, build)
        return ModelAssignment(
            name=version.model,
            version=version.version,
            build_id=build.id,
            target=build.target,
            artifact_kind=build.artifact_kind,
            artifact=self._artifact(build),
            selftest=SelfTestSpec(artifact=self._samples_ref(version), atol=tolerances.atol, rtol=tolerances.rtol),
            runtime=self._runtime(build, facts),
            hardware_key=hardware_key_of(build) if build.artifact_kind is ArtifactKind.TENSORRT_PLAN else None,
            fallback=None if plan.fallback is None else self._fallback(version, plan.fallback, facts),
        )

    def _samples_ref(self, version: ModelVersion) -> ArtifactRef:
        known = self._samples.get(version.samples_sha256)
        if known is None:
            known = self._samples[version.samples_sha256] = self._read_samples_ref(version)
        return known

    def _read_samples_ref(self, version: ModelVersion) -> ArtifactRef:
        path = self._artifacts.path_for(version.samples_sha256)
        if path is None:
            raise Conflict(f"the samples of {version.model} v{version.version} are missing from the artifact store")
        return ArtifactRef(
            url=self._url(version.samples_sha256), sha256=version.samples_sha256, size=path.stat().st_size
        )

    def _tolerances(self, version: ModelVersion, build: Build) -> Tolerances:
        """The self-test tolerances of the chosen build's precision (with the model's overrides)."""
        key = (version.model, version.version, build.id)
        known = self._tolerance_of.get(key)
        if known is None:
            try:
                known = self._tolerance_of[key] = version_tolerances(version, build)
            except ValueError as exc:
                raise Conflict(str(exc)) from exc
        return known

    def _runtime(self, build: Build, facts: HardwareFacts | None) -> RuntimeOptions:
        spec = self._catalog.get(build.target)
        providers = list(spec.runtime.providers)[:8] if spec else []
        options = provider_options(spec.provider_options if spec else {}, build.target, facts, build.precision)
        return RuntimeOptions(precision=build.precision, providers=providers, provider_options=options)

    def _artifact(self, build: Build) -> ArtifactRef:
        if build.artifact_sha256 is None or not build.artifact_size:
            raise Conflict(f"build {build.id} has no artifact")
        return ArtifactRef(url=self._url(build.artifact_sha256), sha256=build.artifact_sha256, size=build.artifact_size)

    def _fallback(self, version: ModelVersion, build: Build, facts: HardwareFacts | None) -> ArtifactChoice:
        tolerances = self._tolerances(version, build)
        return ArtifactChoice(
            build_id=build.id,
            artifact_kind=build.artifact_kind,
            artifact=self._artifact(build),
            runtime=self._runtime(build, facts),
            hardware_key=hardware_key_of(build) if build.artifact_kind is ArtifactKind.TENSORRT_PLAN else None,
            atol=tolerances.atol,
            rtol=tolerances.rtol,
        )

    def _url(self, sha256: str) -> str:
        return f"{self._base_url}/v1/artifacts/{sha256}"
