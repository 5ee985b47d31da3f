"""Fixtures of the fleet tests: a private Mosquitto per test, a control plane on it, a real agent process.

A private broker per test lets a test restart or break it without touching the session broker's retained state.
The agent's settings can be extended per test with the `agent_overrides` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.agent.harness import AgentProcess
from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.support import Mosquitto, enroll_agent, enrollment_token, free_port
from tests.unit.agent.builders import write_config


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    """ServerSettings fields a test module wants changed (override this fixture)."""
    return {}


@pytest.fixture
def control_plane(own_broker: Mosquitto, tmp_path: Path, server_overrides: dict[str, Any]) -> Iterator[RunningServer]:
    settings = server_settings(own_broker, tmp_path / "cp").model_copy(update=server_overrides)
    running = start_server(settings)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def agent_overrides() -> dict[str, Any]:
    """agent.yaml settings a test module wants added (override this fixture)."""
    return {}


@pytest.fixture
def agent(
    own_broker: Mosquitto, control_plane: RunningServer, tmp_path: Path, agent_overrides: dict[str, Any]
) -> Iterator[AgentProcess]:
    api = control_plane.http
    public_key = api.get("/v1/keys/signing").json()["public_key"]
    labels = {"site": "fleet-test"}
    serving = {"host": "127.0.0.1", "port": free_port()}
    config = write_config(tmp_path / "agent.yaml", tmp_path / "agent-data", public_key, labels=labels, serving=serving)
    enroll_agent(own_broker, control_plane.url, enrollment_token(api, "fleet-test", labels=labels), config, "dev-1")
    if agent_overrides:  # e.g. a builder agent's `builder` token instead of the device token it enrolled with
        config.write_text(yaml.safe_dump(yaml.safe_load(config.read_text()) | agent_overrides))
    process = AgentProcess(config, tmp_path / "agent.log").start()
    try:
        yield process
    finally:
        process.terminate()
