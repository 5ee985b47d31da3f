"""An edge agent with `builder: true` builds for its own GPU class through the real control plane's builder routes,
with its own `builder` token; the control plane re-proves what it delivers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.agent.harness import AgentProcess
from tests.integration.control_plane.conftest import RunningServer
from tests.support import mint_token, wait_for
from tests.unit.control_plane.onnx_models import linear_model, linear_samples

pytestmark = pytest.mark.integration


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {"build_workers": 0}  # no in-process builder: only the agent can take the build


@pytest.fixture
def agent_overrides(control_plane: RunningServer) -> dict[str, Any]:
    token = mint_token(control_plane.http, "builder", "agent-dev-1-builder")
    return {"builder": True, "control_plane_url": control_plane.url, "control_plane_token": token}


def test_a_builder_agent_takes_a_build_of_its_own_class_proves_it_and_it_succeeds(
    control_plane: RunningServer, agent: AgentProcess
) -> None:
    api = control_plane.http
    devices = wait_for(lambda: api.get("/v1/devices").json(), what="the agent to enroll")
    own_class = devices[0]["gpu_class"]
    upload = api.post(
        "/v1/models/built-on-edge/versions",
        files={"model": ("m.onnx", linear_model()), "samples": ("s.npz", linear_samples())},
    )
    assert upload.status_code == 201, upload.text
    queued = api.post(
        "/v1/models/built-on-edge/versions/1/builds", json={"targets": [own_class], "kinds": ["onnx-int8-qdq"]}
    )
    assert queued.status_code == 202, queued.text
    assert queued.json()["skipped"] == [], queued.json()
    build_id = queued.json()["builds"][0]["id"]

    build = wait_for(
        lambda: (b := api.get(f"/v1/builds/{build_id}").json())["status"] in ("succeeded", "rejected", "failed") and b,
        timeout=120,
        what=f"the agent to build it; agent log:\n{agent.output()[-2000:]}",
    )
    assert build["status"] == "succeeded", build
    assert build["builder_id"] == "agent:dev-1"
    assert build["parity"]["passed"] is True and build["parity"]["measured_by"] == "control-plane"
    assert build["manifest"]["builder"]["name"] == "agent-dev-1-builder"
    assert api.get(f"/v1/artifacts/{build['artifact_sha256']}").status_code == 200
    builders = api.get("/v1/builders").json()
    assert any(b["builder_id"] == "agent:dev-1" and b.get("gpu_class") == own_class for b in builders), builders
