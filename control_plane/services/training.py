"""Training jobs: run an entrypoint on a backend in the background and register its output as a version.

A job's record is stored before it runs and updated at each state change, so a control plane that dies mid-job
finds it at startup and marks it failed instead of showing it running forever. It never trusts the output: the
registry validates the produced model and samples exactly as it validates an upload.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from control_plane.domain.errors import InvalidInput, NotFound, ServiceError
from control_plane.domain.registry import LineageSource
from control_plane.domain.training import TrainingJob, TrainingJobSpec, TrainingStatus
from control_plane.services.ports import Clock, RegistryStore, TrainingBackend
from control_plane.services.registry import RegistryService

log = logging.getLogger(__name__)

RESTARTED_REASON = "control plane restarted during the job"
LOG_TAIL_BYTES = 4000


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def data_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's listing (relative path and size of every file)."""
    if path.is_file():
        return file_digest(path)
    lines = sorted(f"{p.relative_to(path).as_posix()}\t{p.stat().st_size}" for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - limit))
        return fh.read().decode(errors="replace")


class TrainingService:
    def __init__(
        self,
        store: RegistryStore,
        registry: RegistryService,
        backend: TrainingBackend,
        clock: Clock,
        jobs_dir: Path,
        workers: int = 2,
    ) -> None:
        self._store = store
        self._registry = registry
        self._backend = backend
        self._clock = clock
        self._jobs_dir = jobs_dir
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
        spec = _resolved(spec)
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

    def _run_guarded(self, job: TrainingJob) -> None:
        try:
            self._run(job)
        except Exception as exc:
            log.exception("training job %s crashed", job.id)
            self._finish(job, TrainingStatus.FAILED, error=f"internal error: {exc}")

    def _run(self, job: TrainingJob) -> None:
        job = self._store.save_job(replace(job, status=TrainingStatus.RUNNING, started_at=self._clock()))
        entrypoint = Path(job.spec.entrypoint)
        output = Path(job.log_path).parent / "output"
        output.mkdir(exist_ok=True)
        outcome = self._backend.run(
            job.id, entrypoint, job.spec.parameters, output, Path(job.log_path), cwd=entrypoint.parent
        )
        if outcome.cancelled:
            self._finish(job, TrainingStatus.FAILED, error="cancelled: the control plane shut down during the job")
        elif outcome.returncode != 0:
            self._finish(job, TrainingStatus.FAILED, error=f"the entrypoint exited with code {outcome.returncode}")
        else:
            self._register_output(job, output)

    def _register_output(self, job: TrainingJob, output: Path) -> None:
        model = output / "model.onnx"
        samples = output / "samples.npz"
        try:
            if not model.is_file():
                raise InvalidInput("the entrypoint succeeded but wrote no model.onnx")
            metrics = _read_metrics(output / "metrics.json")
            lineage = self._lineage(job, metrics.pop("tool_versions", None))
            version = self._registry.register_files(
                job.spec.model_name, model, samples if samples.is_file() else None, lineage, metrics
            )
        except ServiceError as exc:
            self._finish(job, TrainingStatus.FAILED, error=f"output refused: {exc}")
            return
        self._finish(job, TrainingStatus.SUCCEEDED, model=version.model, version=version.version)

    def _lineage(self, job: TrainingJob, reported_tools: Any) -> dict[str, Any]:
        tools = {"python": platform.python_version()}
        if isinstance(reported_tools, dict):
            tools |= {str(k): str(v) for k, v in reported_tools.items()}
        data_path = job.spec.data.path
        return {
            "source": LineageSource.TRAINING.value,
            "training_job_id": job.id,
            "data_digest": data_digest(Path(data_path)) if data_path else None,
            "code_revision": file_digest(Path(job.spec.entrypoint)),
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


def _resolved(spec: TrainingJobSpec) -> TrainingJobSpec:
    """The spec with absolute paths, checked to exist (relative paths are taken from the server's cwd)."""
    entrypoint = Path(spec.entrypoint).expanduser().resolve()
    if not entrypoint.is_file():
        raise InvalidInput(f"entrypoint {spec.entrypoint!r} is not a file on the control plane host")
    data = spec.data
    if data.path is not None:
        data_path = Path(data.path).expanduser().resolve()
        if not data_path.exists():
            raise InvalidInput(f"data.path {data.path!r} does not exist on the control plane host")
        data = data.model_copy(update={"path": str(data_path)})
    return spec.model_copy(update={"entrypoint": str(entrypoint), "data": data})


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
