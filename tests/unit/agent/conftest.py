from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.adapters.download import HttpFetcher
from edge_agent.adapters.onnx_runner import OnnxRunnerFactory
from edge_agent.core.agent import AgentCore
from edge_agent.core.context import AgentIdentity
from edge_agent.core.deadlines import Deadlines
from edge_agent.core.journal_file import Journal
from edge_agent.core.ports import AgentPorts, ArtifactFetcher, RunnerFactory
from edge_agent.core.store import Store
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
        data = data_dir or tmp_path / "data"
        ports = AgentPorts(
            verifier=Verifier(signer.public_key_b64),
            fetcher=fetcher or HttpFetcher(max_attempts=1),
            runners=runners or OnnxRunnerFactory(gpu_present=False),
            journal=journal or Journal(data),
            store=Store(data),
            clock=lambda: datetime(2025, 1, 2, tzinfo=UTC),
            on_event=events.append,
        )
        return AgentCore(identity, ports, deadlines=deadlines)

    return make
