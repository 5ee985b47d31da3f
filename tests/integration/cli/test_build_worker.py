"""The remote build path end to end: a real `edgectl server` with no in-process builders, a build that waits,
visibly, for a builder, and a real `edgectl build-worker` subprocess (with its own builder token) that takes it over
the REST builder protocol and builds it to `succeeded`; the worker stops cleanly on SIGTERM. A worker with a token
that is not a builder's never starts; `edgectl builders register` and `edgectl builds cancel` work as an admin."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.integration.cli.test_edgectl import Server, edgectl, ok_json, tiny_model
from tests.support import EDGECTL, ControlPlaneProcess, Mosquitto, mint_token, python_env

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


def push(server: Server, tmp_path: Path, name: str) -> None:
    model = tiny_model(tmp_path / "affine.onnx")
    np.savez(tmp_path / "samples.npz", **{"input:x": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)})
    pushed = edgectl(server, "models", "push", name, str(model), "--samples", str(tmp_path / "samples.npz"))
    assert pushed.returncode == 0, pushed.stderr


def worker_argv(server: Server, tmp_path: Path) -> list[str]:
    return [EDGECTL, "--url", server.url, "build-worker", "--builder-id", "gpu-host-1",
            "--workdir", str(tmp_path / "work"), "--poll", "0.2"]  # fmt: skip


def test_a_build_worker_subprocess_builds_an_fp16_artifact(lone_server: Server, tmp_path: Path) -> None:
    push(lone_server, tmp_path, "remote")
    created = ok_json(lone_server, "build", "remote", "1", "--target", "dgpu-ampere", "--kind", "onnx-fp16")
    assert isinstance(created, dict)
    (queued,) = created["builds"]
    assert (queued["kind"], queued["precision"], queued["status"]) == ("onnx-fp16", "fp16", "waiting_for_builder")
    assert queued["waiting_for"] == "a builder that builds onnx-fp16"

    with lone_server.client() as admin:
        builder_token = mint_token(admin, "builder", "gpu-host-1-token")
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            worker_argv(lone_server, tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=python_env() | {"EDGECTL_TOKEN": builder_token},
        )
    try:
        followed = edgectl(lone_server, "build", "remote", "1", "-t", "dgpu-ampere", "-k", "onnx-fp16", "--wait")
        assert followed.returncode == 0, followed.stderr + worker_log.read_text()
        build = ok_json(lone_server, "builds", "show", queued["id"])
        assert isinstance(build, dict)
        assert (build["status"], build["builder_id"]) == ("succeeded", "gpu-host-1")
        assert build["manifest"]["builder"]["id"] == "gpu-host-1" and build["parity"]["passed"] is True
        assert build["manifest"]["builder"]["name"] == "gpu-host-1-token"  # the identity, not only the label
        assert build["parity"]["measured_by"] == "control-plane"
        builders = ok_json(lone_server, "builders")
        assert isinstance(builders, list) and [b["builder_id"] for b in builders] == ["gpu-host-1"]
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    text = worker_log.read_text()
    assert code == 0, text
    assert "builder gpu-host-1" in text and f"took build {queued['id']}" in text and "stopped" in text


def test_a_worker_with_a_token_that_is_not_a_builders_does_not_start(lone_server: Server, tmp_path: Path) -> None:
    with lone_server.client() as admin:
        operator_token = mint_token(admin, "operator", "not-a-builder")
    for env in ({"EDGECTL_TOKEN": operator_token}, {"EDGECTL_TOKEN": ""}):
        done = subprocess.run(
            worker_argv(lone_server, tmp_path), capture_output=True, text=True, env=python_env() | env, timeout=60
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "builder token" in done.stderr or "needs role builder" in done.stderr, done.stderr


def test_register_a_gpu_builder_and_cancel_a_build(lone_server: Server, tmp_path: Path) -> None:
    registered = ok_json(
        lone_server, "builders", "register", "orin-01", "--compute-capability", "8.7", "--tensorrt", "10.x"
    )
    assert isinstance(registered, dict) and registered["token"] and registered["subject"].startswith("token:")
    assert (registered["compute_capability"], registered["tensorrt"]) == ("8.7", "10.x")
    refused = edgectl(lone_server, "builders", "register", "x", "--compute-capability", "eight", "--tensorrt", "10")
    assert refused.returncode == 1 and "compute_capability" in refused.stderr

    push(lone_server, tmp_path, "to-cancel")
    created = ok_json(lone_server, "build", "to-cancel", "1", "--target", "cpu-x86_64")
    assert isinstance(created, dict)
    (queued,) = created["builds"]
    cancelled = ok_json(lone_server, "builds", "cancel", queued["id"])
    assert isinstance(cancelled, dict) and cancelled["status"] == "cancelled"
    again = edgectl(lone_server, "builds", "cancel", queued["id"])
    assert again.returncode == 1 and "only a queued or running build can be cancelled" in again.stderr
