"""The agent's `/metrics`: what a Prometheus server scrapes, and that it counts the very requests the rollout gates
judge (one `RequestWindow.record` per request feeds both the telemetry window and the exported counters)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from edge_agent.core.errors import InferenceInputError, RunnerError
from edge_agent.core.metrics import AgentTally
from edge_agent.core.serving_table import LoadedModel, ServedModel, ServingTable, TableSnapshot
from edge_agent.core.telemetry import RequestWindow
from edge_agent.protocol import DeviceEvent, EventStep
from edge_agent.serving.app import create_app
from edge_agent.serving.metrics import metrics_router
from tests.unit.agent.test_serving import infer_body
from tests.unit.agent.test_serving_telemetry import Failing, good  # noqa: F401 (fixture)

EVENT_COUNTERS = re.compile(r"edge_agent_(model_swaps|model_rollbacks|self_tests)_total")


def scrape(client: TestClient) -> dict[str, float]:
    """Every sample of the exposition as {'name{labels}': value}."""
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def serving(active: LoadedModel, previous: LoadedModel | None, window: RequestWindow, tally: AgentTally) -> TestClient:
    table = ServingTable()
    table.swap(TableSnapshot({"lin": ServedModel(active, previous)}, frozenset({"lin"})))
    app = create_app(table, window, clock=lambda: 1.0)
    app.include_router(metrics_router(table, window, tally))
    return TestClient(app)


def event(step: EventStep, model: str = "lin") -> DeviceEvent:
    return DeviceEvent(generation=1, step=step, model=model, version=2, at=datetime.now(UTC))


def test_scraped_counters_are_the_requests_the_gates_judge(good):  # noqa: F811
    window, tally = RequestWindow(60), AgentTally()
    broken = LoadedModel("lin", 2, "b2", Failing(list(good.runner.inputs), RunnerError("CUDA out of memory")))
    client = serving(broken, good, window, tally)
    for _ in range(4):
        assert client.post("/v2/models/lin/versions/1/infer", json=infer_body()).status_code == 200
    for _ in range(2):
        assert client.post("/v2/models/lin/infer", json=infer_body()).status_code == 500
    assert client.post("/v2/models/lin/versions/1/infer", json=infer_body(name="Z")).status_code == 400

    scraped = scrape(client)
    sent = {(t.version, t.requests, t.errors) for t in window.snapshot(now=2.0)}  # what the gates read
    exported = {
        (
            v,
            scraped[f'edge_agent_inference_requests_total{{model="lin",version="{v}"}}'],
            scraped[f'edge_agent_inference_errors_total{{model="lin",version="{v}"}}'],
        )
        for v in (1, 2)
    }
    assert sent == exported == {(1, 4, 0), (2, 2, 2)}
    # The histogram holds the successful requests only, as the window's p50/p99 do.
    assert scraped['edge_agent_inference_duration_seconds_count{model="lin",version="1"}'] == 4
    assert scraped['edge_agent_inference_duration_seconds_bucket{le="+Inf",model="lin",version="1"}'] == 4
    assert scraped['edge_agent_inference_duration_seconds_count{model="lin",version="2"}'] == 0


def test_active_and_previous_slots_are_exported(good):  # noqa: F811
    newer = LoadedModel("lin", 3, "b3", good.runner)
    scraped = scrape(serving(newer, good, RequestWindow(60), AgentTally()))
    assert scraped['edge_agent_model_active_version{model="lin"}'] == 3
    assert scraped['edge_agent_model_loaded{model="lin",slot="active",version="3"}'] == 1
    assert scraped['edge_agent_model_loaded{model="lin",slot="previous",version="1"}'] == 1
    assert scraped["edge_agent_ready"] == 1


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            [EventStep.ACTIVATED, EventStep.ACTIVATED], {'edge_agent_model_swaps_total{model="lin"}': 2}, id="swaps"
        ),
        pytest.param([EventStep.ROLLED_BACK], {'edge_agent_model_rollbacks_total{model="lin"}': 1}, id="rollback"),
        pytest.param(
            [EventStep.SELF_TEST_PASSED, EventStep.SELF_TEST_FAILED, EventStep.SELF_TEST_FAILED],
            {
                'edge_agent_self_tests_total{model="lin",result="passed"}': 1,
                'edge_agent_self_tests_total{model="lin",result="failed"}': 2,
            },
            id="self-tests",
        ),
        pytest.param([EventStep.DOWNLOADING, EventStep.VERIFIED, EventStep.ERROR], {}, id="progress-is-not-counted"),
    ],
)
def test_the_core_events_are_counted_as_they_are_published(good, steps, expected):  # noqa: F811
    tally, published = AgentTally(), []
    publish = tally.counting(published.append)
    for step in steps:
        publish(event(step))
    assert [e.step for e in published] == steps  # counting never swallows an event
    scraped = scrape(serving(good, None, RequestWindow(60), tally))
    counted = {
        k: v for k, v in scraped.items() if re.match(r"edge_agent_(model_swaps|model_rollbacks|self_tests)_total", k)
    }
    assert counted == expected


def test_download_bytes_and_retries_are_exported(good):  # noqa: F811
    tally = AgentTally()
    tally.downloaded(1000)
    tally.downloaded(24)
    tally.retried()
    scraped = scrape(serving(good, None, RequestWindow(60), tally))
    assert scraped["edge_agent_artifact_download_bytes_total"] == 1024
    assert scraped["edge_agent_artifact_download_retries_total"] == 1


def test_a_client_cannot_grow_the_label_set_with_what_it_sends(good):  # noqa: F811
    """Names a client sends (unknown models, versions, inputs) never become label values: only loaded versions do."""
    window = RequestWindow(60)
    client = serving(good, None, window, AgentTally())
    for name in ("evil-model", "x" * 200):
        assert client.post(f"/v2/models/{name}/infer", json=infer_body()).status_code in (400, 404)
    assert client.post("/v2/models/lin/versions/99/infer", json=infer_body()).status_code == 404
    text = client.get("/metrics").text
    assert "evil-model" not in text and "x" * 200 not in text and 'version="99"' not in text


def test_runner_refusals_of_input_are_not_counted(good):  # noqa: F811
    window = RequestWindow(60)
    refusing = LoadedModel("lin", 1, "b1", Failing(list(good.runner.inputs), InferenceInputError("bad rank")))
    client = serving(refusing, None, window, AgentTally())
    assert client.post("/v2/models/lin/infer", json=infer_body()).status_code == 400
    assert not any(k.startswith("edge_agent_inference_requests_total") for k in scrape(client))
