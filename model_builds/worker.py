"""The builder loop: claim a build, fetch its inputs, execute it under a lease, report the outcome.

One loop for every builder: the control plane's in-process worker, `edgectl build-worker`, and an agent with
`builder: true` differ only in their `BuildQueue`. The loop never dies on one bad task (a failure is reported
and the next claim follows), and never completes a build whose lease it lost (another builder may own it now).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from model_builds.errors import BuildError
from model_builds.execute import BuildProduct, Progress, execute
from model_builds.protocol import BuilderInfo, BuildTask, RemoteFile

log = logging.getLogger(__name__)


class BuildQueue(Protocol):
    """Where builds come from and go back to (the control plane, in-process or over REST)."""

    def claim(self, info: BuilderInfo) -> BuildTask | None: ...

    def fetch(self, remote: RemoteFile, dest: Path) -> Path: ...

    def heartbeat(self, build_id: str, message: str | None, progress: float | None) -> bool: ...

    def complete(self, build_id: str, product: BuildProduct) -> None: ...

    def fail(self, build_id: str, error: str) -> None: ...


Executor = Callable[[BuildTask, Path, Path, Path | None, Path, Progress], BuildProduct]


class LeaseLost(Exception):
    """The control plane no longer holds this build for us: stop working on it."""


class _Lease:
    """Renews the lease on a timer and with each progress message; remembers when it was refused."""

    def __init__(self, queue: BuildQueue, build_id: str, lease_s: float) -> None:
        self._queue = queue
        self._build_id = build_id
        self._interval = max(lease_s / 3.0, 0.05)
        self._done = threading.Event()
        self.lost = False
        self._ticker = threading.Thread(target=self._tick, name=f"lease-{build_id}", daemon=True)

    def __enter__(self) -> _Lease:
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._ticker.join(timeout=5)

    def _renew(self, message: str | None, progress: float | None) -> None:
        try:
            if not self._queue.heartbeat(self._build_id, message, progress):
                self.lost = True
        except Exception:  # a failed renewal is retried at the next tick; the server's lease decides
            log.warning("heartbeat for build %s failed", self._build_id, exc_info=True)

    def _tick(self) -> None:
        while not self._done.wait(self._interval) and not self.lost:
            self._renew(None, None)

    def progress(self, message: str, fraction: float | None) -> None:
        if not self.lost:
            self._renew(message, fraction)
        if self.lost:
            raise LeaseLost(self._build_id)


def _inputs(queue: BuildQueue, task: BuildTask, taskdir: Path) -> tuple[Path, Path, Path | None]:
    source = queue.fetch(task.source, taskdir / "source.onnx")
    samples = queue.fetch(task.samples, taskdir / "samples.npz")
    calibration = None if task.calibration is None else queue.fetch(task.calibration, taskdir / "calibration.npz")
    return source, samples, calibration


def build_task(queue: BuildQueue, task: BuildTask, workdir: Path, executor: Executor = execute) -> None:
    """Fetch, execute and report one claimed task; every outcome is reported unless the lease was lost."""
    taskdir = workdir / task.build_id
    taskdir.mkdir(parents=True, exist_ok=True)
    try:
        with _Lease(queue, task.build_id, task.lease_s) as lease:
            source, samples, calibration = _inputs(queue, task, taskdir)
            lease.progress(f"building {task.spec.kind.value} {task.spec.precision.value} for {task.spec.target}", 0.01)
            product = executor(task, source, samples, calibration, taskdir, lease.progress)
            if lease.lost:
                raise LeaseLost(task.build_id)
            queue.complete(task.build_id, product)
    except LeaseLost:
        log.warning("lease on build %s lost: abandoned without reporting", task.build_id)
    except BuildError as exc:
        queue.fail(task.build_id, without_paths(str(exc), workdir))
    except Exception as exc:  # a bug or an I/O failure: report it, keep the loop alive
        log.exception("build %s failed unexpectedly", task.build_id)
        queue.fail(task.build_id, without_paths(f"the builder failed: {type(exc).__name__}: {exc}", workdir))
    finally:
        shutil.rmtree(taskdir, ignore_errors=True)


def without_paths(reason: str, workdir: Path) -> str:
    """A failure's reason is shown to operators through the API: the builder's folders are none of their business
    (on the control plane's own builder they would reveal its data directory)."""
    for folder in {str(workdir.resolve()), str(workdir)}:
        reason = reason.replace(folder + "/", "").replace(folder, "the build folder")
    return reason


def run_once(queue: BuildQueue, info: BuilderInfo, workdir: Path, executor: Executor = execute) -> bool:
    """Claim and build one task; True if there was one."""
    task = queue.claim(info)
    if task is None:
        return False
    build_task(queue, task, workdir, executor)
    return True


def run_builder(
    queue: BuildQueue,
    info: BuilderInfo,
    workdir: Path,
    stop: threading.Event,
    idle_wait: Callable[[float], bool] | None = None,
    poll_s: float = 2.0,
    executor: Executor = execute,
) -> None:
    """Build until `stop` is set; between empty claims wait `poll_s` (by default on `stop`, so stopping is prompt)."""
    wait = idle_wait or stop.wait
    while not stop.is_set():
        try:
            worked = run_once(queue, info, workdir, executor)
        except Exception:  # the control plane is unreachable or answered nonsense: try again later
            log.warning("claiming a build failed; retrying in %.1f s", poll_s, exc_info=True)
            worked = False
        if not worked:
            wait(poll_s)
