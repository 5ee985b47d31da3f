"""The attacks on the builder protocol, each run against a real control plane (uvicorn on loopback, no in-process
builder, real onnxruntime sandbox) over real HTTP, and what the attacker does NOT get:

- claiming without a builder token (none, viewer, operator, admin): no lease, the build stays queued;
- builder B renewing, completing or failing builder A's lease (naming A's public label): refused, build unchanged;
- a tampered ONNX artifact uploaded with a perfect parity report: rejected on the control plane's own figures,
  nothing signed;
- a TensorRT plan from a builder no admin registered for that hardware: never leased, never accepted; registering
  a builder is admin-only and the registered one's plan is signed naming it;
- cancelling: only with registry:write; the running builder is told to stop; a finished build stays finished.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.support import Mosquitto, mint_token
from tests.unit.control_plane.onnx_models import linear_model, linear_samples

pytestmark = pytest.mark.integration

ONNX_INFO = {"builder_id": "builder-a", "kinds": ["onnx"], "hostname": "host-a"}
ORIN_INFO = {"kinds": ["onnx", "tensorrt-plan"], "gpu_class": "jetson-orin", "compute_capability": "8.7",
             "tensorrt_version": "10.3.0", "hostname": "orin"}  # fmt: skip


@pytest.fixture(scope="module")
def server(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A control plane where only remote builders build (build_workers=0), so every claim here is the test's."""
    settings = server_settings(mosquitto, tmp_path_factory.mktemp("builder-trust")).model_copy(
        update={"build_workers": 0}
    )
    running = start_server(settings)
    try:
        yield running
    finally:
        running.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def report(max_abs: float = 0.0) -> str:
    """A builder's report claiming perfect parity."""
    output = {"name": "Y", "max_abs": max_abs, "max_rel": 0.0, "reference_scale": 1.0, "cosine": 1.0}
    parity = {"passed": True, "reasons": [], "outputs": [output | {"top1_agreement": None}]}
    hardware = {"compute_capability": "8.7", "tensorrt_version": "10.3.0"}
    return json.dumps({"parity": parity, "latency": {}, "toolchain": {}, "hardware": hardware, "build_options": {}})


def queue_build(api: httpx.Client, model: str, targets: list[str], kinds: list[str]) -> list[dict[str, Any]]:
    files = {"model": ("m.onnx", linear_model()), "samples": ("s.npz", linear_samples())}
    assert api.post(f"/v1/models/{model}/versions", files=files).status_code == 201
    answer = api.post(f"/v1/models/{model}/versions/1/builds", json={"targets": targets, "kinds": kinds})
    assert answer.status_code == 202, answer.text
    builds: list[dict[str, Any]] = answer.json()["builds"]
    return builds


def claim(api: httpx.Client, token: str, info: dict[str, Any]) -> httpx.Response:
    return api.post("/v1/builders/claim", json=info, headers=bearer(token))


def complete(api: httpx.Client, token: str, build_id: str, artifact: bytes, label: str = "builder-a") -> httpx.Response:
    return api.post(
        f"/v1/builds/{build_id}/complete",
        data={"builder_id": label, "report": report()},
        files={"artifact": ("artifact.onnx", artifact)},
        headers=bearer(token),
    )


def build_of(api: httpx.Client, build_id: str) -> dict[str, Any]:
    found: dict[str, Any] = api.get(f"/v1/builds/{build_id}").json()
    return found


def claimed(api: httpx.Client, model: str) -> tuple[str, str]:
    """A build of `model` claimed by a fresh builder token; (build id, that token)."""
    (build,) = queue_build(api, model, ["cpu-x86_64"], ["onnx"])
    token = mint_token(api, "builder", f"{model}-a")
    task = claim(api, token, ONNX_INFO)
    assert task.status_code == 200 and task.json()["build_id"] == build["id"], task.text
    return str(build["id"]), token


@pytest.mark.parametrize(
    ("role", "status"),
    [
        pytest.param(None, 401, id="no-token"),
        pytest.param("viewer", 403, id="viewer"),
        pytest.param("operator", 403, id="operator"),
        pytest.param("admin", 403, id="admin"),
    ],
)
def test_claiming_needs_a_builder_token(server: RunningServer, role: str | None, status: int) -> None:
    api = server.http
    model = f"trust-claim-{role or 'anon'}"
    (build,) = queue_build(api, model, ["cpu-x86_64"], ["onnx"])
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        headers = bearer(mint_token(api, role, f"{model}-caller")) if role else {}
        answer = anonymous.post("/v1/builders/claim", json=ONNX_INFO, headers=headers)
        assert answer.status_code == status, answer.text
        assert anonymous.post(f"/v1/builds/{build['id']}/heartbeat", json={}, headers=headers).status_code == status
    after = build_of(api, build["id"])
    assert (after["status"], after["builder_id"], after["builder_subject"]) == ("waiting_for_builder", None, None)
    assert api.post(f"/v1/builds/{build['id']}/cancel").status_code == 200  # out of the next tests' way


def test_another_builder_cannot_renew_complete_or_fail_a_lease(server: RunningServer) -> None:
    api = server.http
    build_id, _token_a = claimed(api, "trust-hijack")
    before = build_of(api, build_id)
    token_b = mint_token(api, "builder", "trust-hijack-b")
    as_a = {"builder_id": "builder-a"}  # the label is public; it proves nothing
    beat = api.post(f"/v1/builds/{build_id}/heartbeat", json=as_a | {"progress": 1.0}, headers=bearer(token_b))
    assert beat.status_code == 409 and "does not hold" in beat.json()["detail"]
    assert complete(api, token_b, build_id, linear_model(weight_scale=1.5)).status_code == 409
    fail = api.post(f"/v1/builds/{build_id}/fail", json=as_a | {"error": "sabotage"}, headers=bearer(token_b))
    assert fail.status_code == 409
    assert build_of(api, build_id) == before
    assert "sabotage" not in api.get(f"/v1/builds/{build_id}/logs").text


def test_a_tampered_artifact_with_a_perfect_report_is_rejected_and_not_signed(server: RunningServer) -> None:
    api = server.http
    build_id, token = claimed(api, "trust-tampered")
    answer = complete(api, token, build_id, linear_model(weight_scale=1.5))
    assert answer.status_code == 200, answer.text
    done = answer.json()
    assert done["status"] == "rejected" and "max abs error" in done["error"]
    assert done["parity"]["measured_by"] == "control-plane" and done["parity"]["passed"] is False
    assert done["parity"]["outputs"][0]["max_abs"] > 1.0  # the control plane's figure, not the reported 0.0
    assert done["reported_parity"]["outputs"][0]["max_abs"] == 0.0
    assert (done["manifest"], done["manifest_signature"]) == ({}, None)
    assert "builder report disregarded" in api.get(f"/v1/builds/{build_id}/logs").text


def test_an_honest_artifact_is_signed_naming_the_builder_identity(server: RunningServer) -> None:
    api = server.http
    build_id, token = claimed(api, "trust-honest")
    done = complete(api, token, build_id, linear_model()).json()
    assert done["status"] == "succeeded" and done["manifest_signature"]
    builder = done["manifest"]["builder"]
    assert (builder["id"], builder["name"], builder["hostname"]) == ("builder-a", "trust-honest-a", "host-a")
    assert builder["subject"] == done["builder_subject"] and builder["subject"].startswith("token:")


def test_only_a_registered_builder_delivers_a_plan(server: RunningServer) -> None:
    api = server.http
    builds = queue_build(api, "trust-plan", ["jetson-orin"], ["tensorrt-plan"])
    plan = next(b for b in builds if b["tensorrt_version"] == "10.3.0")
    unregistered = mint_token(api, "builder", "trust-plan-rogue")
    assert claim(api, unregistered, ORIN_INFO | {"builder_id": "rogue"}).status_code == 204
    assert complete(api, unregistered, plan["id"], b"planted plan").status_code == 409
    assert build_of(api, plan["id"])["status"] == "waiting_for_builder"

    registration = {"name": "orin-01", "compute_capability": "8.7", "tensorrt": "10.x", "gpu_class": "jetson-orin"}
    for weaker in ("operator", "builder"):
        refused = api.post("/v1/builders", json=registration, headers=bearer(mint_token(api, weaker, f"rp-{weaker}")))
        assert refused.status_code == 403, refused.text
    registered = api.post("/v1/builders", json=registration)
    assert registered.status_code == 201, registered.text
    orin = registered.json()
    assert orin["subject"].startswith("token:") and orin["token"]
    task = claim(api, orin["token"], ORIN_INFO | {"builder_id": "orin-01"})
    assert task.status_code == 200 and task.json()["build_id"] == plan["id"], task.text
    done = complete(api, orin["token"], plan["id"], b"stand-in plan bytes", label="orin-01").json()
    assert done["status"] == "succeeded" and done["parity"]["measured_by"] == "builder"
    assert (done["manifest"]["builder"]["subject"], done["manifest"]["builder"]["name"]) == (orin["subject"], "orin-01")
    bad = api.post("/v1/builders", json=registration | {"name": "x", "tensorrt": "ten"})
    assert bad.status_code == 422


def test_cancel_stops_the_builder_and_needs_registry_write(server: RunningServer, tmp_path: Path) -> None:
    api = server.http
    build_id, token = claimed(api, "trust-cancel")
    viewer = bearer(mint_token(api, "viewer", "trust-cancel-viewer"))
    assert api.post(f"/v1/builds/{build_id}/cancel", headers=viewer).status_code == 403
    assert build_of(api, build_id)["status"] == "running"
    operator = bearer(mint_token(api, "operator", "trust-cancel-op"))
    cancelled = api.post(f"/v1/builds/{build_id}/cancel", headers=operator)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    beat = api.post(f"/v1/builds/{build_id}/heartbeat", json={}, headers=bearer(token))
    assert beat.status_code == 409 and "cancelled" in beat.json()["detail"]
    assert complete(api, token, build_id, linear_model()).status_code == 409
    again = api.post(f"/v1/builds/{build_id}/cancel", headers=operator)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    final = build_of(api, build_id)
    assert (final["status"], final["manifest_signature"], final["artifact_sha256"]) == ("cancelled", None, None)
