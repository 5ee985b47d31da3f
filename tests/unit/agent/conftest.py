from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.adapters.download import HttpFetcher
from edge_agent.adapters.onnx_runner import OnnxRunnerFactory
from edge_agent.core.agent import AgentCore, AgentIdentity
from edge_agent.core.deadlines import Deadlines
from edge_agent.core.journal import Journal
from edge_agent.core.ports import ArtifactFetcher, RunnerFactory
from edge_agent.protocol import DeviceEvent, HardwareFacts, Signer, Verifier

CoreFactory = Callable[..., AgentCore]


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer.generate()


@pytest.fixture
def events() -> list[DeviceEvent]:
    return []


@pytest.fixture
def make_core(tmp_path: Path, signer: Signer, events: list[DeviceEvent]) -> CoreFactory:
    """A core on `tmp_path/data` with real onnxruntime and file:// fetching; ports can be swapped."""

    def make(
        fetcher: ArtifactFetcher | None = None,
        runners: RunnerFactory | None = None,
        journal: Journal | None = None,
        data_dir: Path | None = None,
        hardware: HardwareFacts | None = None,
        deadlines: Deadlines | None = None,
    ) -> AgentCore:
        identity = AgentIdentity(
            device_id="dev-1",
            hardware=hardware or HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64"),
            agent_version="test",
            labels={"site": "a"},
            serving_url="http://127.0.0.1:1",
        )
        return AgentCore(
            data_dir or tmp_path / "data",
            identity,
            Verifier(signer.public_key_b64),
            fetcher or HttpFetcher(max_attempts=1),
            runners or OnnxRunnerFactory(gpu_present=False),
            clock=lambda: datetime(2025, 1, 2, tzinfo=UTC),
            on_event=events.append,
            journal=journal,
            deadlines=deadlines,
        )

    return make
