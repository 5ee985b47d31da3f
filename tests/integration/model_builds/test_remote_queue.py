"""HttpBuildQueue against a real HTTP server on loopback speaking the builder routes of docs/builds.md.

The server is a small FastAPI app written here (the control plane's real routes are tested with the service and
in tests/integration/control_plane/test_builder_trust.py); it answers as the contract says and records what the
builder sent, including the bearer token on every call.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest
import uvicorn
from fastapi import FastAPI, File, Form, Request, Response, UploadFile

from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.kinds import ONNX_KINDS
from model_builds.protocol import BuilderInfo, RemoteFile
from model_builds.remote_queue import HttpBuildQueue, QueueError
from model_builds.worker import run_once
from tests.support import free_port, port_open, wait_for
from tests.unit.model_builds.models import mlp, write
from tests.unit.model_builds.test_builds import task_for

pytestmark = pytest.mark.integration
INFO = BuilderInfo("ignored", "host-1", ONNX_KINDS, "cpu-x86_64")
TOKEN = "edge_builder-secret"


@dataclass
class ControlPlaneDouble:
    files: dict[str, bytes] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)
    beats: list[dict[str, Any]] = field(default_factory=list)
    completed: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    refused: dict[str, int] = field(default_factory=dict)  # build id -> 401/403 for its heartbeats
    authorizations: list[str | None] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record_token(request: Request, call_next: Any) -> Any:
            self.authorizations.append(request.headers.get("authorization"))
            return await call_next(request)

        @app.post("/v1/builders/claim")
        async def claim(request: Request) -> Response:
            self.claims.append(await request.json())
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return Response('{"detail": "unknown token"}', status_code=401, media_type="application/json")
            if not self.tasks:
                return Response(status_code=204)
            return Response(json.dumps(self.tasks.pop(0)), media_type="application/json")

        @app.post("/v1/builds/{build_id}/heartbeat")
        async def heartbeat(build_id: str, request: Request) -> Response:
            self.beats.append(await request.json())
            return Response(status_code=409 if build_id in self.lost else self.refused.get(build_id, 200))

        @app.post("/v1/builds/{build_id}/complete")
        async def complete(
            build_id: str,
            artifact: Annotated[UploadFile, File()],
            report: Annotated[str, Form()],
            builder_id: Annotated[str, Form()],
        ) -> dict[str, str]:
            data = await artifact.read()
            self.completed[build_id] = {"sha256": hashlib.sha256(data).hexdigest(), "report": json.loads(report),
                                        "builder_id": builder_id, "size": len(data)}  # fmt: skip
            return {"id": build_id, "status": "succeeded"}

        @app.post("/v1/builds/{build_id}/fail")
        async def fail(build_id: str, request: Request) -> dict[str, str]:
            self.failed[build_id] = (await request.json())["error"]
            return {"id": build_id, "status": "failed"}

        @app.get("/files/{name}")
        async def download(name: str, request: Request) -> Response:
            data = self.files[name]
            start = int(request.headers.get("range", "bytes=0-").removeprefix("bytes=").split("-")[0])
            return Response(data[start:], status_code=206 if start else 200, media_type="application/octet-stream")

        return app


@pytest.fixture
def served() -> Iterator[tuple[ControlPlaneDouble, str]]:
    double = ControlPlaneDouble()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(double.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: port_open(port), what="the control-plane double to listen")
    yield double, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def offer(double: ControlPlaneDouble, tmp_path: Path, build_id: str = "b1") -> None:
    """Serve a real model and its samples, and queue a task naming them by URL and sha256."""
    task = task_for(ArtifactKind.ONNX).model_dump(mode="json") | {"build_id": build_id}
    for name, path in zip(("source", "samples"), write(mlp(), tmp_path), strict=True):
        data = path.read_bytes()
        double.files[path.name] = data
        task[name] = {"url": f"/files/{path.name}", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    double.tasks.append(task)


def test_claim_returns_a_task_or_nothing(served: tuple[ControlPlaneDouble, str], tmp_path: Path) -> None:
    double, url = served
    queue = HttpBuildQueue(url, builder_id="gpu-box-1", token=TOKEN)
    assert queue.claim(INFO) is None
    offer(double, tmp_path)
    task = queue.claim(INFO)
    assert task is not None and task.build_id == "b1" and task.spec.kind is ArtifactKind.ONNX
    assert double.claims[0]["builder_id"] == "gpu-box-1" and double.claims[0]["kinds"] == [k.value for k in ONNX_KINDS]
    assert double.claims[0]["hostname"] == "host-1"


def test_a_build_goes_round_trip_and_uploads_its_artifact(
    served: tuple[ControlPlaneDouble, str], tmp_path: Path
) -> None:
    double, url = served
    offer(double, tmp_path)
    assert run_once(HttpBuildQueue(url, builder_id="gpu-box-1", token=TOKEN), INFO, tmp_path / "work")
    done = double.completed["b1"]
    assert done["builder_id"] == "gpu-box-1" and done["size"] > 0
    assert done["report"]["parity"]["passed"] is True
    assert {"parity", "latency", "toolchain", "hardware", "build_options"} <= set(done["report"])
    assert any(b.get("message", "").startswith("building onnx") for b in double.beats)
    # claim, downloads, heartbeats and the upload all carried the builder's token
    assert len(double.authorizations) >= 5 and set(double.authorizations) == {f"Bearer {TOKEN}"}


def test_a_corrupted_download_is_refused(served: tuple[ControlPlaneDouble, str], tmp_path: Path) -> None:
    double, url = served
    double.files["model"] = b"the real bytes"
    queue = HttpBuildQueue(url, builder_id="b")
    claimed = RemoteFile("/files/model", hashlib.sha256(b"other bytes").hexdigest(), len(b"the real bytes"))
    with pytest.raises(QueueError, match="corrupt"):
        queue.fetch(claimed, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_partial_download_is_resumed(served: tuple[ControlPlaneDouble, str], tmp_path: Path) -> None:
    double, url = served
    data = bytes(range(256)) * 100
    double.files["model"] = data
    (tmp_path / "model.onnx.part").write_bytes(data[:1000])
    got = HttpBuildQueue(url, builder_id="b").fetch(
        RemoteFile("/files/model", hashlib.sha256(data).hexdigest(), len(data)), tmp_path / "model.onnx"
    )
    assert got.read_bytes() == data


def test_a_lost_lease_is_heard_and_a_failure_is_reported(served: tuple[ControlPlaneDouble, str]) -> None:
    double, url = served
    queue = HttpBuildQueue(url, builder_id="b", token=TOKEN)
    double.lost.add("gone")
    double.refused |= {"revoked": 401, "not-a-builder": 403}
    assert queue.heartbeat("kept", "step", 0.5) is True
    assert queue.heartbeat("gone", None, None) is False
    assert queue.heartbeat("revoked", None, None) is False  # a refused token also means: stop this build
    assert queue.heartbeat("not-a-builder", None, None) is False
    queue.fail("b9", "tensorrt is not installed on this builder")
    assert double.failed == {"b9": "tensorrt is not installed on this builder"}
    assert double.beats[0] == {"builder_id": "b", "message": "step", "progress": 0.5}


def test_a_refused_token_is_a_clear_error(served: tuple[ControlPlaneDouble, str], tmp_path: Path) -> None:
    double, url = served
    offer(double, tmp_path)
    with pytest.raises(QueueError, match=r"HTTP 401: .*unknown token.*role builder"):
        HttpBuildQueue(url, builder_id="b", token="edge_wrong").claim(INFO)
    assert len(double.tasks) == 1  # nothing was handed out
