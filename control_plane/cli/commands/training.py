"""`edgectl train SPEC.yaml` and `edgectl training list|show`: training jobs whose output becomes a version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from control_plane.cli import views
from control_plane.cli.client import ApiClient, CliError
from control_plane.cli.parsing import load_training_spec
from control_plane.cli.state import CliState, state_of
from control_plane.cli.waiting import poll_until

training_app = typer.Typer(help="Training jobs.", no_args_is_help=True)

FINAL_STATUSES = ("succeeded", "failed")


def last_log_line(job: dict[str, Any]) -> str:
    lines = [line for line in str(job.get("logs_tail") or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def job_progress(job: dict[str, Any]) -> str:
    line = last_log_line(job)
    return f"{job.get('status')}" + (f": {line}" if line else "")


def wait_for_job(api: ApiClient, job_id: str, timeout: float, on_update: Any | None = None) -> dict[str, Any]:
    """Poll the job until it succeeds or fails; raises WaitTimeout after `timeout` seconds."""
    job: dict[str, Any] = poll_until(
        lambda: api.training_job(job_id),
        lambda j: j.get("status") in FINAL_STATUSES,
        timeout=timeout,
        what=f"training job {job_id}",
        interval=0.5,
        on_update=on_update,
        describe=job_progress,
    )
    return job


def train(
    ctx: typer.Context,
    spec: Annotated[
        Path, typer.Argument(help="TrainingJobSpec YAML (entrypoint: relative to a server training code root).")
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until the job ends, then the registered version.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds.")] = 3600.0,
) -> None:
    """Start a training job from a spec file; its output (ONNX, samples, metrics) becomes a model version."""
    body = load_training_spec(spec)
    state = state_of(ctx)
    with state.client() as api:
        job = api.create_training_job(body)
        if not wait:
            state.output.emit(job, views.training_job_view)
            return
        final = _wait_with_status(state, api, str(job["id"]), timeout)
        _report_final(state, api, final)


def _wait_with_status(state: CliState, api: ApiClient, job_id: str, timeout: float) -> dict[str, Any]:
    with state.output.err.status(f"training job {job_id}: queued") as status:
        return wait_for_job(api, job_id, timeout, lambda j: status.update(f"training job {job_id}: {job_progress(j)}"))


def _report_final(state: CliState, api: ApiClient, job: dict[str, Any]) -> None:
    if job.get("status") != "succeeded":
        state.output.emit(job, views.training_job_view)
        raise CliError(f"training job {job.get('id')} failed: {job.get('error') or 'see the log above'}")
    model, version = job.get("model"), job.get("version")
    if model is None or version is None:
        state.output.emit(job, views.training_job_view)
        return
    state.output.note(f"training job {job.get('id')} succeeded: registered {model} v{version}")
    state.output.emit(api.version(str(model), int(version)), views.version_view)


@training_app.command("list")
def list_jobs(ctx: typer.Context) -> None:
    """List training jobs."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.training_jobs(), views.training_jobs_view)


@training_app.command("show")
def show(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Training job id.")]) -> None:
    """Show a training job: status, spec, the tail of its log, and the version it registered."""
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.training_job(job_id), views.training_job_view)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.add_typer(training_app, name="training")
