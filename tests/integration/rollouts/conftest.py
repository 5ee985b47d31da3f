"""Fixtures of the rollout fault tests: a private Mosquitto, `edgectl server` as a killable subprocess, and three
real agents (dev-1, dev-2 at site a; dev-3 at site b) that already serve v1 of a model.

A private broker per test lets a test restart it without touching another test's retained state; the control plane
runs as a process so a test can SIGKILL it and start it again on the same data dir and port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.agent.harness import AgentProcess
from tests.integration.rollouts.fleet import (
    CuttableProxy,
    agent_logs,
    devices,
    fleet_serves,
    start_agents,
    wait_phase,
)
from tests.integration.rollouts.models import inputs_only, linear, push_and_build
from tests.support import (
    ControlPlaneProcess,
    DynsecMosquitto,
    Mosquitto,
    dynsec_available,
    issue_test_pki,
    mosquitto_available,
    wait_for,
)

DEVICE_IDS = ("dev-1", "dev-2", "dev-3")


@dataclass
class Fleet:
    """Everything a fault test drives, with the operator's HTTP client."""

    broker: Mosquitto
    control_plane: ControlPlaneProcess
    agents: dict[str, AgentProcess]
    api: httpx.Client
    model: str = "rollout-model"
    v1: dict[str, Any] = field(default_factory=dict)

    def logs(self) -> str:
        return f"{agent_logs(self.agents)}\n--- control plane:\n{self.control_plane.output()[-3000:]}"

    def create(self, version: int, strategy: dict[str, Any] | None = None, **spec: Any) -> str:
        """POST /v1/rollouts for every device; `spec` adds RolloutRequest fields (bake_s, gates, ...)."""
        body: dict[str, Any] = {"model": self.model, "version": version, "selector": {"labels": {}}, **spec}
        if strategy:
            body["strategy"] = strategy
        answer = self.api.post("/v1/rollouts", json=body)
        assert answer.status_code == 201, answer.text
        rollout_id: str = answer.json()["id"]
        return rollout_id

    def reconnect_api(self) -> None:
        self.api.close()
        self.api = self.control_plane.client()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto as production runs it: TLS only, with a certificate from the control plane's CA, and accounts in
    the dynamic-security plugin that the control plane administers (one client and role per enrolled device)."""
    if not (mosquitto_available() and dynsec_available()):
        pytest.fail("mosquitto with its dynamic-security plugin is needed (.ci/run installs Debian's mosquitto)")
    issue_test_pki(tmp_path / "cp-data", tmp_path / "broker-certs")
    own = DynsecMosquitto(workdir=tmp_path / "broker", tls_dir=tmp_path / "broker-certs")
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def agent_overrides() -> dict[str, Any]:
    """agent.yaml settings a test wants changed (override in a module, or parametrize indirectly)."""
    return {}


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[int], CuttableProxy]]:
    made: list[CuttableProxy] = []

    def make(upstream_port: int) -> CuttableProxy:
        proxy = CuttableProxy(upstream_port).__enter__()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.__exit__(None, None, None)


def bring_up(
    broker: Mosquitto,
    workdir: Path,
    agent_overrides: dict[str, Any],
    public_url: str | None = None,
    port: int | None = None,
    https: bool = True,
) -> Fleet:
    """Control plane + 3 agents, v1 built and rolled out to every device (all at once) and served.

    Everything is verified against the control plane's CA: MQTT over TLS, and the REST API and artifact downloads
    over HTTPS unless `https` is off (a test whose proxy must read the HTTP it forwards)."""
    ca = workdir / "cp-data" / "pki" / "ca.pem"
    mqtt = {"EDGE_CP_MQTT__TLS_CA_FILE": str(ca), "EDGE_CP_MQTT__ADMIN": "dynsec"}
    control_plane = ControlPlaneProcess(
        broker, workdir / "cp-data", public_url=public_url, ca_file=ca if https else None, extra_env=mqtt
    )
    if port is not None:
        control_plane.port = port
    control_plane.start()
    api = control_plane.client()
    agents = start_agents(broker, api, workdir / "agents", api_ca=ca if https else None, **agent_overrides)
    fleet = Fleet(broker, control_plane, agents, api)
    try:
        wait_for(
            lambda: all(devices(fleet.api).get(d, {}).get("presence") == "online" for d in DEVICE_IDS),
            timeout=60,
            what="three agents online",
        )
        fleet.v1 = push_and_build(api, fleet.model, linear(1), inputs_only())
        first = fleet.create(fleet.v1["version"])
        wait_phase(api, first, ("succeeded",), 90, fleet.logs)
        wait_for(lambda: fleet_serves(api, fleet.model, 1, DEVICE_IDS), timeout=30, what="v1 served everywhere")
    except BaseException:
        tear_down(fleet)
        raise
    return fleet


def tear_down(fleet: Fleet) -> None:
    fleet.api.close()
    for agent in fleet.agents.values():
        agent.terminate()
    fleet.control_plane.stop()


@pytest.fixture
def fleet(broker: Mosquitto, tmp_path: Path, agent_overrides: dict[str, Any]) -> Iterator[Fleet]:
    running = bring_up(broker, tmp_path, agent_overrides)
    try:
        yield running
    finally:
        tear_down(running)
