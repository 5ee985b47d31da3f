"""What the rollout gates read from the agent: per (model, version) requests, errors, p50 and p99 over the
window. Runtime failures (500) count as model errors; bad input (4xx) is the client's error and is not counted."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge_agent.adapters.onnx_runner import OnnxRunnerFactory
from edge_agent.core.errors import InferenceInputError, RunnerError
from edge_agent.core.serving_table import LoadedModel, ServedModel, ServingTable, TableSnapshot
from edge_agent.core.telemetry import RequestWindow
from edge_agent.core.tensors import TensorSpec
from edge_agent.protocol import RuntimeOptions
from edge_agent.serving.app import create_app
from tests.unit.agent.builders import SAMPLE, weights, write_model
from tests.unit.agent.test_serving import infer_body


class Failing:
    """A runner that raises the given error for every request (a broken model, or one refusing its input)."""

    def __init__(self, inputs: list[TensorSpec], error: Exception) -> None:
        self.provider, self.inputs, self.outputs = "CPUExecutionProvider", inputs, []
        self.error = error

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise self.error


@pytest.fixture
def good(tmp_path) -> LoadedModel:
    path = write_model(tmp_path / "v1.onnx", *weights(1))
    return LoadedModel("lin", 1, "b1", OnnxRunnerFactory(gpu_present=False).load(path, RuntimeOptions()))


def client_for(active: LoadedModel, previous: LoadedModel | None, window: RequestWindow) -> TestClient:
    table = ServingTable()
    table.swap(TableSnapshot({"lin": ServedModel(active, previous)}, frozenset({"lin"})))
    return TestClient(create_app(table, window, clock=lambda: 1.0))


def test_requests_errors_and_percentiles_are_counted_per_version(good):
    window = RequestWindow(60)
    broken = LoadedModel("lin", 2, "b2", Failing(list(good.runner.inputs), RunnerError("CUDA out of memory")))
    client = client_for(broken, good, window)

    for _ in range(5):
        assert client.post("/v2/models/lin/versions/1/infer", json=infer_body()).status_code == 200
    for _ in range(3):
        answer = client.post("/v2/models/lin/infer", json=infer_body())
        assert answer.status_code == 500 and "CUDA out of memory" in answer.json()["error"]

    v1, v2 = window.snapshot(now=2.0)
    assert (v1.name, v1.version, v1.requests, v1.errors) == ("lin", 1, 5, 0)
    assert v1.p50_ms is not None and v1.p99_ms is not None and 0 < v1.p50_ms <= v1.p99_ms
    assert (v2.version, v2.requests, v2.errors, v2.p99_ms) == (2, 3, 3, None)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(infer_body(shape=(3, 5), data=[0.0] * 15), id="wrong-shape"),
        pytest.param(infer_body(name="Z"), id="unknown-input"),
        pytest.param(infer_body(datatype="INT64", data=[1] * 12), id="wrong-type"),
    ],
)
def test_bad_input_is_a_client_error_and_not_counted(good, body):
    window = RequestWindow(60)
    client = client_for(good, None, window)

    assert client.post("/v2/models/lin/infer", json=body).status_code == 400
    assert window.snapshot(now=2.0) == []


def test_input_the_runtime_refuses_is_a_400_and_not_a_model_error(good):
    window = RequestWindow(60)
    picky = LoadedModel("lin", 3, "b3", Failing(list(good.runner.inputs), InferenceInputError("batch too large")))
    client = client_for(picky, None, window)

    answer = client.post("/v2/models/lin/infer", json=infer_body(data=SAMPLE.ravel().tolist()))

    assert answer.status_code == 400 and "batch too large" in answer.json()["error"]
    assert window.snapshot(now=2.0) == []
