"""The builder loop against an in-memory fake of the control plane's build queue (the real one is the service's).

The fake keeps the protocol's promises: tasks handed out once, files checked by sha256, heartbeats answered
with the lease's state, outcomes recorded. Builds run for real (onnxruntime) on a tiny model.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.execute import BuildProduct
from model_builds.kinds import ONNX_KINDS
from model_builds.protocol import BuilderInfo, BuildTask, RemoteFile
from model_builds.worker import run_builder, run_once
from tests.unit.model_builds.models import mlp, write
from tests.unit.model_builds.test_builds import task_for

INFO = BuilderInfo("builder-1", "host", ONNX_KINDS, "cpu-x86_64")


@dataclass
class FakeControlPlaneQueue:
    tasks: list[BuildTask]
    files: dict[str, bytes]
    lease_held: bool = True
    completed: dict[str, BuildProduct] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def claim(self, info: BuilderInfo) -> BuildTask | None:
        return self.tasks.pop(0) if self.tasks else None

    def fetch(self, remote: RemoteFile, dest: Path) -> Path:
        data = self.files[remote.url]
        assert hashlib.sha256(data).hexdigest() == remote.sha256
        dest.write_bytes(data)
        return dest

    def heartbeat(self, build_id: str, message: str | None, progress: float | None) -> bool:
        if message:
            self.messages.append(message)
        return self.lease_held

    def complete(self, build_id: str, product: BuildProduct) -> None:
        assert product.artifact.is_file()  # the artifact must still exist when it is uploaded
        self.completed[build_id] = product

    def fail(self, build_id: str, error: str) -> None:
        self.failed[build_id] = error


def remote(url: str, data: bytes) -> RemoteFile:
    return RemoteFile(url, hashlib.sha256(data).hexdigest(), len(data))


def queue_with(tmp_path: Path, *kinds: ArtifactKind) -> FakeControlPlaneQueue:
    source, samples = write(mlp(), tmp_path)
    files = {"/src": source.read_bytes(), "/smp": samples.read_bytes(), "/junk": b"not an npz"}
    tasks = [
        task_for(kind).model_copy(
            update={
                "build_id": f"b{i}",
                "source": remote("/src", files["/src"]),
                "samples": remote("/smp", files["/smp"]),
            }
        )
        for i, kind in enumerate(kinds)
    ]
    return FakeControlPlaneQueue(tasks, files)


def test_a_task_is_built_and_completed_with_its_proof(tmp_path: Path) -> None:
    queue = queue_with(tmp_path, ArtifactKind.ONNX)
    assert run_once(queue, INFO, tmp_path / "work")
    product = queue.completed["b0"]
    assert product.parity.passed and product.latency.batches
    assert "building onnx fp32 for cpu-x86_64" in queue.messages
    assert not run_once(queue, INFO, tmp_path / "work")  # nothing left
    assert not (tmp_path / "work" / "b0").exists()  # the work folder is cleaned up


def test_a_failing_task_is_reported_and_the_loop_goes_on(tmp_path: Path) -> None:
    queue = queue_with(tmp_path, ArtifactKind.ONNX, ArtifactKind.ONNX_FP16)
    queue.tasks[0] = queue.tasks[0].model_copy(update={"samples": remote("/junk", queue.files["/junk"])})
    stop = threading.Event()
    run_builder(queue, INFO, tmp_path / "work", stop, idle_wait=lambda s: stop.set() or True, poll_s=0)
    assert "samples are unusable: not a readable .npz" in queue.failed["b0"]
    assert list(queue.completed) == ["b1"] and "b1" not in queue.failed


def test_a_lost_lease_abandons_the_build_without_reporting(tmp_path: Path) -> None:
    queue = queue_with(tmp_path, ArtifactKind.ONNX_INT8_QDQ)
    queue.lease_held = False
    assert run_once(queue, INFO, tmp_path / "work")
    assert queue.completed == {} and queue.failed == {}


def test_an_unreachable_control_plane_does_not_stop_the_loop(tmp_path: Path) -> None:
    calls: list[int] = []

    class Unreachable(FakeControlPlaneQueue):
        def claim(self, info: BuilderInfo) -> BuildTask | None:
            calls.append(1)
            raise ConnectionError("control plane down")

    stop = threading.Event()
    waits: list[float] = []

    def idle(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 3:
            stop.set()
        return stop.is_set()

    run_builder(Unreachable([], {}), INFO, tmp_path, stop, idle_wait=idle, poll_s=1.5)
    assert (len(calls), waits) == (3, [1.5, 1.5, 1.5])
