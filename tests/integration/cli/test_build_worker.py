"""The remote build path end to end: a real `edgectl server` with no in-process builders, a build that waits,
visibly, for a builder, and a real `edgectl build-worker` subprocess that takes it over the REST builder protocol
and builds it to `succeeded`; the worker stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.integration.cli.test_edgectl import Server, edgectl, ok_json, tiny_model
from tests.support import EDGECTL, ControlPlaneProcess, Mosquitto, python_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lone_server(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`edgectl server` with build_workers=0: only remote builders build."""
    data_dir = tmp_path_factory.mktemp("lone-server") / "data"
    running = ControlPlaneProcess(mosquitto, data_dir, extra_env={"EDGE_CP_BUILD_WORKERS": "0"}).start()
    try:
        yield running
    finally:
        running.stop()


def test_a_build_worker_subprocess_builds_an_fp16_artifact(lone_server: Server, tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "affine.onnx")
    np.savez(tmp_path / "samples.npz", **{"input:x": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)})
    pushed = edgectl(lone_server, "models", "push", "remote", str(model), "--samples", str(tmp_path / "samples.npz"))
    assert pushed.returncode == 0, pushed.stderr

    created = ok_json(lone_server, "build", "remote", "1", "--target", "dgpu-ampere", "--kind", "onnx-fp16")
    assert isinstance(created, dict)
    (queued,) = created["builds"]
    assert (queued["kind"], queued["precision"], queued["status"]) == ("onnx-fp16", "fp16", "waiting_for_builder")
    assert queued["waiting_for"] == "a builder that builds onnx-fp16"

    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [EDGECTL, "--url", lone_server.url, "build-worker", "--builder-id", "gpu-host-1",
             "--workdir", str(tmp_path / "work"), "--poll", "0.2"],
            stdout=out, stderr=subprocess.STDOUT, env=python_env(),
        )  # fmt: skip
    try:
        followed = edgectl(lone_server, "build", "remote", "1", "-t", "dgpu-ampere", "-k", "onnx-fp16", "--wait")
        assert followed.returncode == 0, followed.stderr + worker_log.read_text()
        build = ok_json(lone_server, "builds", "show", queued["id"])
        assert isinstance(build, dict)
        assert (build["status"], build["builder_id"]) == ("succeeded", "gpu-host-1")
        assert build["manifest"]["builder"]["id"] == "gpu-host-1" and build["parity"]["passed"] is True
        builders = ok_json(lone_server, "builders")
        assert isinstance(builders, list) and [b["builder_id"] for b in builders] == ["gpu-host-1"]
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    text = worker_log.read_text()
    assert code == 0, text
    assert "builder gpu-host-1" in text and f"took build {queued['id']}" in text and "stopped" in text
