"""What the agent's `/metrics` says about downloads: every byte received over HTTP and every retry, counted by the
fetcher as it happens (a resumed transfer adds only what came again), against a real HTTP server on loopback."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edge_agent.adapters.download import HttpFetcher
from edge_agent.core.metrics import AgentTally
from edge_agent.core.serving_table import ServingTable
from edge_agent.core.telemetry import RequestWindow
from edge_agent.serving.metrics import metrics_router
from tests.integration.agent.harness import ArtifactServer
from tests.integration.agent.test_download import SIZE, blob, ref  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def scraped(tally: AgentTally) -> dict[str, float]:
    app = FastAPI()
    app.include_router(metrics_router(ServingTable(), RequestWindow(60), tally))
    lines = TestClient(app).get("/metrics").text.splitlines()
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines if not line.startswith("#"))}


def test_a_cut_and_resumed_download_counts_its_bytes_once_and_its_retry(tmp_path, blob):  # noqa: F811
    tally = AgentTally()
    fetcher = HttpFetcher(max_attempts=3, sleep=lambda _s: None, on_bytes=tally.downloaded, on_retry=tally.retried)
    with ArtifactServer(tmp_path / "srv", cut_first_after=400_000) as server:
        fetcher.fetch(ref(server, blob), tmp_path / "out" / "blob")
    _, second = server.served("blob.bin")
    metrics = scraped(tally)
    assert second.range is not None  # resumed: the bytes of the first attempt were kept, not received again
    assert metrics["edge_agent_artifact_download_bytes_total"] == SIZE
    assert metrics["edge_agent_artifact_download_retries_total"] == 1
