"""After a restart a real agent answers for the previous version it kept, as it did before the restart.

The agent applied `lin` v1 then v2 (`edge-agent apply`), so v1 sits in its previous slot: the instant rollback. The
Open Inference Protocol's `/v2/models/lin/versions/1/ready` must say what is true at every moment of a restart:
ready once v1 is loaded again, "being loaded" (503) before, never "no such version" (404).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.integration.agent.serving_agent import ServingAgent, serving_agent
from tests.support import wait_for
from tests.unit.agent.builders import SAMPLE

pytestmark = pytest.mark.integration

READY_V1 = "/v2/models/lin/versions/1/ready"


@pytest.fixture
def agent(tmp_path) -> Iterator[ServingAgent]:
    with serving_agent(tmp_path, generations=(1, 2)) as running:
        yield running


def answers_until_ready(agent: ServingAgent) -> list[int]:
    """Every status READY_V1 gave until it said 200; anything but 503 "being loaded" before that fails the test."""
    statuses: list[int] = []

    def ready_v1() -> bool:
        answer = httpx.get(f"{agent.url}{READY_V1}", timeout=5)
        statuses.append(answer.status_code)
        if answer.status_code != 200:
            assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
            assert "is being loaded again after the agent restarted" in answer.json()["error"]
        return answer.status_code == 200

    wait_for(ready_v1, timeout=30, what=f"v1 ready again\n{agent.process.output()}")
    return statuses


def infer_v1(agent: ServingAgent) -> np.ndarray:
    body = {"inputs": [{"name": "X", "shape": [3, 4], "datatype": "FP32", "data": SAMPLE.ravel().tolist()}]}
    answer = httpx.post(f"{agent.url}/v2/models/lin/versions/1/infer", json=body, timeout=10)
    assert answer.status_code == 200 and answer.headers["x-model-version"] == "1", answer.text
    [y] = answer.json()["outputs"]
    return np.asarray(y["data"], dtype=np.float32).reshape(y["shape"])


def test_the_previous_version_answers_again_after_a_restart(agent):
    for restart in range(2):  # the agent started after the applies, then once more
        if restart:
            agent.restart()
        assert 404 not in answers_until_ready(agent)
        metadata = httpx.get(f"{agent.url}/v2/models/lin", timeout=5).json()
        assert metadata["versions"] == ["2", "1"]
        assert np.allclose(infer_v1(agent), agent.expected(1, SAMPLE), rtol=1e-5, atol=1e-6)
    metrics = httpx.get(f"{agent.url}/metrics", timeout=5).text
    assert 'edge_agent_model_loaded{model="lin",slot="previous",version="1"} 1.0' in metrics
