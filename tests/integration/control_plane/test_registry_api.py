"""Registry and builds over real HTTP: uploads (valid and not), builds, artifacts with Range, signed manifests."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest

from edge_agent.protocol import Verifier, canonical_json
from tests.integration.control_plane.conftest import Deployment
from tests.integration.control_plane.helpers import wait_build
from tests.support import mint_token
from tests.unit.control_plane.onnx_models import W, linear_model, linear_samples, npz_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def api(deployment: Deployment) -> httpx.Client:
    """Every test here runs on SQLite and on PostgreSQL (`deployment`)."""
    return deployment.server.http


def upload(api: httpx.Client, name: str, model: bytes, samples: bytes | None = None, **data: str) -> httpx.Response:
    files = {"model": ("model.onnx", model)}
    if samples is not None:
        files["samples"] = ("samples.npz", samples)
    return api.post(f"/v1/models/{name}/versions", files=files, data=data)


def test_upload_without_samples_synthesises_and_computes_references(api: httpx.Client) -> None:
    answer = upload(api, "reg-synth", linear_model(), metadata='{"metrics": {"accuracy": 0.9}}')
    assert answer.status_code == 201, answer.text
    version = answer.json()
    assert (version["version"], version["samples_synthesised"], version["reference_outputs_computed"]) == (
        1,
        True,
        True,
    )
    assert version["inputs"] == [{"name": "X", "shape": ["N", 4], "dtype": "float32"}]
    assert version["lineage"] == {"source": "upload"} and version["metrics"] == {"accuracy": 0.9}
    samples = api.get("/v1/models/reg-synth/versions/1/samples")
    arrays = np.load(io.BytesIO(samples.content))
    np.testing.assert_allclose(arrays["output:Y"], arrays["input:X"] @ W + np.array([0.1, -0.2, 0.3]), atol=1e-5)


def test_upload_with_samples_keeps_them_and_numbers_versions(api: httpx.Client) -> None:
    first = upload(api, "reg-samples", linear_model(), linear_samples())
    second = upload(api, "reg-samples", linear_model(), linear_samples(with_outputs=False))
    assert (first.status_code, second.status_code) == (201, 201)
    assert (first.json()["version"], first.json()["reference_outputs_computed"], first.json()["sample_count"]) == (
        1, False, 3,
    )  # fmt: skip
    assert (second.json()["version"], second.json()["reference_outputs_computed"]) == (2, True)
    model = api.get("/v1/models/reg-samples").json()
    assert (model["latest_version"], model["version_count"]) == (2, 2)
    assert [v["version"] for v in api.get("/v1/models/reg-samples/versions").json()] == [1, 2]


@pytest.mark.parametrize(
    ("name", "files", "detail"),
    [
        pytest.param("reg-bad", {"model": ("m.onnx", b"definitely not onnx")}, "not an ONNX model", id="garbage"),
        pytest.param("reg-bad", {"model": ("m.onnx", b"")}, "empty", id="empty"),
        pytest.param(
            "reg-bad",
            {"model": ("m.onnx", linear_model()), "samples": ("s.npz", npz_bytes(**{"input:Q": np.zeros(2)}))},
            "model does not have",
            id="samples-mismatch",
        ),
        pytest.param("bad name!", {"model": ("m.onnx", linear_model())}, "model name", id="bad-name"),
        pytest.param("reg-bad", {"samples": ("s.npz", linear_samples())}, "model", id="model-missing"),
    ],
)
def test_bad_upload_is_422_and_registers_nothing(
    api: httpx.Client, name: str, files: dict[str, tuple[str, bytes]], detail: str
) -> None:
    answer = api.post(f"/v1/models/{name}/versions", files=files)
    assert answer.status_code == 422, answer.text
    assert detail in str(answer.json()["detail"])
    assert api.get("/v1/models/reg-bad").status_code == 404
    assert all(m["name"] != "reg-bad" for m in api.get("/v1/models").json())


def test_build_artifact_range_and_signed_manifest(api: httpx.Client) -> None:
    assert upload(api, "reg-build", linear_model(), linear_samples()).status_code == 201
    answer = api.post("/v1/models/reg-build/versions/1/builds", json={"targets": ["cpu-x86_64"]})
    assert answer.status_code == 202, answer.text
    (queued,) = answer.json()["builds"]
    assert (queued["kind"], queued["precision"], queued["target"]) == ("onnx", "fp32", "cpu-x86_64")
    build = wait_build(api, queued["id"])
    assert build["status"] == "succeeded", build
    manifest = build["manifest"]
    assert manifest["artifact"] == {"sha256": build["artifact_sha256"], "size": build["artifact_size"]}
    assert manifest["parity"]["passed"] is True and manifest["key"] == build["key"]
    assert manifest["hardware_key"] == {"gpu_class": "cpu-x86_64"}
    assert {"onnx", "onnxruntime"} <= set(manifest["toolchain"])
    assert build["latency"]["batches"] and build["parity"]["outputs"][0]["name"] == "Y"

    key = api.get("/v1/keys/signing").json()
    Verifier(key["public_key"]).verify(canonical_json(manifest).encode(), build["manifest_signature"])

    whole = api.get(f"/v1/artifacts/{build['artifact_sha256']}")
    assert whole.status_code == 200 and len(whole.content) == build["artifact_size"]
    part = api.get(f"/v1/artifacts/{build['artifact_sha256']}", headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == whole.content[100:]

    again = api.post("/v1/models/reg-build/versions/1/builds", json={"targets": ["cpu-x86_64"]})
    assert [b["id"] for b in again.json()["builds"]] == [build["id"]]
    assert [b["id"] for b in api.get("/v1/models/reg-build/versions/1/builds").json()] == [build["id"]]
    logs = api.get(f"/v1/builds/{build['id']}/logs")
    assert logs.status_code == 200 and "claimed by builder" in logs.text and "succeeded" in logs.text


def test_unknown_target_names_it(api: httpx.Client) -> None:
    assert upload(api, "reg-target", linear_model()).status_code == 201
    answer = api.post("/v1/models/reg-target/versions/1/builds", json={"targets": ["cpu-x86_64", "tpu-v9"]})
    assert answer.status_code == 422 and "tpu-v9" in answer.json()["detail"]
    assert api.get("/v1/models/reg-target/versions/1/builds").json() == []


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        pytest.param({"targets": ["cpu-x86_64"], "kinds": ["onnx-fp64"]}, 422, "onnx-fp64", id="unknown-kind"),
        pytest.param({"targets": ["cpu-x86_64"], "precisions": ["fp8"]}, 422, "fp8", id="unknown-precision"),
        pytest.param(
            {"targets": ["cpu-x86_64"], "calibration": "0" * 64}, 404, "calibration", id="unknown-calibration"
        ),
        pytest.param({"targets": ["cpu-x86_64"], "options": {"workspace_mb": 0}}, 422, "workspace_mb", id="bad-option"),
        pytest.param({"targets": ["cpu-x86_64"] * 33}, 422, "targets", id="too-many-targets"),
    ],
)
def test_bad_build_requests_name_the_field(
    api: httpx.Client, body: dict[str, object], status: int, detail: str
) -> None:
    assert upload(api, "reg-badbuild", linear_model()).status_code == 201
    answer = api.post("/v1/models/reg-badbuild/versions/1/builds", json=body)
    assert answer.status_code == status, answer.text
    assert detail in str(answer.json()["detail"])


@pytest.mark.parametrize(
    ("body", "skipped_kind", "reason"),
    [
        pytest.param({"kinds": ["tensorrt-plan"]}, "tensorrt-plan", "cpu-x86_64", id="class-has-no-gpu"),
        pytest.param({"kinds": ["onnx"], "precisions": ["fp16"]}, "onnx", "fp32", id="kind-has-no-such-precision"),
    ],
)
def test_what_cannot_be_built_is_skipped_with_the_reason(
    api: httpx.Client, body: dict[str, object], skipped_kind: str, reason: str
) -> None:
    assert upload(api, "reg-skip", linear_model()).status_code == 201
    answer = api.post("/v1/models/reg-skip/versions/1/builds", json={"targets": ["cpu-x86_64"], **body})
    assert answer.status_code == 202, answer.text
    assert answer.json()["builds"] == []
    (skipped,) = answer.json()["skipped"]
    assert (skipped["target"], skipped["kind"]) == ("cpu-x86_64", skipped_kind) and reason in skipped["reason"]


def test_calibration_upload_is_checked_against_the_inputs(api: httpx.Client) -> None:
    assert upload(api, "reg-calib", linear_model()).status_code == 201
    good = npz_bytes(X=np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))
    answer = api.post("/v1/models/reg-calib/versions/1/calibration", files={"file": ("c.npz", good)})
    assert answer.status_code == 201, answer.text
    assert answer.json()["sample_count"] == 8
    bad = api.post(
        "/v1/models/reg-calib/versions/1/calibration", files={"file": ("c.npz", npz_bytes(X=np.zeros((2, 5))))}
    )
    assert bad.status_code == 422 and "calibration" in bad.json()["detail"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/v1/artifacts/..%2F..%2Fetc%2Fpasswd", 404, id="traversal-no-route"),
        pytest.param("/v1/artifacts/..", 404, id="dot-dot"),
        pytest.param("/v1/artifacts/signing_key.pem", 422, id="not-a-digest"),
        pytest.param("/v1/artifacts/" + "A" * 64, 422, id="uppercase"),
        pytest.param("/v1/artifacts/" + "0" * 64, 404, id="unknown"),
        pytest.param("/v1/models/nope", 404, id="unknown-model"),
        pytest.param("/v1/models/nope/versions/1/builds", 404, id="unknown-version"),
        pytest.param("/v1/builds/nope", 404, id="unknown-build"),
    ],
)
def test_lookups_refuse_cleanly(api: httpx.Client, path: str, status: int) -> None:
    assert api.get(path).status_code == status


def test_system_endpoints(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok", "mqtt_connected": True}
    key = api.get("/v1/keys/signing").json()
    assert key["algorithm"] == "ed25519" and len(key["key_id"]) == 16
    names = [t["name"] for t in api.get("/v1/targets").json()]
    assert {"jetson-orin", "dgpu-hopper", "cpu-x86_64"} <= set(names)
    assert api.get("/docs").status_code == 200


def test_builder_protocol_refusals(api: httpx.Client) -> None:
    builder = {"Authorization": f"Bearer {mint_token(api, 'builder', 'reg-proto-builder')}"}
    idle = api.post("/v1/builders/claim", json={"builder_id": "idle-1", "kinds": [], "hostname": "h"}, headers=builder)
    assert idle.status_code == 204
    assert "idle-1" in [b["builder_id"] for b in api.get("/v1/builders").json()]
    bad_kind = api.post("/v1/builders/claim", json={"builder_id": "x", "kinds": ["onnx-fp64"]}, headers=builder)
    assert bad_kind.status_code == 422 and "onnx-fp64" in bad_kind.json()["detail"]

    assert upload(api, "reg-proto", linear_model(), linear_samples()).status_code == 201
    (queued,) = api.post("/v1/models/reg-proto/versions/1/builds", json={"targets": ["cpu-x86_64"]}).json()["builds"]
    done = wait_build(api, queued["id"])
    beat = api.post(f"/v1/builds/{done['id']}/heartbeat", json={"builder_id": "late-builder"}, headers=builder)
    assert beat.status_code == 409 and "does not hold" in beat.json()["detail"]
    fail = api.post(f"/v1/builds/{done['id']}/fail", json={"builder_id": "late-builder", "error": "x"}, headers=builder)
    assert fail.status_code == 409
    complete = api.post(
        f"/v1/builds/{done['id']}/complete",
        data={"builder_id": "late-builder", "report": "{}"},
        files={"artifact": ("a.onnx", b"x")},
        headers=builder,
    )
    assert complete.status_code == 409
    assert api.post("/v1/builds/nope/heartbeat", json={"builder_id": "b"}, headers=builder).status_code == 404
    assert api.get("/v1/builds/nope/logs").status_code == 404
    assert api.get(f"/v1/builds/{done['id']}").json()["status"] == "succeeded"
