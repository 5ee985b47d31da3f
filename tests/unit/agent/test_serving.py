"""The KServe v2 API in-process (FastAPI TestClient) over a real onnxruntime runner."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from edge_agent.adapters.onnx_runner import OnnxRunnerFactory
from edge_agent.core.serving_table import LoadedModel, ServedModel, ServingTable, TableSnapshot
from edge_agent.core.telemetry import RequestWindow
from edge_agent.protocol import RuntimeOptions
from edge_agent.serving.app import create_app
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
        pytest.param(infer_body(shape=(3, 5)), "the model takes [-1, 4]", id="wrong-shape"),
        pytest.param(infer_body(shape=(3,)), "the model takes", id="wrong-rank"),
        pytest.param(infer_body(datatype="INT64"), "must be FP32", id="wrong-type"),
        pytest.param(infer_body(data=[1.0, 2.0]), "needs 12 values, got 2", id="too-few-values"),
        pytest.param(infer_body(data=["a"] * 12), "not a list of FP32", id="not-numbers"),
        pytest.param({"inputs": []}, "inputs", id="no-inputs"),
        pytest.param({"inputs": [{"name": "X"}]}, "shape", id="missing-fields"),
        pytest.param(infer_body(shape=(-1, 4)), "the model takes", id="negative-dim"),
    ],
)
def test_bad_requests_are_400_with_a_message(client, body, message):
    response = client.post("/v2/models/lin/infer", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_invalid_json_and_unknown_model(client):
    response = client.post("/v2/models/lin/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "invalid request" in response.json()["error"]
    assert client.post("/v2/models/other/infer", json=infer_body()).status_code == 404
    assert client.get("/v2/models/other").status_code == 404


def test_not_ready_while_an_active_model_is_not_loaded(table, window):
    table.swap(TableSnapshot({}, frozenset({"lin"})))
    client = TestClient(create_app(table, window))
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/models/lin/ready").status_code == 503
    assert client.get("/v2/health/live").status_code == 200
