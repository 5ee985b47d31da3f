"""The KServe v2 API in-process (FastAPI TestClient) over a real onnxruntime runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

import edge_agent
from edge_agent.adapters.onnx_runner import OnnxRunnerFactory
from edge_agent.core.serving_table import LoadedModel, ServedModel, ServingTable, TableSnapshot
from edge_agent.core.telemetry import RequestWindow
from edge_agent.protocol import RuntimeOptions
from edge_agent.serving.app import create_app
from edge_agent.serving.limits import ServingLimits
from tests.unit.agent.builders import SAMPLE, expected_output, weights, write_model


@pytest.fixture
def table(tmp_path) -> ServingTable:
    runners = OnnxRunnerFactory(gpu_present=False)
    loaded = {}
    for version in (1, 2):
        path = write_model(tmp_path / f"v{version}.onnx", *weights(version))
        loaded[version] = LoadedModel("lin", version, f"b{version}", runners.load(path, RuntimeOptions()))
    table = ServingTable()
    table.swap(TableSnapshot({"lin": ServedModel(loaded[2], loaded[1])}, frozenset({"lin"})))
    return table


@pytest.fixture
def window() -> RequestWindow:
    return RequestWindow(60)


@pytest.fixture
def client(table, window) -> TestClient:
    return TestClient(create_app(table, window, clock=lambda: 1.0))


def infer_body(data=None, shape=(3, 4), name="X", datatype="FP32"):
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(shape),
                "datatype": datatype,
                "data": SAMPLE.ravel().tolist() if data is None else data,
            }
        ]
    }


def test_health_metadata_and_infer(client, window):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2/models/lin").json()
    assert meta == {
        "name": "lin",
        "versions": ["2", "1"],
        "platform": "onnxruntime",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "Y", "datatype": "FP32", "shape": [-1, 2]}],
    }
    assert client.get("/v2/models/lin/ready").status_code == 200

    response = client.post("/v2/models/lin/infer", json={**infer_body(), "id": "r1"})
    assert response.status_code == 200
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"], response.headers["x-model-version"]) == (
        "lin",
        "2",
        "r1",
        "2",
    )
    [out] = body["outputs"]
    assert (out["name"], out["shape"], out["datatype"]) == ("Y", [3, 2], "FP32")
    assert out["data"] == pytest.approx(expected_output(2).ravel().tolist(), rel=1e-5)
    assert window.snapshot(1.0)[0].requests == 1


def test_previous_version_is_addressable(client):
    body = client.post("/v2/models/lin/versions/1/infer", json=infer_body()).json()
    assert body["model_version"] == "1"
    assert body["outputs"][0]["data"] == pytest.approx(expected_output(1).ravel().tolist(), rel=1e-5)
    assert client.post("/v2/models/lin/versions/9/infer", json=infer_body()).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(infer_body(name="nope"), "has no input 'nope'", id="unknown-input"),
        pytest.param(infer_body(shape=(2, 6)), "the model takes [-1, 4]", id="wrong-shape"),
        pytest.param(infer_body(shape=(12,)), "the model takes", id="wrong-rank"),
        pytest.param(infer_body(data=list(range(12)), datatype="INT64"), "must be FP32, got INT64", id="wrong-type"),
        pytest.param(infer_body(data=[1.0, 2.0]), "needs 12 values, got 2", id="too-few-values"),
        pytest.param(infer_body(data=["a"] * 12), "not a list of FP32", id="not-numbers"),
        pytest.param({"inputs": []}, "inputs", id="no-inputs"),
        pytest.param({"inputs": [{"name": "X"}]}, "shape", id="missing-fields"),
        pytest.param(infer_body(shape=(-1, 4)), "cannot be negative", id="negative-dim"),
        pytest.param(infer_body(data=[float("nan")] * 12), "NaN is not a number", id="nan"),
        pytest.param(infer_body(data=[1e39] * 12), "not a finite FP32 number", id="fp32-overflow"),
        pytest.param(
            {**infer_body(), "outputs": [{"name": "Z"}]}, "has no output(s) ['Z']; its outputs are ['Y']", id="output"
        ),
    ],
)
def test_bad_requests_are_400_with_a_message(client, body, message):
    response = client.post("/v2/models/lin/infer", content=json.dumps(body).encode())
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_invalid_json_and_unknown_model(client):
    response = client.post("/v2/models/lin/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "the body is not JSON" in response.json()["error"]
    assert client.post("/v2/models/other/infer", json=infer_body()).status_code == 404
    assert client.get("/v2/models/other").status_code == 404


def test_not_ready_while_an_active_model_is_not_loaded(table, window):
    table.swap(TableSnapshot({}, frozenset({"lin"})))
    client = TestClient(create_app(table, window))
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/models/lin/ready").status_code == 503
    assert client.get("/v2/health/live").status_code == 200


def test_server_metadata_advertises_the_binary_extension(client):
    for path in ("/v2", "/v2/"):
        response = client.get(path)
        assert response.status_code == 200
        expected = {"name": "edge-agent", "version": edge_agent.__version__, "extensions": ["binary_tensor_data"]}
        assert response.json() == expected


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        pytest.param("GET", "/v2/models/lin/versions/1", 200, None, id="metadata-v1"),
        pytest.param("GET", "/v2/models/lin/versions/1/ready", 200, None, id="ready-v1"),
        pytest.param("GET", "/v2/models/lin/versions/9", 404, "has no version '9'; it serves 2, 1", id="metadata-v9"),
        pytest.param("GET", "/v2/models/lin/versions/9/ready", 404, "no version '9'", id="ready-v9"),
        pytest.param("GET", "/v2/models/lin/versions/abc/ready", 404, "no version 'abc'", id="version-not-a-number"),
        pytest.param("GET", "/v2/models/lin/versions/%C2%B2/ready", 404, "no version '\u00b2'", id="superscript-two"),
        pytest.param("POST", "/v2/models/lin/versions/9/infer", 404, "no version '9'", id="infer-v9"),
        pytest.param("GET", "/v2/models/lim/ready", 404, "unknown model 'lim'; did you mean lin?", id="typo"),
        pytest.param("GET", "/v2/models/resnet", 404, "unknown model 'resnet'; this agent serves: lin", id="unknown"),
        pytest.param("GET", "/v3/models", 404, "no such endpoint: GET /v3/models", id="unknown-path"),
        pytest.param("DELETE", "/v2/models/lin", 405, "DELETE is not allowed", id="wrong-method"),
    ],
)
def test_versioned_routes_and_errors_in_the_protocols_shape(client, method, path, status, message):
    response = client.request(method, path, json=infer_body() if method == "POST" else None)
    assert response.status_code == status, response.text
    if message is not None:
        assert list(response.json()) == ["error"] and message in response.json()["error"]


def test_versioned_metadata_describes_that_version(client):
    assert client.get("/v2/models/lin/versions/1").json()["versions"] == ["2", "1"]
    assert client.post("/v2/models/lin/versions/2/infer", json=infer_body()).json()["model_version"] == "2"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_a_json_body_is_taken_whatever_its_content_type(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v2/models/lin/infer", content=json.dumps(infer_body()).encode(), headers=headers)
    assert response.status_code == 200, response.text


def test_binary_tensors_in_and_out(client):
    header = json.dumps(
        {
            "inputs": [{"name": "X", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": 48}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = client.post(
        "/v2/models/lin/infer",
        content=header + SAMPLE.astype("<f4").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:length])
    [output] = head["outputs"]
    assert output == {"name": "Y", "datatype": "FP32", "shape": [3, 2], "parameters": {"binary_data_size": 24}}
    values = np.frombuffer(response.content[length:], "<f4").reshape(3, 2)
    np.testing.assert_allclose(values, expected_output(2), rtol=1e-5)


def small_limits_client(table, window) -> TestClient:
    return TestClient(create_app(table, window, limits=ServingLimits(max_json_bytes=1000, max_body_bytes=2000)))


def test_a_chunked_body_over_the_limit_is_413_and_never_parsed(table, window):
    def chunks():
        for _ in range(100):
            yield b"[" * 100

    response = small_limits_client(table, window).post("/v2/models/lin/infer", content=chunks())
    assert response.status_code == 413
    assert "over the limit of 1000" in response.json()["error"] and "binary tensor data" in response.json()["error"]
    assert window.snapshot(1.0) == []


def test_a_compressed_body_is_refused_not_inflated(client):
    response = client.post("/v2/models/lin/infer", content=b"\x1f\x8b...", headers={"content-encoding": "gzip"})
    assert response.status_code == 415 and "send the body uncompressed" in response.json()["error"]
