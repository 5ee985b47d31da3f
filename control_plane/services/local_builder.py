"""The control plane's own builders: `model_builds.worker.run_builder` in background threads, on a LOCAL queue.

The local queue speaks to `BuildQueueService` directly (no HTTP) and reads inputs straight from the artifact
store, so the in-process worker and a remote `edgectl build-worker` follow the same protocol and the same rules
(claims, leases, re-judged parity, signed manifests). This module never decides anything about a build itself.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
from dataclasses import replace
from pathlib import Path

from control_plane.domain.errors import NotFound
from control_plane.services.build_queue import BuildQueueService, LeaseLost
from control_plane.services.ports import Artifacts
from model_builds.capabilities import BuilderInfo
from model_builds.execute import BuildProduct, BuildTask, RemoteFile
from model_builds.worker import run_builder

log = logging.getLogger(__name__)


class LocalBuildQueue:
    """`model_builds.worker.BuildQueue` over the service itself."""

    def __init__(self, queue: BuildQueueService, artifacts: Artifacts, builder_id: str) -> None:
        self._queue = queue
        self._artifacts = artifacts
        self._builder_id = builder_id

    def claim(self, info: BuilderInfo) -> BuildTask | None:
        task = self._queue.claim(info)
        return None if task is None else BuildTask.from_dict(task)

    def fetch(self, remote: RemoteFile, dest: Path) -> Path:
        source = self._artifacts.path_for(remote.sha256)
        if source is None:
            raise FileNotFoundError(f"artifact {remote.sha256} is missing from the artifact store")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return dest

    def heartbeat(self, build_id: str, message: str | None, progress: float | None) -> bool:
        try:
            self._queue.heartbeat(build_id, self._builder_id, message, progress)
        except (LeaseLost, NotFound):
            return False
        return True

    def complete(self, build_id: str, product: BuildProduct) -> None:
        with product.artifact.open("rb") as artifact:
            self._queue.complete(build_id, self._builder_id, artifact, product.report())

    def fail(self, build_id: str, error: str) -> None:
        try:
            self._queue.fail(build_id, self._builder_id, error)
        except (LeaseLost, NotFound) as exc:
            log.warning("could not record the failure of build %s: %s", build_id, exc)


def in_process_ids(count: int) -> list[str]:
    """Stable across restarts on one host, so a restart knows which running builds were its own."""
    return [f"control-plane@{socket.gethostname()}/{i}" for i in range(count)]


class InProcessBuilders:
    """`count` worker threads; `start` after the runtime is wired, `stop` at shutdown (joins them)."""

    def __init__(
        self, queue: BuildQueueService, artifacts: Artifacts, workdir: Path, info: BuilderInfo, count: int
    ) -> None:
        self._queue = queue
        self._artifacts = artifacts
        self._workdir = workdir
        self._info = info
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
            local = LocalBuildQueue(self._queue, self._artifacts, builder_id)
            workdir = self._workdir / builder_id.rsplit("/", 1)[-1]
            workdir.mkdir(parents=True, exist_ok=True)
            thread = threading.Thread(
                target=run_builder,
                args=(local, info, workdir, self._stop),
                kwargs={"idle_wait": self._idle_wait},
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
