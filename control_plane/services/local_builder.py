"""The control plane's own builders: `model_builds.worker.run_builder` in background threads, on a LOCAL queue.

The local queue speaks to `BuildQueueService` directly (no HTTP) and reads inputs straight from the artifact
store, so the in-process worker and a remote `edgectl build-worker` follow the same protocol and the same rules
(claims, leases, re-proved parity, signed manifests). The workers act as one built-in builder identity
(`builtin_principal`): no token, because they are the control plane itself; their artifacts are re-proved like any
other builder's. This module never decides anything about a build itself.
"""

from __future__ import annotations

import functools
import logging
import shutil
import socket
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from control_plane.domain.build_trust import BuilderRegistration
from control_plane.domain.errors import NotFound
from control_plane.domain.identity import Principal, Role
from control_plane.services.build_queue import BuildQueueService, LeaseLost
from control_plane.services.ports import Artifacts
from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.execute import BuildProduct, execute
from model_builds.ort_sandbox import EvalLimits
from model_builds.protocol import BuilderInfo, BuildTask, RemoteFile
from model_builds.worker import run_builder

log = logging.getLogger(__name__)


class LocalBuildQueue:
    """`model_builds.worker.BuildQueue` over the service itself."""

    def __init__(self, queue: BuildQueueService, artifacts: Artifacts, principal: Principal) -> None:
        self._queue = queue
        self._artifacts = artifacts
        self._principal = principal

    def claim(self, info: BuilderInfo) -> BuildTask | None:
        return self._queue.claim(self._principal, info)

    def fetch(self, remote: RemoteFile, dest: Path) -> Path:
        source = self._artifacts.path_for(remote.sha256)
        if source is None:
            raise FileNotFoundError(f"artifact {remote.sha256} is missing from the artifact store")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return dest

    def heartbeat(self, build_id: str, message: str | None, progress: float | None) -> bool:
        try:
            self._queue.heartbeat(build_id, self._principal, message, progress)
        except (LeaseLost, NotFound):
            return False
        return True

    def complete(self, build_id: str, product: BuildProduct) -> None:
        with product.artifact.open("rb") as artifact:
            self._queue.complete(build_id, self._principal, artifact, product.report())

    def fail(self, build_id: str, error: str) -> None:
        try:
            self._queue.fail(build_id, self._principal, error)
        except (LeaseLost, NotFound) as exc:
            log.warning("could not record the failure of build %s: %s", build_id, exc)


def in_process_ids(count: int) -> list[str]:
    """The workers' labels (display only)."""
    return [f"control-plane@{socket.gethostname()}/{i}" for i in range(count)]


def builtin_principal() -> Principal:
    """The identity the in-process workers hold their leases as: stable across restarts on one host, so a restart
    knows which running builds were its own (and no other control plane's). Not a token: nothing outside this
    process can act as it."""
    host = socket.gethostname()
    return Principal(subject=f"builtin:control-plane@{host}", name=f"control plane on {host}", role=Role.BUILDER)


def builtin_registration(principal: Principal, info: BuilderInfo, now: datetime) -> BuilderRegistration | None:
    """The control plane vouches for the plans its own GPU builds; None when this host builds no plans."""
    if ArtifactKind.TENSORRT_PLAN not in info.kinds or not info.compute_capability or not info.tensorrt_version:
        return None
    return BuilderRegistration(
        subject=principal.subject,
        name=principal.name,
        compute_capability=info.compute_capability,
        tensorrt=info.tensorrt_version,
        gpu_class=None,
        created_by="the control plane (its own GPU)",
        created_at=now,
    )


class InProcessBuilders:
    """`count` worker threads; `start` after the runtime is wired, `stop` at shutdown (joins them)."""

    def __init__(
        self,
        queue: BuildQueueService,
        artifacts: Artifacts,
        workdir: Path,
        info: BuilderInfo,
        count: int,
        principal: Principal,
        limits: EvalLimits = EvalLimits(),
    ) -> None:
        self._limits = limits  # every ONNX Runtime step of a build runs in a killable child within these
        self._queue = queue
        self._artifacts = artifacts
        self._workdir = workdir
        self._info = info
        self._principal = principal
        self._ids = in_process_ids(count)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        queue.on_queued(self._wake.set)

    @property
    def builder_ids(self) -> list[str]:
        return list(self._ids)

    def start(self) -> None:
        for builder_id in self._ids:
            info = replace(self._info, builder_id=builder_id)
            local = LocalBuildQueue(self._queue, self._artifacts, self._principal)
            workdir = self._workdir / builder_id.rsplit("/", 1)[-1]
            workdir.mkdir(parents=True, exist_ok=True)
            thread = threading.Thread(
                target=run_builder,
                args=(local, info, workdir, self._stop),
                kwargs={"idle_wait": self._idle_wait, "executor": functools.partial(execute, limits=self._limits)},
                name=f"builder-{builder_id}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _idle_wait(self, seconds: float) -> bool:
        """Sleep until new work is queued, `seconds` pass, or stop; True means stop."""
        self._wake.wait(seconds)
        self._wake.clear()
        return self._stop.is_set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s did not stop within %.0fs (a build is still running)", thread.name, timeout)
