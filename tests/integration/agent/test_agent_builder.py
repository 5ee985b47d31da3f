"""`builder: true`: a real `edge-agent run` process volunteers for builds of its own GPU class over HTTP.

The control plane here is a small FastAPI app on loopback implementing only `POST /v1/builders/claim` (204: no
build to do) and recording each claim. The real builder routes (and an end-to-end build through them) are the
control plane's; this test pins the agent's side: who claims, as whom, for which class, and who never does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from edge_agent.protocol import Signer
from tests.integration.agent.harness import AgentProcess
from tests.support import free_port, password_for, python_env, wait_for
from tests.unit.agent.builders import write_config

pytestmark = pytest.mark.integration


class ClaimRecorder:
    """A loopback HTTP server answering build claims with 204 and keeping every claim body."""

    def __init__(self) -> None:
        self.claims: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.port = free_port()
        app = FastAPI()

        @app.post("/v1/builders/claim")
        async def claim(request: Request) -> Response:
            self.claims.append(await request.json())
            self.authorizations.append(request.headers.get("authorization"))
            return Response(status_code=204)

        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def by(self, builder_id: str) -> list[dict[str, Any]]:
        return [c for c in list(self.claims) if c.get("builder_id") == builder_id]

    def __enter__(self) -> ClaimRecorder:
        self._thread.start()
        wait_for(lambda: self._server.started, what="claim server")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def control_plane() -> Iterator[ClaimRecorder]:
    with ClaimRecorder() as server:
        yield server


BUILDER_TOKEN = "edge_builder-token-of-dev-9"


def config_for(tmp_path: Path, device: str, url: str, builder: bool, token: str | None = BUILDER_TOKEN) -> Path:
    """No broker at the MQTT port: the builder does not need one, and no retained state is left behind."""
    return write_config(
        tmp_path / f"{device}.yaml",
        tmp_path / f"{device}-data",
        Signer.generate().public_key_b64,
        device_id=device,
        mqtt={"host": "127.0.0.1", "port": free_port(), "username": device, "password": password_for(device)},
        serving={"host": "127.0.0.1", "port": free_port()},
        control_plane_url=url,
        builder=builder,
        builder_workdir=str(tmp_path / f"{device}-builds"),
        **({"control_plane_token": token} if token else {}),
    )


def detected_class() -> str:
    done = subprocess.run(
        ["edge-agent", "facts", "--json"], env=python_env(), capture_output=True, text=True, timeout=60, check=True
    )
    return str(json.loads(done.stdout)["gpu_class"])


def test_a_builder_agent_claims_for_its_own_class_and_a_plain_agent_never_does(tmp_path, control_plane):
    builder = AgentProcess(config_for(tmp_path, "dev-9", control_plane.url, True), tmp_path / "builder.log").start()
    plain = AgentProcess(config_for(tmp_path, "dev-10", control_plane.url, False), tmp_path / "plain.log").start()
    try:
        # Two claims from the builder: both agents have been up for at least one poll interval.
        wait_for(lambda: len(control_plane.by("agent:dev-9")) >= 2, timeout=30, what=f"claims\n{builder.output()}")
        claim = control_plane.by("agent:dev-9")[0]
        assert claim["gpu_class"] == detected_class()
        assert "onnx" in claim["kinds"]
        assert set(control_plane.authorizations) == {f"Bearer {BUILDER_TOKEN}"}  # every claim carries its token
        assert control_plane.by("agent:dev-10") == [] and plain.alive()
        assert len(control_plane.claims) == len(control_plane.by("agent:dev-9"))
        assert builder.terminate() == 0  # the builder thread stops with the agent
        assert "Traceback" not in builder.output()
    finally:
        builder.kill()
        plain.kill()


def test_a_builder_agent_without_a_token_never_claims(tmp_path: Path, control_plane: ClaimRecorder) -> None:
    tokenless = config_for(tmp_path, "dev-11", control_plane.url, True, token=None)
    agent = AgentProcess(tokenless, tmp_path / "tokenless.log").start()
    try:
        wait_for(lambda: "no control_plane_token" in agent.output(), timeout=30, what=f"refusal\n{agent.output()}")
        assert control_plane.claims == [] and agent.alive()  # it still serves; it just does not build
    finally:
        agent.kill()


def test_an_agent_that_is_not_a_builder_never_imports_the_build_toolchain(tmp_path):
    code = (
        "import sys; import edge_agent.daemon, edge_agent.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('model_builds')))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=python_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(done.stdout.replace("'", '"')))
    toolchain = {"worker", "remote_queue", "capabilities", "execute", "onnx_build", "ort_quantize", "tensorrt_builder"}
    assert imported.isdisjoint(f"model_builds.{name}" for name in toolchain), imported
    assert "model_builds.hardware" in imported  # detection is shared with the builders, and only detection
