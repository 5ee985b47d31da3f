"""`edgectl build-worker`, `builders [register]`, `doctor`: build hosts. A build worker is a GPU (or any) host that
takes builds from the control plane over the REST builder protocol, with its own `builder` token; `doctor` says
what this host could build; `builders register` (admin) creates a builder identity for GPU hardware, whose TensorRT
plans the control plane then accepts.

The worker loop itself is `model_builds.worker.run_builder` over `model_builds.remote_queue.HttpBuildQueue`;
this module only wires it up, prints what happens, and stops it cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from control_plane.cli import views
from control_plane.cli.client import ApiClient, CliError, tls_verify
from control_plane.cli.output import Output
from control_plane.cli.state import state_of
from model_builds import ort_runtime
from model_builds.capabilities import detect_builder
from model_builds.execute import BuildProduct
from model_builds.protocol import BuilderInfo, BuildTask, RemoteFile
from model_builds.remote_queue import HttpBuildQueue
from model_builds.worker import run_builder


def doctor_facts(info: BuilderInfo) -> dict[str, Any]:
    return info.as_dict() | {
        "onnxruntime_version": ort_runtime.version(),
        "onnxruntime_providers": ort_runtime.available_providers(),
    }


def doctor(ctx: typer.Context) -> None:
    """Print what this host can build (kinds, and why not the others), its GPU, TensorRT and onnxruntime."""
    state = state_of(ctx)
    state.output.emit(doctor_facts(detect_builder()), views.doctor_view)


builders_app = typer.Typer(
    help="Build workers: `edgectl builders` lists those seen recently; `builders register` adds a GPU builder."
)


@builders_app.callback(invoke_without_command=True)
def builders(ctx: typer.Context) -> None:
    """List the builders the control plane heard from recently, with what each can build."""
    if ctx.invoked_subcommand is not None:
        return
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.builders(), views.builders_view)


@builders_app.command("register")
def register_builder(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The builder's name, e.g. orin-builder-01.")],
    compute_capability: Annotated[
        str, typer.Option("--compute-capability", help="Its GPU's compute capability, e.g. 8.7.")
    ],
    tensorrt: Annotated[str, typer.Option("--tensorrt", help="Its TensorRT release: 10.3.0, or 10.3 / 10.x.")],
    gpu_class: Annotated[
        str | None, typer.Option("--gpu-class", help="Only plans of this GPU class (default: any).")
    ] = None,
) -> None:
    """Register a GPU builder (admin): a builder identity whose TensorRT plans for this hardware are accepted.

    Prints the builder's token once; run the worker with it (`EDGECTL_TOKEN=... edgectl build-worker`).
    """
    body = {"name": name, "compute_capability": compute_capability, "tensorrt": tensorrt, "gpu_class": gpu_class}
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.register_builder(body), views.builder_registered_view)


class _ReportingQueue:
    """The HTTP queue, telling the operator about each build it takes and how it ends."""

    def __init__(self, inner: HttpBuildQueue, output: Output) -> None:
        self._inner = inner
        self._output = output

    def claim(self, info: BuilderInfo) -> BuildTask | None:
        task = self._inner.claim(info)
        if task is not None:
            spec = task.spec
            self._output.note(
                f"took build {task.build_id}: {task.model} v{task.version} {spec.target} "
                f"{spec.kind.value} {spec.precision.value}"
            )
        return task

    def fetch(self, remote: RemoteFile, dest: Path) -> Path:
        return self._inner.fetch(remote, dest)

    def heartbeat(self, build_id: str, message: str | None, progress: float | None) -> bool:
        held = self._inner.heartbeat(build_id, message, progress)
        if message:
            self._output.note(f"  {build_id}: {message}")
        if not held:
            self._output.note(f"  {build_id}: lease lost; abandoning the build")
        return held

    def complete(self, build_id: str, product: BuildProduct) -> None:
        self._inner.complete(build_id, product)
        verdict = "within" if product.parity.passed else "OUTSIDE"
        self._output.note(f"  {build_id}: built, parity {verdict} tolerance; reported to the control plane")

    def fail(self, build_id: str, error: str) -> None:
        self._inner.fail(build_id, error)
        self._output.note(f"  {build_id}: failed: {error}")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def build_worker(
    ctx: typer.Context,
    builder_id: Annotated[str | None, typer.Option("--builder-id", help="Default: HOSTNAME-RANDOM.")] = None,
    workdir: Annotated[Path, typer.Option("--workdir", help="Scratch space for builds.")] = Path(".edge-build-work"),
    poll_s: Annotated[float, typer.Option("--poll", help="Seconds between claims while idle.")] = 2.0,
) -> None:
    """Take builds from the control plane (--url) and build them on this host until Ctrl-C or SIGTERM."""
    state = state_of(ctx)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    info = detect_builder(builder_id)
    kinds = ", ".join(k.value for k in info.kinds)
    state.output.note(f"builder {info.builder_id} on {info.hostname}: builds {kinds} for {state.url}")
    for reason in info.reasons:
        state.output.note(f"  cannot build {reason}")
    token = _builder_token(state.url, state.token)
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    queue = HttpBuildQueue(state.url, info.builder_id, token=token, verify=tls_verify(state.ca_file))
    try:
        with _stop_on_signals(stop):
            run_builder(_ReportingQueue(queue, state.output), info, workdir, stop, poll_s=poll_s)
    finally:
        queue.close()
    state.output.note(f"builder {info.builder_id} stopped")


def _builder_token(url: str, token: str | None) -> str:
    """The worker's token, checked once before it starts: a missing or non-builder token would only ever be
    refused, build after build."""
    if not token:
        raise CliError(
            "a build worker needs a builder token (--token or EDGECTL_TOKEN): an admin makes one with "
            "`edgectl tokens create NAME --role builder`, or `edgectl builders register` for a GPU builder"
        )
    with ApiClient(url, token=token) as api:
        me = api.whoami()
    if me.get("role") != "builder":
        raise CliError(f"the token is {me.get('name')}'s, of role {me.get('role')}; a build worker needs role builder")
    return token


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
    app.add_typer(builders_app, name="builders")
    app.command("build-worker")(build_worker)
