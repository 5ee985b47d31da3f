"""The model registry, the build queue and the builders: the control plane's own in-process builders, the
re-proof of what other builders deliver, and the registration of those builders.

Wiring only: what a build is and who may sign it is decided in services/ and domain/, never here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from control_plane.adapters.artifacts import ArtifactStore
from control_plane.runtime.storage import Shared, Storage
from control_plane.services.build_queue import BuildQueueService, QueueSettings
from control_plane.services.builder_registry import BuilderRegistryService
from control_plane.services.builds import BuildService
from control_plane.services.identity import IdentityService
from control_plane.services.local_builder import InProcessBuilders, builtin_principal, builtin_registration
from control_plane.services.registry import RegistryService
from control_plane.services.reproof import ReProver
from control_plane.settings import ServerSettings
from model_builds.npz import NpzLimits
from model_builds.ort_sandbox import EvalLimits, run_bounded
from model_builds.protocol import BuilderInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildParts:
    registry: RegistryService
    builds: BuildService
    queue: BuildQueueService
    builder_registry: BuilderRegistryService
    builders: InProcessBuilders  # not started yet


def wire_builds(
    settings: ServerSettings,
    storage: Storage,
    shared: Shared,
    identity: IdentityService,
    clock: Callable[[], datetime],
    builder_info: Callable[[], BuilderInfo],
) -> BuildParts:
    repos = storage.repos
    evaluation = eval_limits(settings)
    registry = RegistryService(
        repos.registry,
        shared.artifacts,
        clock,
        settings.max_upload_bytes,
        npz_limits=NpzLimits(max_total_bytes=settings.max_npz_bytes, max_members=settings.max_npz_members),
        evaluation=evaluation,
    )
    queue = BuildQueueService(
        repos.builds,
        repos.registry,
        shared.artifacts,
        storage.signer,
        clock,
        queue_settings(settings),
        _reprover(settings, shared.artifacts),
    )
    builds = BuildService(repos.builds, repos.registry, shared.artifacts, shared.catalog, queue, clock)
    builder_registry = BuilderRegistryService(repos.builds, identity, shared.catalog, clock)
    builders = _own_builders(settings, queue, shared.artifacts, evaluation, clock, builder_info)
    return BuildParts(registry, builds, queue, builder_registry, builders)


def eval_limits(settings: ServerSettings) -> EvalLimits:
    """The bounds of every ONNX Runtime step the control plane runs on a model (uploads and its own builds)."""
    return EvalLimits(
        timeout_s=settings.model_eval_timeout_s,
        memory_bytes=settings.model_eval_memory_bytes,
        long_timeout_s=settings.build_eval_timeout_s,
    )


def queue_settings(settings: ServerSettings) -> QueueSettings:
    return QueueSettings(
        base_url=settings.base_url,
        lease_s=settings.build_lease_s,
        builder_window_s=settings.builder_window_s,
        max_artifact_bytes=settings.max_upload_bytes,
        reproof_timeout_s=settings.model_eval_timeout_s,
    )


def _reprover(settings: ServerSettings, artifacts: ArtifactStore) -> ReProver:
    """Every ONNX artifact a builder delivers is re-proved here, in the bounded sandbox (docs/builds.md)."""
    bounded = functools.partial(
        run_bounded, timeout_s=settings.model_eval_timeout_s, memory_bytes=settings.model_eval_memory_bytes
    )
    return ReProver(artifacts, bounded)


def _own_builders(
    settings: ServerSettings,
    queue: BuildQueueService,
    artifacts: ArtifactStore,
    evaluation: EvalLimits,
    clock: Callable[[], datetime],
    builder_info: Callable[[], BuilderInfo],
) -> InProcessBuilders:
    """Re-queue the builds this control plane's own builders were running when it stopped, trust what they can
    build (only when there are workers), and make the workers (started last, in start.py)."""
    own_builder = builtin_principal()
    requeued = queue.recover({own_builder.subject})
    if requeued:
        log.warning("re-queued %d build(s) the previous control plane was running", requeued)
    own_info = builder_info()
    own_plans = builtin_registration(own_builder, own_info, clock())
    if own_plans is not None and settings.build_workers:
        queue.trust_builtin(own_plans)
    return InProcessBuilders(
        queue,
        artifacts,
        settings.data_dir / "build-work",
        own_info,
        settings.build_workers,
        own_builder,
        evaluation,
    )
