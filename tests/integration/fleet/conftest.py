"""Fixtures of the fleet tests: a private Mosquitto per test, a control plane on it, a real agent process.

A private broker per test lets a test restart or break it without touching the session broker's retained state.
The agent's settings can be extended per test with the `agent_overrides` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent.harness import AgentProcess
from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.support import Mosquitto, free_port, mint_token, password_for
from tests.unit.agent.builders import write_config


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir=tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


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
    public_key = control_plane.http.get("/v1/keys/signing").json()["public_key"]
    config = write_config(
        tmp_path / "agent.yaml",
        tmp_path / "agent-data",
        public_key,
        device_id="dev-1",
        labels={"site": "fleet-test"},
        mqtt={"host": own_broker.host, "port": own_broker.port, "username": "dev-1", "password": password_for("dev-1")},
        serving={"host": "127.0.0.1", "port": free_port()},
        # a test module may give the agent another token (a builder agent needs a `builder` one)
        **({"control_plane_token": mint_token(control_plane.http, "device", "agent-dev-1", "dev-1")} | agent_overrides),
    )
    process = AgentProcess(config, tmp_path / "agent.log").start()
    try:
        yield process
    finally:
        process.terminate()
