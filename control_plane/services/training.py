"""Training jobs: run an entrypoint on a backend in the background and register its output as a version.

A job's record is stored before it runs and updated at each state change, so a control plane that dies mid-job
finds it at startup and marks it failed instead of showing it running forever. It never trusts the output: the
registry validates the produced model and samples exactly as it validates an upload.

It never runs what the API sent: the spec's entrypoint and data path are looked up under the roots the operator
registered (`training.code_dirs`, `training.data_dirs`; `services.training_paths`), and the job keeps the spec
as given (relative paths), so no answer shows where the roots are on the host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from control_plane.domain.errors import InvalidInput, NotFound, ServiceError
from control_plane.domain.registry import LineageSource
from control_plane.domain.training import TrainingJob, TrainingJobSpec, TrainingStatus
from control_plane.domain.training_paths import DATA, ENTRYPOINT
from control_plane.services.ports import Clock, RegistryStore, TrainingBackend
from control_plane.services.registry import RegistryService
from control_plane.services.training_paths import locate
from model_builds.digests import file_digest

log = logging.getLogger(__name__)

RESTARTED_REASON = "control plane restarted during the job"
LOG_TAIL_BYTES = 4000


def data_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's listing (relative path and size of every file)."""
    if path.is_file():
        return file_digest(path)[0]
    lines = sorted(f"{p.relative_to(path).as_posix()}\t{p.stat().st_size}" for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - limit))
        return fh.read().decode(errors="replace")


@dataclass(frozen=True)
class JobPaths:
    """A spec's entrypoint and data path as found under the registered roots (absolute, symlinks resolved)."""

    entrypoint: Path
    data: Path | None


class TrainingService:
    def __init__(
        self,
        store: RegistryStore,
        registry: RegistryService,
        backend: TrainingBackend,
        clock: Clock,
        jobs_dir: Path,
        workers: int = 2,
        *,
        code_dirs: Sequence[Path] = (),
        data_dirs: Sequence[Path] = (),
    ) -> None:
        self._store = store
        self._registry = registry
        self._backend = backend
        self._clock = clock
        self._jobs_dir = jobs_dir
        self._code_dirs = tuple(code_dirs)
        self._data_dirs = tuple(data_dirs)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="training")

    def recover(self) -> int:
        """Fail the jobs a previous process left unfinished; how many."""
        return self._store.fail_unfinished_jobs(RESTARTED_REASON, self._clock())

    def shutdown(self) -> None:
        self._backend.cancel_all()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.recover()  # queued jobs that never started

    def list_jobs(self) -> list[TrainingJob]:
        return self._store.list_jobs()

    def get_job(self, job_id: str) -> TrainingJob:
        job = self._store.get_job(job_id)
        if job is None:
            raise NotFound(f"training job {job_id!r} does not exist")
        return job

    def logs_tail(self, job: TrainingJob) -> str:
        return read_tail(Path(job.log_path))

    def submit(self, spec: TrainingJobSpec) -> TrainingJob:
        self.paths_of(spec)  # refuse at once what would be refused when the job starts
        job_id = uuid.uuid4().hex[:16]
        folder = self._jobs_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        job = TrainingJob(
            id=job_id,
            spec=spec,
            status=TrainingStatus.QUEUED,
            created_at=self._clock(),
            started_at=None,
            finished_at=None,
            error=None,
            log_path=str(folder / "job.log"),
            model=None,
            version=None,
        )
        self._store.save_job(job)
        self._executor.submit(self._run_guarded, job)
        return job

    def paths_of(self, spec: TrainingJobSpec) -> JobPaths:
        """Where the spec's entrypoint and data are under the registered roots; InvalidInput if they are not."""
        entrypoint = locate(ENTRYPOINT, spec.entrypoint, self._code_dirs)
        data = None if spec.data.path is None else locate(DATA, spec.data.path, self._data_dirs)
        return JobPaths(entrypoint=entrypoint, data=data)

    def _run_guarded(self, job: TrainingJob) -> None:
        try:
            self._run(job)
        except Exception as exc:
            log.exception("training job %s crashed", job.id)
            self._finish(job, TrainingStatus.FAILED, error=f"internal error: {exc}")

    def _run(self, job: TrainingJob) -> None:
        job = self._store.save_job(replace(job, status=TrainingStatus.RUNNING, started_at=self._clock()))
        try:  # looked up again when it starts: the roots may have changed while the job was queued
            paths = self.paths_of(job.spec)
            code_revision = file_digest(paths.entrypoint)[0]  # the bytes about to run, not those found after the run
        except (ServiceError, OSError) as exc:
            reason = str(exc) if isinstance(exc, ServiceError) else "the entrypoint could not be read"
            self._finish(job, TrainingStatus.FAILED, error=f"not started: {reason}")
            return
        folder = Path(job.log_path).parent
        output = folder / "output"
        output.mkdir(exist_ok=True)
        outcome = self._backend.run(
            job.id, paths.entrypoint, job.spec.parameters, output, Path(job.log_path), cwd=folder
        )
        if outcome.cancelled:
            self._finish(job, TrainingStatus.FAILED, error="cancelled: the control plane shut down during the job")
        elif outcome.returncode != 0:
            self._finish(job, TrainingStatus.FAILED, error=f"the entrypoint exited with code {outcome.returncode}")
        else:
            self._register_output(job, output, paths.data, code_revision)

    def _register_output(self, job: TrainingJob, output: Path, data: Path | None, code_revision: str) -> None:
        model = output / "model.onnx"
        samples = output / "samples.npz"
        try:
            if not model.is_file():
                raise InvalidInput("the entrypoint succeeded but wrote no model.onnx")
            metrics = _read_metrics(output / "metrics.json")
            lineage = self._lineage(job, metrics.pop("tool_versions", None), data, code_revision)
            version = self._registry.register_files(
                job.spec.model_name, model, samples if samples.is_file() else None, lineage, metrics
            )
        except ServiceError as exc:
            self._finish(job, TrainingStatus.FAILED, error=f"output refused: {exc}")
            return
        self._finish(job, TrainingStatus.SUCCEEDED, model=version.model, version=version.version)

    def _lineage(self, job: TrainingJob, reported_tools: Any, data: Path | None, code_revision: str) -> dict[str, Any]:
        tools = {"python": platform.python_version()}
        if isinstance(reported_tools, dict):
            tools |= {str(k): str(v) for k, v in reported_tools.items()}
        return {
            "source": LineageSource.TRAINING.value,
            "training_job_id": job.id,
            "data_digest": data_digest(data) if data is not None else None,
            "code_revision": code_revision,
            "parameters": dict(job.spec.parameters),
            "tool_versions": tools,
        }

    def _finish(
        self,
        job: TrainingJob,
        status: TrainingStatus,
        error: str | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> None:
        current = self._store.get_job(job.id) or job
        self._store.save_job(
            replace(current, status=status, error=error, model=model, version=version, finished_at=self._clock())
        )
        log.info("training job %s %s%s", job.id, status.value, f": {error}" if error else "")


def _read_metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"metrics.json is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("metrics.json must hold a JSON object")
    return data
